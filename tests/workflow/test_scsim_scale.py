"""scsim-scale sharded writer: format, counts, sparsity, atomic manifest, errors."""
import json

import anndata as ad
import numpy as np
import pytest

from concerto_workflow.simulate.scsim_scale import ScsimParams, read_shards, write_scsim_shards


def test_shards_readable_with_realistic_sparsity(tmp_path):
    m = write_scsim_shards(tmp_path / "d", ncells=1500, shard_size=600, block_cells=250, seed=1)
    man = json.loads((tmp_path / "d" / "shards.json").read_text())
    assert man["format"] == "concerto-shards" and man["version"] == 1 and man["values"] == "counts"
    assert man["n_cells"] == 1500 and [s["n_cells"] for s in man["shards"]] == [600, 600, 300]
    assert man["obs_columns"] == ["cell_type", "batch"] and len(man["var_names"]) == 25000
    part = ad.read_h5ad(tmp_path / "d" / "part-00001.h5ad")
    assert part.X.format == "csr" and part.X.dtype == np.float32 and part.shape == (600, 25000)
    assert list(part.var_names) == man["var_names"] and set(man["obs_columns"]) <= set(part.obs)
    a = read_shards(tmp_path / "d")
    genes = np.diff(a.X.indptr)
    assert 1000 <= genes.mean() <= 2000, genes.mean()
    assert a.obs["cell_type"].nunique() == 5
    assert not list((tmp_path / "d").glob("*.tmp"))
    assert m["stats"]["nnz"] == a.X.nnz


def test_max_shards_and_reproducible_prefix(tmp_path):
    full = write_scsim_shards(tmp_path / "f", ncells=900, ngenes=2000, shard_size=300, seed=3)
    part = write_scsim_shards(tmp_path / "p", ncells=10_000_000, ngenes=2000, shard_size=300,
                              max_shards=2, seed=3)
    assert part["requested_n_cells"] == 10_000_000 and part["n_cells"] == 600
    a = ad.read_h5ad(tmp_path / "f" / "part-00001.h5ad")
    b = ad.read_h5ad(tmp_path / "p" / "part-00001.h5ad")
    assert (a.X != b.X).nnz == 0 and full["n_cells"] == 900


@pytest.mark.parametrize("kw,name", [(dict(ncells=0), "ncells"), (dict(diffexpprob=1.5), "diffexpprob"),
                                     (dict(ngroups=0), "ngroups")])
def test_bad_params(kw, name):
    with pytest.raises(ValueError, match=name):
        ScsimParams(**kw)
