"""Fig 3c / 3d pieces: the protein-only feature set, the label-pair silhouette, attention weights
as an optional embed output (contract, runner round trip, Concerto) and the attention tables."""
import re

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.metrics import silhouette_score

from concerto_workflow import attention, figures, outputs, preprocessing as pp, scoring, tables
from concerto_workflow.columns import ATTENTION, ATTENTION_FEATURES, ROLE, TEST, TRAIN
from concerto_workflow.methods.runner import build_output, pack_attention, unpack_attention

PROV = dict(experiment="e", task="embed", dataset="d", split="s", fold="f", preprocessing="p", method="concerto",
            seed=0, status="ok", reason="", seconds=1.0, peak_memory_mb=1.0, log="l")


def _obs(groups, roles=None):
    n = len(groups)
    return pd.DataFrame({"cell_type": groups, "batch": "b", "tech": "t", "celltype.l1": groups,
                         ROLE: roles if roles is not None else [TRAIN] * n}, index=[f"c{i}" for i in range(n)])


def _attention_output(weights: dict, names: dict, groups) -> ad.AnnData:
    arrays = {"emb": np.random.default_rng(0).normal(size=(len(groups), 4)),
              **pack_attention({m: (sp.csr_matrix(w), names[m]) for m, w in weights.items()})}
    return build_output("embed", _obs(groups), arrays, PROV)


# ------------------------------------------------------------------------------- contract
def test_attention_slots_round_trip_and_meet_the_embed_contract():
    w = np.array([[0.7, 0.3, 0.0], [0.0, 0.5, 0.5]], dtype=np.float32)
    a = _attention_output({"rna": w, "protein": np.array([[1.0], [1.0]])},
                          {"rna": ["G0", "G1", "G2"], "protein": ["CD4"]}, ["x", "y"])
    outputs.check_output(a, "embed")
    np.testing.assert_allclose(a.obsm[ATTENTION + "rna"].toarray(), w)
    assert list(a.uns[ATTENTION_FEATURES]["rna"]) == ["G0", "G1", "G2"]
    (mat, names), = unpack_attention(pack_attention({"rna": (sp.csr_matrix(w), ["G0", "G1", "G2"])})).values()
    assert names == ["G0", "G1", "G2"] and np.array_equal(mat.toarray(), w)


@pytest.mark.parametrize("breakage, message", [
    (lambda a: a.obsm.__setitem__(ATTENTION + "rna", sp.csr_matrix(np.ones((2, 3)))), "sum to more than 1"),
    (lambda a: a.uns.__setitem__(ATTENTION_FEATURES, {"rna": ["G0"]}), "3 columns for 1 feature names"),
    (lambda a: a.uns.__setitem__(ATTENTION_FEATURES, {}), "without uns['attention_features']['rna']"),
    (lambda a: a.obsm.__setitem__(ATTENTION + "rna", -sp.csr_matrix(np.eye(2, 3))), "negative"),
])
def test_broken_attention_slots_are_named(breakage, message):
    a = _attention_output({"rna": np.eye(2, 3)}, {"rna": ["G0", "G1", "G2"]}, ["x", "y"])
    breakage(a)
    with pytest.raises(outputs.ContractError, match=re.escape(message)):
        outputs.check_output(a, "embed")


# -------------------------------------------------------------------------------- tables
def test_marker_table_scales_each_marker_across_groups_and_keeps_missing_markers():
    groups = ["B"] * 3 + ["T"] * 3
    w = np.array([[0.6, 0.2, 0.2]] * 3 + [[0.1, 0.3, 0.6]] * 3)
    a = _attention_output({"rna": w}, {"rna": ["MS4A1", "GAPDH", "CD3E"]}, groups)
    t = attention.marker_table(a, "celltype.l1", {"rna": ["MS4A1", "CD3E", "CD19"]}).set_index(["group", "marker"])
    assert t.loc[("B", "MS4A1"), "scaled"] == 1 and t.loc[("T", "MS4A1"), "scaled"] == 0
    assert t.loc[("T", "CD3E"), "scaled"] == 1 and t.loc[("B", "CD3E"), "scaled"] == 0
    assert t.loc[("B", "MS4A1"), "mean_attention"] == pytest.approx(0.6)
    assert not t.loc[("B", "CD19"), "in_model"] and np.isnan(t.loc[("B", "CD19"), "scaled"])
    with pytest.raises(ValueError, match="protein"):
        attention.marker_table(a, "celltype.l1", {"protein": ["CD4"]})


