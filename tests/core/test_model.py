"""The AnnData-facing model: training, embedding, alignment, save/load, errors."""

import json
import subprocess
import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from concerto_core import Concerto, ConcertoConfig

from synthetic_data import simulate_groups


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    adata = simulate_groups(n_cells=400, n_genes=120, seed=1)
    model = Concerto(adata, batch_key="batch", config=ConcertoConfig(embedding_dim=32, batch_size=64, epochs=1, seed=3))
    model.train()
    path = tmp_path_factory.mktemp("model") / "m"
    model.save(path)
    return adata, model, path


def test_embed_shapes_and_slots(trained):
    adata, model, _ = trained
    out = model.embed(adata, copy=True, student=True)
    z = out.obsm["X_concerto"]
    assert z.shape == (adata.n_obs, 32) and z.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1, atol=1e-5)
    assert out.obsm["X_concerto_student"].shape == (adata.n_obs, 32)
    assert out.uns["concerto"]["gene_overlap"]["rna"]["overlap"] == 1.0
    assert "X_concerto" not in adata.obsm  # copy=True leaves the input alone
    model.embed(adata, key_added="X_custom")
    assert "X_custom" in adata.obsm


def test_every_cell_trained_each_epoch(recorded_batches):
    adata = simulate_groups(n_cells=130, n_genes=50)
    model = Concerto(adata, config=ConcertoConfig(embedding_dim=16, batch_size=64, epochs=2, precise_bn=False), verbose=False)
    seen = recorded_batches
    model.train()
    assert len(seen) == 6  # 130 cells at batch 64 -> 3 near-equal batches per epoch, none dropped
    for epoch in (seen[:3], seen[3:]):
        cells = np.concatenate(epoch)
        assert sorted(cells.tolist()) == list(range(130))
        assert min(len(b) for b in epoch) >= 43
    assert not np.array_equal(np.concatenate(seen[:3]), np.concatenate(seen[3:]))  # reshuffled each epoch


def test_attention_sparse_and_topk(trained):
    adata, model, _ = trained
    att = model.attention(adata)["rna"]
    assert sp.isspmatrix_csr(att) and att.shape == (adata.n_obs, adata.n_vars) and att.dtype == np.float32
    X = adata.X.tocsr()
    assert att.nnz == X.nnz  # exactly the expressed genes
    np.testing.assert_allclose(np.asarray(att.sum(1)).ravel(), 1, atol=1e-4)
    top = model.attention(adata, top_k=5)["rna"]
    assert (np.diff(top.indptr) <= 5).all()
    full = att.toarray()
    for i in range(5):
        kept = top[i].indices
        assert set(kept) <= set(np.argsort(-full[i])[: len(kept) + 1])


def test_query_gene_alignment(trained):
    adata, model, _ = trained
    reference = model.get_latent_representation(adata)
    # Reordered genes give identical embeddings.
    order = np.random.default_rng(0).permutation(adata.n_vars)
    np.testing.assert_allclose(model.get_latent_representation(adata[:, order].copy()), reference, atol=1e-5)
    # Extra genes are dropped.
    extra = ad.AnnData(sp.hstack([adata.X, sp.random(adata.n_obs, 3, density=0.5, format="csr", dtype=np.float32)]).tocsr(),
                       obs=adata.obs.copy())
    extra.var_names = list(adata.var_names) + ["x1", "x2", "x3"]
    out = model.embed(extra, copy=True)
    np.testing.assert_allclose(out.obsm["X_concerto"], reference, atol=1e-5)
    assert out.uns["concerto"]["gene_overlap"]["rna"]["n_extra"] == 3
    # Missing genes count as zero: same as zeroing those columns.
    keep = np.arange(adata.n_vars) >= 10
    missing = adata[:, keep].copy()
    zeroed = adata.copy()
    zeroed.X = sp.csr_matrix(zeroed.X.multiply(keep[None, :].astype(np.float32)))
    out = model.embed(missing, copy=True)
    np.testing.assert_allclose(out.obsm["X_concerto"], model.get_latent_representation(zeroed), atol=1e-5)
    assert out.uns["concerto"]["gene_overlap"]["rna"]["n_missing"] == 10
    # Too little overlap is refused with a clear message.
    with pytest.raises(ValueError, match="min_gene_overlap"):
        model.embed(adata[:, :20].copy())
    other = adata.copy()
    other.var_names = [f"other{i}" for i in range(adata.n_vars)]
    with pytest.raises(ValueError, match="shares no features"):
        model.embed(other)


