"""COVID-19 analysis (paper Fig 5): exhaustion score, percentages, group tests, DE."""
import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import stats

from concerto_workflow import covid as C

CFG = C.settings()      # the paper's choices: the schema defaults of the config's covid section


def _adata(X, genes, **obs):
    n = np.asarray(X).shape[0]
    return ad.AnnData(sp.csr_matrix(np.asarray(X, dtype=np.float32)),
                      obs=pd.DataFrame(obs, index=[f"c{i}" for i in range(n)]),
                      var=pd.DataFrame(index=genes))


def test_exhaustion_score_matches_hand_computation():
    genes = ["PDCD1", "TIGIT", "LAG3", "HAVCR2", "CTLA4", "CD8A"]
    assert CFG["exhaustion_genes"] == genes[:5]                   # paper Methods
    X = np.array([[0.0, 0.0, 0.0, 0.0, 0.0, 3.0],    # expresses none: score 0
                  [2.0, 0.0, 0.0, 0.0, 0.0, 3.0],
                  [1.0, 4.0, 0.0, 0.0, 0.0, 1.0],
                  [0.0, 2.0, 0.0, 0.0, 1.0, 2.0]])
    a = _adata(X, genes)
    # by hand: PDCD1 /2, TIGIT /4, LAG3 and HAVCR2 constant (0), CTLA4 /1
    expected = np.array([0.0, 1.0, 0.5 + 1.0, 0.5 + 1.0])
    np.testing.assert_allclose(C.exhaustion_score(a, genes[:5]), expected)
    # a nonzero minimum is subtracted before scaling
    b = _adata(X + 1.0, genes)
    np.testing.assert_allclose(C.exhaustion_score(b, genes[:5]), expected)
    labels = np.array(["CD8 Naive", "CD8 TEM", "CD4 TCM", "CD8 TEM", "CD8 Naive"], dtype=object)
    cd8 = np.array([True, True, False, True, True])
    out = C.annotate_exhausted(labels, cd8, expected, "exh")   # > 0 (strict) -> exhausted
    assert list(out) == ["CD8 Naive", "exh", "CD4 TCM", "exh", "exh"]
    with pytest.raises(ValueError, match="one per CD8"):
        C.annotate_exhausted(labels, cd8, expected[:2], "exh")
    with pytest.raises(KeyError, match="HAVCR2"):
        C.exhaustion_score(_adata(X[:, [0, 1, 2, 4]], ["PDCD1", "TIGIT", "LAG3", "CTLA4"]), genes[:5])


def test_percentages_per_donor_sum_to_100():
    obs = pd.DataFrame({
        "sub": ["naive", "naive", "TEM", "naive", "TEM", "TEM", "exh"],
        "donor": ["h1", "h1", "h1", "s1", "s1", "s1", "s1"],
        "condition": ["healthy"] * 3 + ["severe"] * 4})
    pct = C.subtype_percentages(obs, "sub")
    assert len(pct) == 2 * 3                       # every donor x every subtype, zeros included
    np.testing.assert_allclose(pct.groupby("donor")["percent"].sum(), 100.0)
    h1 = pct[pct["donor"] == "h1"].set_index("subtype")
    assert h1.loc["naive", "percent"] == pytest.approx(200 / 3)
    assert h1.loc["exh", "percent"] == 0 and h1.loc["exh", "n_parent"] == 3
    assert set(pct.loc[pct["donor"] == "s1", "condition"]) == {"severe"}
    bad = obs.assign(condition=["healthy"] * 4 + ["severe"] * 3)
    with pytest.raises(ValueError, match="more than one"):
        C.subtype_percentages(bad, "sub")
    with pytest.raises(KeyError, match="nope"):
        C.subtype_percentages(obs, "nope")


