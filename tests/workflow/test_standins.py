"""Stand-ins: column contracts and the planted biology of each dataset."""
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from sklearn.metrics import silhouette_score

from concerto_workflow.contracts import DATASET_CONTRACTS, validate_dataset
from concerto_workflow.simulate import standins as S

MAKERS = {
    "pancreas": S.make_pancreas, "pancreas_mouse": S.make_pancreas_mouse_query,
    "pbmc45k": S.make_pbmc45k, "thymus": S.make_thymus,
    "tabula_muris_senis": S.make_tabula_muris_senis, "pbmc160k_citeseq": S.make_pbmc160k_citeseq,
    "covid_pbmc": S.make_covid_pbmc,
}


@pytest.fixture(scope="module")
def data():
    return {k: f(n_cells=1200 if k != "tabula_muris_senis" else 1400, n_genes=800) for k, f in MAKERS.items()}


def _lognorm_pca(a, n=15):
    b = a.copy()
    sc.pp.normalize_total(b, target_sum=1e4)
    sc.pp.log1p(b)
    sc.pp.pca(b, n_comps=n)
    return b.obsm["X_pca"]


@pytest.mark.parametrize("name", list(MAKERS))
def test_contract(data, name):
    a = data[name]
    validate_dataset(a, name)
    assert a.X.dtype == np.float32 and np.all(a.X.data == np.round(a.X.data))
    assert a.var_names.is_unique


def test_contract_names_what_is_missing(data):
    a = data["pbmc45k"].copy()
    del a.obs["protocol"]
    with pytest.raises(ValueError, match="protocol"):
        validate_dataset(a, "pbmc45k")
    with pytest.raises(ValueError, match="no contract"):
        validate_dataset(a, "nope")
    assert set(MAKERS) <= set(DATASET_CONTRACTS)


def test_pancreas_structure(data):
    a = data["pancreas"]
    assert a.obs["tech"].nunique() == 5 and a.obs["batch"].nunique() == 8
    assert list(a.obs["cell_type"].cat.categories)[:2] == ["alpha", "beta"] and len(a.obs["cell_type"].cat.categories) == 13
    for g in ("GCG", "INS", "SST", "PPY", "GHRL", "PRSS1", "KRT19", "PDGFRA"):
        assert g in a.var_names
    counts = a.obs["cell_type"].value_counts()
    assert counts["alpha"] > 10 * counts["schwann"]  # imbalanced
    gcg = a[:, "GCG"].X.toarray().ravel() / np.asarray(a.X.sum(1)).ravel()
    assert gcg[a.obs["cell_type"] == "alpha"].mean() > 5 * gcg[a.obs["cell_type"] == "beta"].mean()
    # technology effect stronger than batch-within-technology effect (inDrop1-4 mix better)
    pca = _lognorm_pca(a[a.obs["cell_type"] == "alpha"])
    obs = a.obs[a.obs["cell_type"] == "alpha"]
    cent = pd.DataFrame(pca).groupby(obs["batch"].astype(str).values).mean()
    within = np.linalg.norm(cent.loc["inDrop1"] - cent.loc["inDrop2"])
    between = np.linalg.norm(cent.loc["inDrop1"] - cent.loc["CEL-seq2"])
    assert between > 2 * within


def test_pancreas_drop_types():
    a = S.make_pancreas(n_cells=800, n_genes=400, drop_types={"beta": ["inDrop1", "inDrop2"]})
    assert not ((a.obs["cell_type"] == "beta") & a.obs["batch"].isin(["inDrop1", "inDrop2"])).any()


def test_mouse_query_is_mouse(data):
    m = data["pancreas_mouse"]
    assert (m.obs["species"] == "mouse").all() and "Gcg" in m.var_names and "GCG" not in m.var_names
    assert m.n_vars < 800 and (m.var["human_symbol"] == "GCG").any()


def test_seq_well_most_distant(data):
    a = data["pbmc45k"]
    assert a.obs["protocol"].nunique() == 7 and a.obs["batch"].nunique() == 9
    sel = a.obs["cell_type"] == "CD4+ T cell"
    pca = _lognorm_pca(a[sel])
    cent = pd.DataFrame(pca).groupby(a.obs.loc[sel, "protocol"].astype(str).values).mean()
    d = {p: np.mean([np.linalg.norm(cent.loc[p] - cent.loc[q]) for q in cent.index if q != p]) for p in cent.index}
    assert max(d, key=d.get) == "Seq-Well", d


