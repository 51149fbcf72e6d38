"""Real-data checks of query-to-reference mapping, supervised fine-tuning with domain
adaptation and missing-modality imputation on the small public subsets in ../shared/data.

Run: ``pytest tests/core/test_realdata_mapping.py -m realdata -s`` (numbers are printed).
Only sanity floors well above chance are asserted; the data are far smaller than the paper's.
"""

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from synthetic_data import shared_data_dir

DATA = shared_data_dir()

pytestmark = [
    pytest.mark.slow,
    pytest.mark.realdata,
    pytest.mark.skipif(not DATA.is_dir(), reason=f"real data folder {DATA} is absent (needs <repo>/../shared/data or $CONCERTO_SHARED_DATA)"),
]


def _read(name):
    import anndata as ad

    path = DATA / name
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return ad.read_h5ad(path)


def _lognorm(adata):
    import scanpy as sc

    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    return adata


def _config(**kw):
    from concerto_core import ConcertoConfig

    return ConcertoConfig(**{"embedding_dim": 64, "batch_size": 64, "epochs": 3, "lr": 1e-3, "lr_end": 1e-4,
                             "seed": 0, **kw})


def test_pancreas_direct_inference_and_query_finetuning(tmp_path):
    from concerto_core import Concerto, knn_vote
    from concerto_core.finetune import finetune_query

    adata = _lognorm(_read("pancreas_3tech_cellbench.h5ad"))
    techs = set(adata.obs["tech"].astype(str))
    ref_techs = {"Smart-seq2 (Segerstolpe)", "Fluidigm C1 (Lawlor)"}
    query_tech = "inDrop (Baron)"
    assert ref_techs | {query_tech} == techs, f"unexpected tech values {techs}"
    ref = adata[adata.obs["tech"].isin(ref_techs)].copy()
    query = adata[adata.obs["tech"] == query_tech].copy()

    model = Concerto(ref, batch_key="tech", config=_config(epochs=4), verbose=False)
    model.train()
    model.save(tmp_path / "ref")

    def accuracy(m):
        z_ref = m.get_latent_representation(ref)
        z_q = m.get_latent_representation(query)
        res = knn_vote(z_ref, ref.obs["cellTypes"].astype(str).to_numpy(), z_q, k=5)
        return float(np.mean(res.labels == query.obs["cellTypes"].astype(str).to_numpy()))

    acc_direct = accuracy(Concerto.load(tmp_path / "ref", verbose=False))
    tuned = finetune_query(tmp_path / "ref", query, tmp_path / "tuned", epochs=2)
    acc_tuned = accuracy(Concerto.load(tmp_path / "tuned", verbose=False))
    majority = query.obs["cellTypes"].value_counts(normalize=True).max()
    print(f"\n[pancreas Smart-seq2+C1 -> inDrop, {ref.n_obs} ref / {query.n_obs} query cells] 5-NN accuracy: "
          f"direct inference {acc_direct:.3f}, query fine-tuning {acc_tuned:.3f} (majority class {majority:.3f})")
    assert tuned.sources[-1] == query_tech
    assert acc_direct > 0.75 and acc_tuned > 0.75


def test_pbmc_dropseq_to_indrops_fine_tuning_with_domain_adaptation():
    from sklearn.metrics import accuracy_score, f1_score

    from concerto_core import Concerto
    from concerto_core.finetune import fine_tune

    adata = _read("pbmc_ding_dropseq_indrops.h5ad")
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    source = adata[adata.obs["protocol"] == "Drop-seq"].copy()
    target = adata[adata.obs["protocol"] == "inDrops"].copy()
    truth = target.obs["cell_type"].astype(str).to_numpy()
    unlabelled = target.copy()
    unlabelled.obs["cell_type"] = np.nan  # the target's labels are never given to training

    model = Concerto(source, batch_key="protocol", config=_config(), verbose=False)
    model.train()
    results = {}
    for name, kwargs in {"fine-tune": {}, "fine-tune + domain adaptation": {"target_adata": unlabelled}}.items():
        clf = fine_tune(model, source, "cell_type", epochs=2, lr=1e-3, batch_size=32, seed=0, **kwargs)
        pred = clf.predict(target).labels.astype(str)
        results[name] = (accuracy_score(truth, pred),
                         float(np.median(f1_score(truth, pred, average=None, labels=sorted(set(truth))))))
    print(f"\n[PBMC Ding Drop-seq -> inDrops, {source.n_obs} -> {target.n_obs} cells] "
          + "; ".join(f"{k}: accuracy {a:.3f}, median F1 {f:.3f}" for k, (a, f) in results.items()))
    for acc, f1 in results.values():
        assert acc > 0.6 and f1 > 0.5  # 3 classes, chance ~0.4


def test_citeseq_rna_only_query_protein_imputation():
    from concerto_core import Concerto, impute_modality, per_feature_pearson

    def prepare(name):
        a = _lognorm(_read(name))
        prot = np.asarray(a.obsm["protein_expression"], dtype=np.float32)
        a.obsm["protein_expression"] = np.log1p(prot)  # log1p protein counts
        a.uns["protein_names"] = np.asarray(a.uns["protein_names"]).astype(str)
        return a

    ref, query = prepare("citeseq_pbmc5k_200.h5ad"), prepare("citeseq_pbmc10k_200.h5ad")
    mods = {"rna": "X", "protein": "obsm:protein_expression:protein_names"}
    model = Concerto(ref, modalities=mods, config=_config(epochs=4), verbose=False)
    model.train()
    z_ref = model.get_latent_representation(ref, modalities=["rna"])  # paper: reference projected RNA-only too
    z_q = model.get_latent_representation(query, modalities=["rna"])
    names = list(ref.uns["protein_names"])
    shared = [p for p in query.uns["protein_names"] if p in set(names)]
    ref_prot = ref.obsm["protein_expression"][:, [names.index(p) for p in shared]]
    q_names = list(query.uns["protein_names"])
    measured = query.obsm["protein_expression"][:, [q_names.index(p) for p in shared]]
    imputed = impute_modality(z_ref, ref_prot, z_q, k=5, feature_names=shared)
    r = per_feature_pearson(imputed.to_numpy(), measured)["pearson_r"].to_numpy()
    r = dict(zip(shared, r))
    print(f"\n[CITE-seq pbmc5k (RNA+protein) -> pbmc10k (RNA only), {len(shared)} shared proteins] "
          f"median Pearson r {np.nanmedian(list(r.values())):.3f}; "
          + ", ".join(f"{p.split('_')[0]} {v:.2f}" for p, v in sorted(r.items(), key=lambda kv: -np.nan_to_num(kv[1]))))
    assert np.nanmedian(list(r.values())) > 0.3