def test_compare_groups_mann_whitney_and_stars():
    rng = np.random.default_rng(0)
    rows = []
    for cond, mu in (("healthy", 5.0), ("moderate", 20.0), ("severe", 40.0)):
        for i in range(6):
            rows.append({"donor": f"{cond}{i}", "condition": cond, "subtype": "exh", "percent": mu + rng.normal()})
            rows.append({"donor": f"{cond}{i}", "condition": cond, "subtype": "naive", "percent": 50 + rng.normal()})
    pct = pd.DataFrame(rows)
    res = C.compare_groups(pct)
    assert len(res) == 2 * 3
    hs = res[(res["subtype"] == "exh") & (res["group1"] == "healthy") & (res["group2"] == "severe")].iloc[0]
    a = pct[(pct["subtype"] == "exh") & (pct["condition"] == "healthy")]["percent"]
    b = pct[(pct["subtype"] == "exh") & (pct["condition"] == "severe")]["percent"]
    assert hs["p"] == pytest.approx(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)
    assert hs["p"] == pytest.approx(2 / 924) and hs["stars"] == "**"   # exact: complete separation, 6 vs 6
    assert "Mann-Whitney" in hs["test"]
    np.testing.assert_allclose(res["p_adj"], stats.false_discovery_control(res["p"], method="bh"))
    kw = C.compare_groups(pct, test="kruskal")
    assert len(kw) == 2 and kw.set_index("subtype").loc["exh", "p"] < 0.01
    assert [C.stars(p) for p in (0.2, 0.04, 0.009, 5e-4, 1e-5)] == ["ns", "*", "**", "***", "****"]
    with pytest.raises(ValueError, match="test must be"):
        C.compare_groups(pct, test="t")


def test_de_uses_scanpy_wilcoxon_and_bh():
    rng = np.random.default_rng(1)
    n, genes = 60, ["CCR7", "LEF1", "G3", "G4"]
    X = rng.poisson(1.0, size=(n, 4)).astype(float)
    grp = np.array(["naive"] * 20 + ["TEM"] * 40)
    X[:20, 0] += 3                              # CCR7 up in naive
    X = np.log1p(X)
    a = _adata(X, genes, sub=grp)
    de = C.differential_expression(a, "sub", "naive", genes=["CCR7", "G3"])
    assert list(de["gene"]) == ["CCR7", "G3"]
    ccr7 = de.iloc[0]
    # scanpy's Wilcoxon = rank-sum normal approximation without tie correction (scipy ranksums)
    p_rs = [stats.ranksums(X[:20, j], X[20:, j]).pvalue for j in range(4)]
    assert ccr7["p"] == pytest.approx(p_rs[0], rel=1e-4)
    all_de = C.differential_expression(a, "sub", "naive").set_index("gene").loc[genes]
    np.testing.assert_allclose(all_de["p_adj"], stats.false_discovery_control(p_rs, method="bh"), rtol=1e-4)
    assert ccr7["log2fc"] > 1 and ccr7["p_adj"] < 1e-3
    assert "Wilcoxon" in ccr7["test"] and "Benjamini" in ccr7["test"]
    with pytest.raises(ValueError, match=">= 2 cells"):
        C.differential_expression(a, "sub", "nope")


def test_hla_dr_low_s100a_high_relative_to_healthy():
    rng = np.random.default_rng(2)
    n = 200
    healthy = np.arange(n) < 100
    hla = np.where(healthy, rng.normal(3, 0.3, n), rng.normal(3, 0.3, n))
    s100 = rng.normal(2, 0.3, n)
    hla[150:] = 0.5
    s100[150:] = 5.0                            # 50 patient cells: HLA-DR low, S100A high
    a = _adata(np.c_[hla, s100, s100, s100], ["HLA-DRA", "S100A8", "S100A9", "S100A12"])
    kw = {"s100a_genes": ["S100A8", "S100A9", "S100A12"], "hla_genes": ["HLA-DRA"]}
    f = C.hla_dr_low_s100a_high(a, healthy, **kw)
    assert f["flagged"].iloc[150:].all()
    assert f["flagged"].iloc[:100].mean() == pytest.approx(0.05, abs=0.011)   # the quantile, by construction
    assert f["flagged"].iloc[100:150].mean() < 0.2
    with pytest.raises(ValueError, match="no reference"):
        C.hla_dr_low_s100a_high(a, np.zeros(n, bool), **kw)


