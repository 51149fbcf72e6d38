"""Streaming from sharded files: coverage per epoch, equality with in-memory, flat memory."""

import json
import subprocess
import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from synthetic_data import simulate_groups

from concerto_core import Concerto, ConcertoConfig
from concerto_core.shards import ShardedCells, read_manifest, write_shards


def identity_cells(n):
    """Cell i expresses only gene i (value i + 1): a batch reveals exactly which cells it holds."""
    X = sp.csr_matrix((np.arange(1, n + 1, dtype=np.float32), (np.arange(n), np.arange(n))), shape=(n, n))
    adata = ad.AnnData(X)
    adata.var_names = [f"g{i}" for i in range(n)]
    adata.obs["batch"] = pd.Categorical(np.where(np.arange(n) % 3 == 0, "a", "b"))
    return adata


def test_every_cell_once_per_epoch_across_shards(tmp_path):
    n = 1037
    write_shards(identity_cells(n), tmp_path / "ds", shard_size=300, obs_columns=["batch"])
    data = ShardedCells(tmp_path / "ds", batch_key="batch", block_cells=64, window_blocks=3)
    assert data.n_cells == n and data.sources == ["a", "b"]
    epochs = []
    for epoch in range(2):
        seen, sizes = [], []
        for batch in data.iter_epoch(epoch, seed=0, batch_size=50):
            cells = batch["rna_idx"]  # one expressed gene per cell, in cell order
            np.testing.assert_array_equal(batch["rna_row"], np.arange(len(cells)))
            np.testing.assert_allclose(batch["rna_val"], cells + 1)
            np.testing.assert_array_equal(batch["source"], np.where(cells % 3 == 0, 0, 1))
            seen.extend(cells.tolist())
            sizes.append(len(cells))
        assert sorted(seen) == list(range(n))
        assert min(sizes) >= 2 and max(sizes) <= 51
        epochs.append(seen)
    assert epochs[0] != epochs[1]
    # Batches mix shards: the first batch holds cells of more than one shard.
    first = next(iter(data.iter_epoch(0, 0, 50)))
    assert len(set(first["rna_idx"] // 300)) > 1


def test_streamed_training_and_embedding_match_in_memory(tmp_path):
    adata = simulate_groups(n_cells=300, n_genes=80, seed=8)
    write_shards(adata, tmp_path / "ds", shard_size=128, obs_columns=["batch", "group"])
    cfg = ConcertoConfig(embedding_dim=16, batch_size=64, epochs=1, seed=2)
    model = Concerto.from_shards(tmp_path / "ds", batch_key="batch", config=cfg, verbose=False)
    model.train()
    assert model.epochs_trained == 1 and np.isfinite(model.history[0]["loss"])
    out = model.embed_shards(tmp_path / "ds", tmp_path / "z.npy")
    z = np.load(out)
    np.testing.assert_allclose(z, model.get_latent_representation(adata), atol=1e-5)
    model.save(tmp_path / "model")
    again = Concerto.load(tmp_path / "model")
    np.testing.assert_allclose(again.get_latent_representation(adata), z, atol=1e-5)


def test_counts_shards_are_log_normalised(tmp_path):
    adata = simulate_groups(n_cells=100, n_genes=40, lognorm=False)
    write_shards(adata, tmp_path / "ds", shard_size=64, values="counts")
    data = ShardedCells(tmp_path / "ds")
    X = data.read_block(0, 0, 10)
    expected = np.log1p(adata.X[:10].toarray() / adata.X[:10].sum(1).A * 1e4)
    np.testing.assert_allclose(X.toarray(), expected, rtol=1e-5)


def test_incomplete_dataset_is_refused(tmp_path):
    write_shards(identity_cells(50), tmp_path / "ds", shard_size=20)
    (tmp_path / "ds" / "part-00001.h5ad").unlink()
    with pytest.raises(FileNotFoundError, match="part-00001"):
        read_manifest(tmp_path / "ds")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="shards.json"):
        ShardedCells(tmp_path / "empty")


# Peak RSS is read from VmHWM: ru_maxrss would include the parent's memory at fork time.
RSS_SCRIPT = """
import re, sys
from concerto_core import Concerto, ConcertoConfig
m = Concerto.from_shards(sys.argv[1], batch_key="batch", verbose=False, block_cells=2048, window_blocks=4,
                         config=ConcertoConfig(embedding_dim=16, batch_size=256, epochs=1, precise_bn=False))
m.train()
print(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
"""


@pytest.mark.slow
def test_training_memory_does_not_grow_with_cells(tmp_path):
    rng = np.random.default_rng(0)
    peaks = {}
    for n in (10_000, 80_000):
        X = sp.random(n, 500, density=0.05, format="csr", random_state=rng, dtype=np.float32)
        X.data = np.log1p(X.data * 10)
        a = ad.AnnData(X)
        a.var_names = [f"g{i}" for i in range(500)]
        a.obs["batch"] = pd.Categorical(rng.choice(["x", "y"], n))
        write_shards(a, tmp_path / f"ds{n}", shard_size=10_000, obs_columns=["batch"])
        del a, X
        out = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(tmp_path / f"ds{n}")],
                             check=True, capture_output=True, text=True)
        peaks[n] = int(out.stdout.strip().splitlines()[-1])
    print(f"\npeak RSS (KiB) by cells: {json.dumps(peaks)}")
    assert peaks[80_000] < 1.15 * peaks[10_000]


@pytest.mark.parametrize("n_sources,batch_size", [(3, 50), (40, 50)])
def test_single_source_batches_from_shards(tmp_path, n_sources, batch_size):
    """source_batches for streamed input: every cell once per epoch, each batch one source,
    batches of different sources interleaved; many small sources (40 x ~26 cells, smaller
    than a batch) are flushed as smaller batches instead of piling up."""
    n = 1037
    adata = identity_cells(n)
    rng = np.random.default_rng(0)
    labels = rng.choice(n_sources, n, p=np.arange(1, n_sources + 1) / np.arange(1, n_sources + 1).sum())
    adata.obs["batch"] = pd.Categorical([f"s{k:02d}" for k in labels])
    write_shards(adata, tmp_path / "ds", shard_size=300, obs_columns=["batch"])
    data = ShardedCells(tmp_path / "ds", batch_key="batch", block_cells=64, window_blocks=3)
    source_of_cell = np.asarray(data.source)
    seen, batch_sources = [], []
    for batch in data.iter_epoch(0, seed=0, batch_size=batch_size, by_source=True):
        cells = batch["rna_idx"]
        assert len(set(batch["source"].tolist())) == 1
        np.testing.assert_array_equal(batch["source"], source_of_cell[cells])
        assert 1 <= len(cells) <= batch_size
        seen.extend(cells.tolist())
        batch_sources.append(int(batch["source"][0]))
    assert sorted(seen) == list(range(n))
    runs = 1 + sum(a != b for a, b in zip(batch_sources, batch_sources[1:]))
    assert runs > len(set(batch_sources))  # sources interleave, not one source after another
