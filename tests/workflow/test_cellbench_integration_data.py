"""The CellBench part of config/real_subsets.yaml (issue 14, Fig 3e / 3g on real cells): five
files with different gene sets become one dataset whose batch tells the files apart, whose
technology is CEL-seq2 or Drop-seq, on the genes all files share; the split keeps demuxlet's
singlets. Checked on tiny files written with the config's own column choices, and (where
../shared/data is present) against the real files' obs."""
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml

from concerto_workflow import datasets, splits

REPO = Path(__file__).resolve().parents[2]
CONFIG = yaml.safe_load((REPO / "config" / "real_subsets.yaml").read_text())
PARTS = CONFIG["datasets"]["cellbench5"]["concat"]["datasets"]
DATA = REPO.parent / "shared" / "data"


def _cellbench_like(path: Path, protocol: str, genes: list[str], lines: list[str], calls: list[str]) -> None:
    """A file laid out as the CellBench h5ads: counts, Ensembl ids, obs protocol / cell_line_demuxlet /
    demuxlet_cls (the 5-line plates have no cell_line column)."""
    n = len(lines)
    obs = pd.DataFrame({"protocol": protocol, "cell_line_demuxlet": lines, "demuxlet_cls": calls,
                        "number_of_genes": np.arange(n)}, index=[f"cell{i}" for i in range(n)])
    x = sp.csr_matrix(np.add.outer(10 * np.arange(n), np.arange(len(genes))).astype(np.float32))
    ad.AnnData(x, obs=obs, var=pd.DataFrame(index=genes)).write_h5ad(path)


def test_five_files_become_five_batches_on_their_shared_genes(tmp_path):
    shared = [f"ENSG{i:05d}" for i in range(100)]
    protocols = ["sc_celseq2", "sc_dropseq", "sc_celseq2_5cl_p1", "sc_celseq2_5cl_p2", "sc_celseq2_5cl_p3"]
    parts = {}
    for k, (name, protocol) in enumerate(zip(PARTS, protocols)):
        own = [f"ENSG9{k}{j}" for j in range(3)]          # genes only this file has
        genes = own + shared[::-1] if k % 2 else shared + own
        _cellbench_like(tmp_path / f"{protocol}.h5ad", protocol, genes, ["A549", "H1975", "H838"], ["SNG", "DBL", "SNG"])
        local = dict(CONFIG["datasets"][name]["local"], path=str(tmp_path / f"{protocol}.h5ad"))
        parts[name] = datasets.convert_real(local.pop("path"), **local)
    out = datasets.concat_datasets(parts)
    assert list(out.var_names) == shared                  # inner join: private genes gone, first file's order
    assert list(out.obs["batch"].cat.categories) == sorted(protocols)   # one batch per file, unprefixed
    assert dict(zip(out.obs["batch"], out.obs["tech"])) == {
        "sc_celseq2": "celseq2", "sc_dropseq": "dropseq", "sc_celseq2_5cl_p1": "celseq2",
        "sc_celseq2_5cl_p2": "celseq2", "sc_celseq2_5cl_p3": "celseq2"}
    assert out.obs_names[0] == f"{PARTS[0]}:cell0"        # cell names clash between files: prefixed
    # the reversed gene order of the Drop-seq file is undone: same count for the same gene
    assert out.X[3, 0] == parts[PARTS[1]][:, shared[0]].X[0, 0]
    kept = splits.select_cells(out.obs, CONFIG["splits"][CONFIG["experiments"]["cellbench_integration"]["split"]]
                               .get("cells"))
    assert len(kept) == 10 and set(kept["demuxlet_cls"]) == {"SNG"}


@pytest.mark.realdata
@pytest.mark.skipif(not DATA.is_dir(), reason=f"real data folder {DATA} is absent")
def test_the_real_files_have_the_columns_the_config_relies_on():
    protocols = []
    for name in PARTS:
        local = CONFIG["datasets"][name]["local"]
        a = ad.read_h5ad(REPO / local["path"], backed="r")
        for col in (local["batch_col"], local["label_col"], *local["keep_obs"]):
            assert col in a.obs, f"{local['path']}: no obs column {col!r}"
        assert a.obs[local["batch_col"]].nunique() == 1   # one batch value per file ...
        protocols.append(str(a.obs[local["batch_col"]].iloc[0]))
        assert "SNG" in set(a.obs["demuxlet_cls"].astype(str))
        a.file.close()
    assert len(set(protocols)) == len(PARTS)              # ... and a different one in each