def test_unseen_source_warns_and_adapts(trained):
    adata, model, _ = trained
    before = model.get_latent_representation(adata)
    query = adata.copy()
    query.obs["batch"] = "new_lab"
    with pytest.warns(UserWarning, match="not seen in training"):
        z_adapt = model.get_latent_representation(query)
    with pytest.warns(UserWarning):
        z_pooled = model.get_latent_representation(query, unseen_source="pooled")
    assert np.isfinite(z_adapt).all() and np.isfinite(z_pooled).all()
    assert not np.allclose(z_adapt, z_pooled)
    # The stored statistics are restored after adaptation: the training cells embed as before.
    np.testing.assert_array_equal(model.get_latent_representation(adata), before)
    assert not np.allclose(z_adapt, before)  # the adapted query really used other statistics
    with pytest.raises(KeyError, match="batch_key 'nope'"):
        model.embed(adata, batch_key="nope")


def test_save_load_identical_in_fresh_process(trained, tmp_path):
    adata, model, path = trained
    expected = model.get_latent_representation(adata)
    query = tmp_path / "q.h5ad"
    adata.write_h5ad(query)
    out = tmp_path / "z.npy"
    code = (
        "import numpy as np, anndata as ad; from concerto_core import Concerto; "
        f"m = Concerto.load({str(path)!r}); a = ad.read_h5ad({str(query)!r}); "
        f"np.save({str(out)!r}, m.get_latent_representation(a))"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    np.testing.assert_array_equal(np.load(out), expected)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["modalities"]["rna"]["vocabulary"] == list(adata.var_names)
    assert manifest["sources"] == ["batch0", "batch1"] and len(manifest["files"]["weights.weights.h5"]) == 64
    assert len(manifest["manifest_sha256"]) == 64
    assert manifest["seed"] == 3 and "package_version" in manifest


def test_load_is_strict(trained, tmp_path):
    import shutil

    import h5py

    _, _, path = trained
    broken = tmp_path / "broken"
    shutil.copytree(path, broken)
    with h5py.File(broken / "weights.weights.h5", "a") as fh:
        del fh["teacher_dense/bias"]
    manifest = json.loads((broken / "manifest.json").read_text())
    from concerto_core.io import sha256_file, write_manifest

    manifest["files"]["weights.weights.h5"] = sha256_file(broken / "weights.weights.h5")
    write_manifest(broken, manifest)  # re-signed: the digests pass, the architecture check must not
    with pytest.raises(ValueError, match="missing"):
        Concerto.load(broken)
    # A modified weight file no longer matches its recorded hash.
    with h5py.File(broken / "weights.weights.h5", "a") as fh:
        fh.create_dataset("junk", data=np.zeros(1))
    with pytest.raises(ValueError, match="sha256"):
        Concerto.load(broken)
    with pytest.raises(FileNotFoundError):
        Concerto.load(tmp_path / "nothing")


def test_save_refuses_to_overwrite(trained):
    _, model, path = trained
    with pytest.raises(FileExistsError):
        model.save(path)


def test_deterministic_with_seed():
    adata = simulate_groups(n_cells=200, n_genes=60, seed=2)
    cfg = ConcertoConfig(embedding_dim=16, batch_size=50, epochs=2, seed=11)
    z = []
    for _ in range(2):
        m = Concerto(adata, batch_key="batch", config=cfg, verbose=False)
        m.train()
        z.append(m.get_latent_representation(adata))
    np.testing.assert_array_equal(z[0], z[1])
    m = Concerto(adata, batch_key="batch", config=cfg.replace(seed=12), verbose=False)
    m.train()
    assert not np.allclose(m.get_latent_representation(adata), z[0])


def test_checkpoint_resume_matches_uninterrupted(tmp_path, monkeypatch):
    from concerto_core.checkpoint import TrainingCheckpoint

    adata = simulate_groups(n_cells=200, n_genes=60, seed=4)
    cfg = ConcertoConfig(embedding_dim=16, batch_size=50, epochs=3, seed=5, precise_bn=False)
    full = Concerto(adata, config=cfg, verbose=False)
    full.train()
    # Kill a run right after its first checkpoint is written.
    original = TrainingCheckpoint.write

    def write_then_die(self, *args, **kwargs):
        original(self, *args, **kwargs)
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(TrainingCheckpoint, "write", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        Concerto(adata, config=cfg, verbose=False).train(checkpoint_dir=tmp_path / "ckpt")
    monkeypatch.setattr(TrainingCheckpoint, "write", original)
    assert json.loads((tmp_path / "ckpt" / "epoch-00001" / "state.json").read_text())["epochs_trained"] == 1
    resumed = Concerto(adata, config=cfg, verbose=False)
    resumed.train(checkpoint_dir=tmp_path / "ckpt")
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    np.testing.assert_allclose([h["loss"] for h in resumed.history], [h["loss"] for h in full.history], rtol=1e-5)
    np.testing.assert_allclose(resumed.get_latent_representation(adata), full.get_latent_representation(adata), atol=1e-5)
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == ["epoch-00003"]  # older epochs are removed
    # A checkpoint of other hyperparameters is refused rather than silently mixed.
    with pytest.raises(ValueError, match="other hyperparameters"):
        Concerto(adata, config=cfg.replace(dropout=0.3), verbose=False).train(checkpoint_dir=tmp_path / "ckpt")


@pytest.mark.parametrize(
    "mutate,error,match",
    [
        (lambda a: a.obs.drop(columns="batch", inplace=True), KeyError, "batch_key 'batch'"),
        (lambda a: setattr(a, "X", a.X.toarray() * np.nan), ValueError, "NaN"),
        (lambda a: setattr(a, "X", -a.X), ValueError, "negative"),
        (lambda a: setattr(a, "X", a.X.toarray().astype(str)), ValueError, "dtype"),
    ],
)
def test_bad_input_errors(mutate, error, match):
    adata = simulate_groups(n_cells=50, n_genes=20)
    mutate(adata)
    with pytest.raises(error, match=match):
        Concerto(adata, batch_key="batch")


def test_empty_and_duplicate_inputs():
    adata = simulate_groups(n_cells=50, n_genes=20)
    with pytest.raises(ValueError, match="at least 2 cells"):
        Concerto(adata[:0].copy())
    with pytest.raises(ValueError, match="empty"):
        Concerto(adata[:, :0].copy())
    dup = adata.copy()
    dup.var_names = ["g"] * 20
    with pytest.raises(ValueError, match="duplicate"):
        Concerto(dup)
    with pytest.raises(ValueError, match="dropout"):
        ConcertoConfig(dropout=1.5)
    with pytest.raises(TypeError):
        Concerto(np.zeros((3, 3)))


def test_multimodal_rna_plus_protein(tmp_path):
    adata = simulate_groups(n_cells=200, n_genes=60, seed=6)
    rng = np.random.default_rng(0)
    group = adata.obs["group"].cat.codes.to_numpy()
    protein = rng.poisson(5 + 20 * (group[:, None] == np.arange(5)[None, :])).astype(np.float32)
    adata.obsm["protein"] = np.log1p(protein)
    adata.uns["protein_names"] = [f"CD{i}" for i in range(5)]
    model = Concerto(adata, modalities={"rna": "X", "protein": "obsm:protein:protein_names"},
                     config=ConcertoConfig(embedding_dim=16, batch_size=50, epochs=1), verbose=False)
    model.train()
    both = model.get_latent_representation(adata)
    rna_only = model.get_latent_representation(adata, modalities=["rna"])
    assert both.shape == rna_only.shape == (200, 16)
    assert not np.allclose(both, rna_only)
    att = model.attention(adata)
    assert set(att) == {"rna", "protein"} and att["protein"].shape == (200, 5)
    model.save(tmp_path / "mm")
    again = Concerto.load(tmp_path / "mm")
    np.testing.assert_array_equal(again.get_latent_representation(adata), both)
    from concerto_core.io import model_variables

    names = set(model_variables(model.network))
    assert "teacher_protein_attention/gene_embedding" in names and "student_protein_dense/kernel" in names


@pytest.mark.parametrize("value_batchnorm", ["shared", "per_gene"])
def test_authors_code_variant_runs(value_batchnorm, tmp_path):
    adata = simulate_groups(n_cells=120, n_genes=40)
    cfg = ConcertoConfig(embedding_dim=16, batch_size=40, epochs=1, tanh_after_pooling=True,
                         value_batchnorm=value_batchnorm, student_hidden_layers=1, dropout=0.1)
    model = Concerto(adata, batch_key="batch", config=cfg, verbose=False)
    model.train()
    z = model.get_latent_representation(adata)
    assert np.isfinite(z).all()
    model.save(tmp_path / "m")
    np.testing.assert_allclose(Concerto.load(tmp_path / "m", verbose=False).get_latent_representation(adata), z, atol=1e-6)


def test_cli_pretrain_and_embed(tmp_path):
    adata = simulate_groups(n_cells=120, n_genes=40)
    src = tmp_path / "train.h5ad"
    adata.write_h5ad(src)
    exe = [sys.executable, "-m", "concerto_core.cli"]
    subprocess.run(exe + ["pretrain", "--input", str(src), "--output", str(tmp_path / "model"), "--batch-key", "batch",
                          "--epochs", "1", "--batch-size", "40", "--embedding-dim", "16", "--threads", "1",
                          "--cpu-kernels", "tensorflow", "--precise-bn-max-cells", "50"], check=True, capture_output=True)
    config = json.loads((tmp_path / "model" / "manifest.json").read_text())["config"]
    assert config["cpu_kernels"] == "tensorflow" and config["precise_bn_max_cells"] == 50
    assert config["mixed_precision"] is None
    subprocess.run(exe + ["embed", "--model", str(tmp_path / "model"), "--input", str(src), "--output", str(tmp_path / "out.h5ad")],
                   check=True, capture_output=True)
    out = ad.read_h5ad(tmp_path / "out.h5ad")
    assert out.obsm["X_concerto"].shape == (120, 16)
    bad = subprocess.run(exe + ["pretrain", "--input", str(tmp_path / "missing.h5ad"), "--output", str(tmp_path / "x")],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and ("does not exist" in bad.stderr or "no such file" in bad.stderr)
    helptext = subprocess.run(exe + ["pretrain", "--help"], capture_output=True, text=True).stdout
    assert "--batch-key" in helptext and "--checkpoint-dir" in helptext and "--mixed-precision" in helptext


def test_source_batches_hold_one_source_each(recorded_batches):
    adata = simulate_groups(n_cells=150, n_genes=30)
    cfg = ConcertoConfig(embedding_dim=8, batch_size=32, epochs=1, precise_bn=False, source_batches=True)
    model = Concerto(adata, batch_key="batch", config=cfg, verbose=False)
    seen = recorded_batches
    model.train()
    codes = model._train_inputs.source
    assert sorted(np.concatenate(seen).tolist()) == list(range(150))
    assert all(len(np.unique(codes[rows])) == 1 for rows in seen)


def test_precise_batchnorm_statistics_are_exact_per_source(trained):
    """After training, each source's BatchNorm statistics equal that source's moments over
    its training cells: counts for the student BN, pooled vectors for the teacher BN."""
    import tensorflow as tf

    adata, model, _ = trained
    net = model.network
    X = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)
    inputs = model._train_inputs
    batch = {k: tf.constant(v) for k, v in inputs.batch(np.arange(inputs.n_cells)).items()}
    pooled = net.pooled(batch, training=False).numpy().astype(np.float64)
    for s, name in enumerate(model.sources):
        cells = (adata.obs["batch"] == name).to_numpy()
        np.testing.assert_allclose(net.student_rna_bn.moving_mean.numpy()[s], X[cells].mean(0), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(net.student_rna_bn.moving_variance.numpy()[s], X[cells].var(0), rtol=1e-3, atol=1e-5)
        np.testing.assert_allclose(net.teacher_bn.moving_mean.numpy()[s], pooled[cells].mean(0), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(net.teacher_bn.moving_variance.numpy()[s], pooled[cells].var(0), rtol=1e-3, atol=1e-6)


def test_precise_batchnorm_sample_cap():
    adata = simulate_groups(n_cells=300, n_genes=60, seed=4)
    X = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)
    cfg = ConcertoConfig(embedding_dim=8, batch_size=64, epochs=1, precise_bn_max_cells=60)
    model = Concerto(adata, batch_key="batch", config=cfg, verbose=False).train()
    for s, name in enumerate(model.sources):
        cells = (adata.obs["batch"] == name).to_numpy()
        got = model.network.student_rna_bn.moving_mean.numpy()[s]
        # a 60-cell sample: close to, but not exactly, the source's mean over all its cells
        assert not np.allclose(got, X[cells].mean(0), rtol=1e-5)
        assert np.corrcoef(got, X[cells].mean(0))[0, 1] > 0.9
    with pytest.raises(ValueError, match="precise_bn_max_cells"):
        ConcertoConfig(precise_bn_max_cells=0)


@pytest.mark.parametrize("policy", ["bfloat16", "float16"])
def test_mixed_precision_option_trains_with_float32_weights(policy):
    """The GPU option also runs on CPU: lower-precision compute, float32 weights and outputs."""
    adata = simulate_groups(n_cells=200, n_genes=50, seed=2)
    cfg = ConcertoConfig(embedding_dim=16, batch_size=50, epochs=3, mixed_precision=policy)
    model = Concerto(adata, batch_key="batch", config=cfg, verbose=False).train()
    losses = [h["loss"] for h in model.history]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert model.network.teacher_rna_attention.compute_dtype == policy
    assert model.network.teacher_bn.compute_dtype == "float32"
    assert all(v.dtype == "float32" for v in model.network.weights)
    z = model.get_latent_representation(adata)
    assert z.dtype == np.float32 and np.isfinite(z).all()
    with pytest.raises(ValueError, match="mixed_precision"):
        ConcertoConfig(mixed_precision="float8")


def _cli_reference(tmp_path, seed: int, split_seed: int, epochs: int):
    """Synthetic cells split into reference/held-out query files and a model pretrained by the CLI."""
    adata = simulate_groups(n_cells=600, n_genes=200, seed=seed)
    held_out = np.random.default_rng(split_seed).random(adata.n_obs) < 0.25
    ref, query = adata[~held_out].copy(), adata[held_out].copy()
    ref.write_h5ad(tmp_path / "ref.h5ad")
    query.write_h5ad(tmp_path / "query.h5ad")
    exe = [sys.executable, "-m", "concerto_core.cli"]
    subprocess.run(exe + ["pretrain", "--input", str(tmp_path / "ref.h5ad"), "--output", str(tmp_path / "model"),
                          "--batch-key", "batch", "--epochs", str(epochs), "--batch-size", "64"],
                   check=True, capture_output=True)
    return exe, query


def test_cli_map_direct_and_finetuned(tmp_path):
    """`concerto map`: reference model + annotated reference + query -> query with predictions."""
    exe, query = _cli_reference(tmp_path, seed=6, split_seed=0, epochs=4)
    common = ["map", "--model", str(tmp_path / "model"), "--reference", str(tmp_path / "ref.h5ad"),
              "--query", str(tmp_path / "query.h5ad"), "--query-batch-key", "batch", "--threads", "1"]
    for extra, name in (([], "direct"), (["--finetune-dir", str(tmp_path / "tuned")], "tuned")):
        out_file = tmp_path / f"{name}.h5ad"
        run = subprocess.run(exe + common + ["--label-key", "group", "--output", str(out_file)] + extra,
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-2000:]
        out = ad.read_h5ad(out_file)
        assert out.obsm["X_concerto"].shape == (query.n_obs, 128)
        assert ((out.obs["conf_score"] >= 0) & (out.obs["conf_score"] <= 1)).all()
        accuracy = (out.obs["predicted_label"].astype(str) == query.obs["group"].astype(str)).mean()
        assert accuracy > 0.6, (name, accuracy)  # 5 groups: chance is ~0.2
    assert (tmp_path / "tuned" / "manifest.json").exists()
    bad = subprocess.run(exe + common + ["--label-key", "celltype", "--output", str(tmp_path / "x.h5ad")],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "celltype" in bad.stderr and not (tmp_path / "x.h5ad").exists()


def test_unseen_source_statistics_use_the_sample_cap(trained):
    adata, model, _ = trained
    query = adata.copy()
    query.obs["batch"] = pd.Categorical(["new_lab"] * query.n_obs)
    full = model.get_latent_representation(query)
    original = model.config
    try:
        model.config = original.replace(precise_bn_max_cells=40)
        sampled = model.get_latent_representation(query)
    finally:
        model.config = original
    cosine = (full * sampled).sum(1)  # rows are L2-normalised
    assert not np.allclose(full, sampled, atol=1e-6)  # 40 of 400 cells: other statistics...
    assert np.median(cosine) > 0.9  # ...but nearly the same embedding


def test_cli_finetune_and_classify(tmp_path):
    """`concerto finetune` (supervised, eq 12) then `concerto classify` on held-out cells."""
    exe, query = _cli_reference(tmp_path, seed=8, split_seed=1, epochs=2)
    tune = exe + ["finetune", "--model", str(tmp_path / "model"), "--input", str(tmp_path / "ref.h5ad"),
                  "--output", str(tmp_path / "clf"), "--epochs", "2", "--threads", "1"]
    run = subprocess.run(tune + ["--label-key", "group"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    run = subprocess.run(exe + ["classify", "--classifier", str(tmp_path / "clf"), "--input", str(tmp_path / "query.h5ad"),
                                "--output", str(tmp_path / "annotated.h5ad"), "--threshold", "0.3"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    out = ad.read_h5ad(tmp_path / "annotated.h5ad")
    accuracy = (out.obs["predicted_label"].astype(str) == query.obs["group"].astype(str)).mean()
    print(f"\nconcerto finetune + classify, held-out accuracy {accuracy:.3f}")
    assert accuracy > 0.8, accuracy
    assert out.obs["conf_score"].between(0, 1).all()
    bad = subprocess.run(tune + ["--label-key", "celltype", "--overwrite"], capture_output=True, text=True)
    assert bad.returncode != 0 and "celltype" in bad.stderr