def test_thymus_development(data):
    a = data["thymus"]
    assert set(a.obs["source"]) == {"thymus", "pbmc"}
    frac = lambda g, t: (a[a.obs["cell_type"] == t, g].X.toarray().ravel()).mean()  # noqa: E731
    assert frac("CD4", "CD4+T(SP)") > frac("CD4", "CD8+T(SP)")
    assert frac("CD8A", "CD8+T(SP)") > frac("CD8A", "CD4+T(SP)")
    assert frac("CD4", "DP") > frac("CD4", "DN") and frac("CD8A", "DP") > frac("CD8A", "DN")
    assert (a.obs.loc[a.obs["source"] == "pbmc", "cell_type"].isin(list(S.IMMUNE_MARKERS))).all()


def test_tms_tissue_specific_types(data):
    a = data["tabula_muris_senis"]
    assert a.obs["tissue"].nunique() == 23
    sat = a.obs.loc[a.obs["cell_type"] == "skeletal muscle satellite cell", "tissue"]
    assert len(sat) > 0 and set(sat) <= {"Limb_Muscle", "Diaphragm"}
    for t in ("B cell", "T cell", "macrophage", "endothelial cell"):
        assert a.obs.loc[a.obs["cell_type"] == t, "tissue"].nunique() >= 20


def test_citeseq_modalities(data):
    a = data["pbmc160k_citeseq"]
    assert a.obsm["protein"].shape == (a.n_obs, len(a.uns["protein_names"]))
    # hierarchy: each l3 has one l2, each l2 one l1
    assert (a.obs.groupby("celltype.l3", observed=True)["celltype.l2"].nunique() == 1).all()
    assert (a.obs.groupby("celltype.l2", observed=True)["celltype.l1"].nunique() == 1).all()
    assert (a.obs["cell_type"].astype(str) == a.obs["celltype.l2"].astype(str)).all()
    rna = _lognorm_pca(a)
    prot = np.log1p(a.obsm["protein"] / a.obsm["protein"].sum(1, keepdims=True) * 1e3)
    l1 = a.obs["celltype.l1"].astype(str).values

    def sil(X, groups):
        m = np.isin(l1, groups)
        return silhouette_score(X[m], l1[m])
    assert sil(prot, ["CD4 T", "CD8 T"]) > sil(rna, ["CD4 T", "CD8 T"]) + 0.1
    assert sil(rna, ["DC", "Mono"]) > sil(prot, ["DC", "Mono"]) + 0.1


def test_covid_states(data):
    a = data["covid_pbmc"]
    cond = a.obs.groupby("cell_type", observed=True)["condition"].agg(lambda s: set(s))
    for t in ("CD8 T exhausted", "CD14 Mono HLA-DR low"):
        assert "healthy" not in cond[t]
    ex = a[a.obs["cell_type"] == "CD8 T exhausted", "PDCD1"].X.mean()
    cd8 = a[a.obs["cell_type"] == "CD8 TEM", "PDCD1"].X.mean()
    assert ex > 4 * cd8


def test_covid_query_shares_the_pbmc_reference(data):
    """The COVID query is drawn from the PBMC reference's programme: same genes, its label levels."""
    ref, q = data["pbmc160k_citeseq"], data["covid_pbmc"]
    assert list(ref.var_names) == list(q.var_names)
    assert set(q.obs["celltype_l1"].astype(str)) <= set(ref.obs["celltype.l1"].astype(str))
    seen = set(q.obs["celltype_l2"].astype(str)) - {"CD8 T exhausted", "CD14 Mono HLA-DR low"}
    assert seen <= set(ref.obs["celltype.l2"].astype(str))
    from concerto_workflow.covid import settings
    cfg = settings()                       # the paper's gene sets (schema defaults) are all simulated
    genes = cfg["exhaustion_genes"] + cfg["hla_dr_genes"] + cfg["s100a_genes"]
    assert set(genes + [g for c in cfg["compartments"].values() for g in c["markers"]]) <= set(q.var_names)