def test_de_overlap_compares_top_attention_with_de_of_training_cells_only():
    """Group g's DE genes are planted; attention of group A points at A's DE genes, of group B at
    random genes. Held-out cells with swapped expression must not change the DE genes."""
    rng = np.random.default_rng(0)
    n, genes = 120, [f"G{j}" for j in range(40)]
    groups = np.repeat(["A", "B"], n // 2)
    X = rng.poisson(1.0, (n, 40)).astype(np.float32)
    X[groups == "A", :5] += 6                                       # A's DE genes: G0-G4
    X[groups == "B", 5:10] += 6                                     # B's: G5-G9
    roles = np.where(np.arange(n) % 4 == 0, TEST, TRAIN)
    cells = ad.AnnData(sp.csr_matrix(np.log1p(X)), obs=_obs(groups, roles), var=pd.DataFrame(index=genes))
    W = np.full((n, 40), 0.001)
    W[groups == "A", :5] = 0.1
    W[groups == "B", 30:35] = 0.1
    a = _attention_output({"rna": W / W.sum(1, keepdims=True)}, {"rna": genes}, list(groups))
    t = attention.de_overlap_table(a, cells, "celltype.l1", n_top=5).set_index("group")
    assert t.loc["A", "overlap"] == 5 and t.loc["B", "overlap"] == 0
    assert t.loc["A", "expected_by_chance"] == pytest.approx(25 / 40)
    swapped = cells.copy()
    test = (swapped.obs[ROLE] == TEST).to_numpy()
    swapped.X = sp.csr_matrix(np.where(test[:, None], np.log1p(X[:, ::-1]), np.log1p(X)))
    assert attention.top_de(swapped, "celltype.l1", 5) == attention.top_de(cells, "celltype.l1", 5)


# ------------------------------------------------------------------------------- metric
def test_label_pair_silhouette_is_sklearns_on_the_pairs_cells():
    rng = np.random.default_rng(1)
    groups = np.repeat(["CD4 T", "CD8 T", "DC", "Mono"], 30)
    emb = rng.normal(size=(120, 3)) + np.repeat([[0, 0, 0], [1, 0, 0], [0, 9, 0], [0, 9, 9]], 30, axis=0)
    a = ad.AnnData(obs=_obs(groups))
    a.obsm["X_emb"] = emb
    p = {"pair_key": "celltype.l1", "label_pairs": [["CD4 T", "CD8 T"], ["DC", "Mono"], ["DC", "pDC"]]}
    got = scoring.asw_label_pairs(a, p)
    for x, y in (("CD4 T", "CD8 T"), ("DC", "Mono")):
        m = np.isin(groups, [x, y])
        assert got[f"{x} vs {y}"] == pytest.approx(silhouette_score(emb[m], groups[m]))
    assert got["DC vs Mono"] > got["CD4 T vs CD8 T"] and np.isnan(got["DC vs pDC"])
    with pytest.raises(KeyError, match="pair_key"):
        scoring.asw_label_pairs(a, {"pair_key": "celltype.l9", "label_pairs": [["a", "b"]]})


def test_bars_draw_one_panel_per_setting_and_the_attention_figure_draws(tmp_path):
    rows = [tables.rows(dict(PROV, experiment=x, method=m), kind, {"asw_label_pairs": {"CD4 T vs CD8 T": v,
                                                                                       "DC vs Mono": -v}})
            for x in ("rna", "protein") for m, kind, v in (("concerto", "method", 0.3), ("pca", "method", 0.2))]
    df = pd.concat(rows, ignore_index=True)
    assert figures.bar_panels(df, ["asw_label_pairs"], "experiment") == [
        ("asw_label_pairs", "CD4 T vs CD8 T"), ("asw_label_pairs", "DC vs Mono")]
    assert figures.bar_panels(df, ["asw_label_pairs"], "setting") == [("asw_label_pairs", None)]
    figures.plot_bars(df, str(tmp_path / "bars.png"), metrics=["asw_label_pairs"], x="experiment", title="t")
    groups = ["B"] * 3 + ["T"] * 3
    a = _attention_output({"rna": np.array([[0.6, 0.4]] * 3 + [[0.1, 0.9]] * 3), "protein": np.ones((6, 1))},
                          {"rna": ["MS4A1", "CD3E"], "protein": ["CD3"]}, groups)
    markers = attention.marker_table(a, "celltype.l1", {"rna": ["MS4A1", "CD3E", "CD19"], "protein": ["CD3"]})
    overlap = pd.DataFrame([{"modality": "rna", "group": g, "n_cells": 3, "n_features": 2, "n_top": 1,
                             "overlap": o, "expected_by_chance": 0.5, "attention_top": "", "de_top": ""}
                            for g, o in (("B", 1), ("T", 0))])
    figures.plot_attention(markers, overlap, str(tmp_path / "attn.png"), title="t")
    assert (tmp_path / "bars.png").stat().st_size > 5000 and (tmp_path / "attn.png").stat().st_size > 5000


# ------------------------------------------------------------------------------ Concerto
@pytest.mark.slow
def test_concerto_embed_writes_attention_of_every_modality(raw_adata, tmp_path):
    """Concerto trained on RNA + protein: embed with attention=True returns per-modality weights
    over the model's features that the runner turns into a contract-conforming output."""
    from concerto_workflow.methods import RunContext, concerto

    raw = raw_adata[:200].copy()
    rng = np.random.default_rng(0)
    raw.obsm["protein"] = rng.poisson(20, (raw.n_obs, 3)).astype(np.float32)
    raw.uns["protein_names"] = ["CD3", "CD4", "CD8"]
    cells = pp.preprocess_fold([("d", raw, pd.Series(TRAIN, index=raw.obs_names))], min_genes=1, min_cells=3,
                               target_sum=1e4, n_top_genes=None, flavor="seurat")
    concerto.train(cells, str(tmp_path / "model"), seed=0, threads=1, epochs=1, batch_size=64,
                   second_modality="protein")
    ctx = RunContext(seed=0, model_dir=str(tmp_path / "model"))
    emb, att = concerto.embed(cells, ctx, attention=True)
    assert set(att) == {"rna", "protein"} and emb.shape[0] == cells.n_obs
    assert att["protein"][1] == ["CD3", "CD4", "CD8"] and att["rna"][1] == list(cells.var_names)
    np.testing.assert_allclose(np.asarray(att["protein"][0].sum(1)).ravel(), 1, rtol=1e-4)
    np.testing.assert_allclose(concerto.embed(cells, ctx), emb, rtol=1e-5)   # same embedding without
    a = build_output("embed", cells.obs, {"emb": emb, **pack_attention(att)}, PROV)
    outputs.check_output(a, "embed")