@pytest.fixture(scope="module")
def standin_query():
    """The COVID stand-in with its true labels as the 'mapped' levels (no model: tests the analysis)."""
    from concerto_workflow.simulate.standins import make_covid_pbmc

    q = C.log_normalise(make_covid_pbmc(n_cells=1500, n_genes=300, seed=3, donors_per_condition=4))
    q.obs["level1"] = q.obs["celltype_l1"].astype(str)
    seen = {"CD8 T exhausted": "CD8 TEM", "CD14 Mono HLA-DR low": "CD14 Mono"}   # as the reference knows them
    q.obs["level2"] = [seen.get(t, t) for t in q.obs["celltype_l2"].astype(str)]
    return q


@pytest.fixture(scope="module")
def tables(standin_query):
    return C.analyse(standin_query, CFG)


def test_analyse_tables_and_planted_states(tables):
    t = tables
    assert set(t) == set(C.TABLES)
    pct = t["percentages"]
    sums = pct.groupby(["compartment", "donor"])["percent"].sum()
    np.testing.assert_allclose(sums, 100.0)
    st = t["states"]
    truth_ex = st["true_label"] == "CD8 T exhausted"
    assert (st.loc[truth_ex, "state"] == CFG["exhausted_label"]).mean() > 0.9   # planted exhaustion is found
    truth_hla = st["true_label"] == "CD14 Mono HLA-DR low"
    assert (st.loc[truth_hla, "state"] == CFG["hla_dr_low_label"]).mean() > 0.5
    de = t["de"].set_index("gene")
    assert de.loc["CCR7", "log2fc"] > 0 and "Wilcoxon" in de.loc["CCR7", "test"]
    assert set(t["tests"]["compartment"]) == {"cd8", "nk", "mono"}
    assert t["tests"]["test"].str.contains("Mann-Whitney").any() and t["tests"]["test"].str.contains("Kruskal").any()


def test_covid_figures_draw(standin_query, tables, tmp_path):
    from concerto_workflow import covid_figures as F

    t = tables
    rng = np.random.default_rng(0)
    q = standin_query
    umap = pd.DataFrame({"cell": q.obs_names, "dataset": "query", "level1": q.obs["level1"].astype(str),
                         "condition": q.obs["condition"].astype(str), "umap1": rng.normal(size=q.n_obs),
                         "umap2": rng.normal(size=q.n_obs)})
    ref = umap.assign(dataset="reference", condition="", cell=[f"r{i}" for i in range(q.n_obs)])
    F.plot_mapping(pd.concat([ref, umap]), str(tmp_path / "a.png"), title="t", caption="c",
                   conditions=["healthy", "moderate", "severe"])
    for comp, lvl in (("cd8", "CD8 T"), ("mono", "Mono")):
        pick = lambda df: df[df["compartment"] == comp]  # noqa: E731
        F.plot_compartment(umap, t["states"][t["states"]["level1"] == lvl], pick(t["percentages"]),
                           pick(t["tests"]), pick(t["markers"]), str(tmp_path / f"{comp}.png"), title="t",
                           caption="c", conditions=["healthy", "moderate", "severe"], de=pick(t["de"]),
                           scatter=comp == "mono")
    sde = t["status_de"]
    F.plot_status_de(sde[sde["compartment"] == "nk"], str(tmp_path / "nk_de.png"), title="t", caption="c",
                     conditions=["healthy", "moderate", "severe"])
    assert all((tmp_path / f).stat().st_size > 10_000 for f in ("a.png", "cd8.png", "mono.png", "nk_de.png"))


def test_status_de_per_state_and_status_uses_scanpy_wilcoxon_bh():
    rng = np.random.default_rng(4)
    cond = np.array((["healthy"] * 40 + ["severe"] * 40) * 2 + ["moderate"])
    state = np.array(["dim"] * 80 + ["bright"] * 80 + ["dim"])
    X = rng.poisson(2.0, size=(161, 3)).astype(float)
    X[(state == "dim") & (cond == "severe"), 0] += 4              # GZMB up in severe CD56dim only
    a = _adata(np.log1p(X), ["GZMB", "CD27", "G3"], condition=cond)
    de = C.status_de(a, state, ["GZMB", "CD27"], ["healthy", "moderate", "severe"])
    assert len(de) == 2 * 2 * 2                                  # states x patient statuses x genes
    dim = de[(de["state"] == "dim") & (de["group"] == "severe")].set_index("gene")
    m = state == "dim"
    x = np.log1p(X)
    p = [stats.ranksums(x[m & (cond == "severe"), j], x[m & (cond == "healthy"), j]).pvalue for j in range(3)]
    assert dim.loc["GZMB", "p"] == pytest.approx(p[0], rel=1e-4)
    assert dim.loc["GZMB", "p_adj"] == pytest.approx(stats.false_discovery_control(p, method="bh")[0], rel=1e-4)
    assert dim.loc["GZMB", "log2fc"] > 1 and dim.loc["GZMB", "p_adj"] < 1e-3
    assert (dim["reference"] == "healthy").all() and (dim["n_group"] == 40).all() and "Wilcoxon" in dim["test"].iloc[0]
    bright = de[(de["state"] == "bright") & (de["group"] == "severe")].set_index("gene")
    assert abs(bright.loc["GZMB", "log2fc"]) < 1 < dim.loc["GZMB", "log2fc"]   # cells of the other state only
    moderate = de[de["group"] == "moderate"]                     # 1 moderate cell: a row that says why
    assert moderate["p"].isna().all() and moderate["note"].str.contains("not computed").all()
    with pytest.raises(ValueError, match="expected"):
        C.status_de(a, state[:-1], ["GZMB"], ["healthy", "severe"])


def test_covid_settings_come_from_config(standin_query):
    assert CFG["compartments"]["nk"]["level1"] == "NK" and CFG["status_de"] == ["nk", "mono"]
    assert [c["group"] for c in CFG["de"]] == ["CD8 Naive", "CD8 TEM", "CD8 Proliferating"]
    with pytest.raises(Exception, match="nk_cells"):
        C.settings({"compartments": {"nk_cells": {"level1": "NK"}}})
    # a user's naming: Level-1 'CD8-positive T', statuses control / mild / critical, own genes
    q = standin_query.copy()
    q.obs["level1"] = q.obs["level1"].replace({"CD8 T": "CD8-positive T"})
    q.obs["status"] = q.obs["condition"].map({"healthy": "control", "moderate": "mild", "severe": "critical"})
    cfg = C.settings({"condition_key": "status", "conditions": ["control", "mild", "critical"],
                      "exhaustion_genes": ["PDCD1", "LAG3"], "exhausted_label": "Tex", "de": [],
                      "status_de": ["cd8"],
                      "compartments": {"cd8": {"level1": "CD8-positive T", "markers": ["PDCD1", "CCR7"]}}})
    assert cfg["compartments"]["mono"]["level1"] == "Mono"       # what the user left out keeps its default
    t = C.analyse(q, cfg)
    st = t["states"]
    assert (st.loc[st["true_label"] == "CD8 T exhausted", "state"] == "Tex").mean() > 0.9
    assert set(t["markers"].loc[t["markers"]["compartment"] == "cd8", "gene"]) == {"PDCD1", "CCR7"}
    assert set(t["status_de"]["compartment"]) == {"cd8"} and set(t["status_de"]["group"]) == {"mild", "critical"}
    assert set(t["tests"]["group1"]) >= {"control"} and t["de"].empty
    with pytest.raises(ValueError, match="covid.conditions"):
        C.analyse(q, C.settings({"condition_key": "status"}))


def test_check_query_fails_before_mapping_with_the_config_key(standin_query):
    q = standin_query
    C.check_query(q, CFG)                                         # the stand-in has what Fig 5 needs
    with pytest.raises(KeyError, match="covid.donor_key = 'patient'"):
        C.check_query(q, C.settings({"donor_key": "patient"}))
    with pytest.raises(ValueError, match="covid.conditions"):
        C.check_query(q, C.settings({"conditions": ["control", "mild", "severe"]}))
    with pytest.raises(ValueError, match="more than one"):
        C.check_query(q, C.settings({"donor_key": "tech"}))        # one 'donor' holding every status
    with pytest.raises(KeyError, match="covid.s100a_genes.*S100A99"):
        C.check_query(q, C.settings({"s100a_genes": ["S100A8", "S100A99"]}))
