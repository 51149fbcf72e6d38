"""config/sources.yaml: valid, complete for the paper's datasets, and consistent with its converters."""
import pytest
import yaml

from concerto_workflow import sources as S
from concerto_workflow.converters import read_celltype_map

#: every dataset the paper's text identifies (Supplementary Table 1) -> its source ids
PAPER = {
    "PBMC45k (Ding 2020)": ["ding2020_pbmc"], "human thymus (Park 2020)": ["park2020_thymus"],
    "Tabula Muris Senis": ["tabula_muris_senis_facs", "tabula_muris_senis_droplet"],
    "PBMC160k CITE-seq (Hao 2021)": ["hao2021_pbmc160k"],
    "human pancreas panel": ["scib_pancreas", "baron2016_pancreas", "muraro2016_pancreas", "segerstolpe2016_pancreas",
                             "lawlor2017_pancreas", "xin2016_pancreas", "wang2016_pancreas"],
    "mouse pancreas (Baron 2016)": ["baron2016_mouse_pancreas"],
    "COVID-19 PBMC (Schulte-Schrepping 2020)": ["schulte_schrepping2020_covid"],
    "MGI homology report": ["mgi_homology"],
}


@pytest.fixture(scope="module")
def sources():
    return S.load_sources()


def test_every_paper_dataset_has_a_documented_source(sources):
    for dataset, ids in PAPER.items():
        for sid in ids:
            assert sid in sources, f"{dataset}: no entry {sid!r} in config/sources.yaml"
            s = sources[sid]
            assert s["licence"] and s["format"] and s["accession"], sid
            assert s["files"] or s["local_files"], f"{sid}: neither files to download nor local files"
    covid = sources["schulte_schrepping2020_covid"]
    assert covid["access"] == "controlled" and not covid["files"] and covid["local_files"]


def test_checksums_are_published_or_left_to_the_lock_file(sources):
    for sid, s in sources.items():
        for role, f in s["files"].items():
            assert f["url"].startswith("https://"), (sid, role)
            for algo, n in (("sha256", 64), ("md5", 32)):
                assert f[algo] == "" or len(f[algo]) == n, (sid, role, algo)


def test_paths_are_unique_and_map_back_to_their_file(sources):
    for sid, s in sources.items():
        names = [S.file_name(r, f["url"]) for r, f in s["files"].items()]
        assert len(set(names)) == len(names) and "standard.h5ad" not in names and "orthologs.tsv" not in names
        for role, f in s["files"].items():
            assert S.file_spec(sources, sid, S.file_name(role, f["url"]))[:2] == (role, f["url"])
    assert S.download_path("scib_pancreas", "h5ad", "https://figshare.com/ndownloader/files/24539828") == \
        "results/downloads/scib_pancreas/h5ad"


def test_celltype_maps_named_by_sources_exist_and_parse(sources, repo):
    for sid, s in sources.items():
        m = s.get("convert", {}).get("celltype_map")
        if m:
            assert read_celltype_map(repo / m), sid


def test_a_convert_block_naming_an_unknown_file_is_refused(tmp_path):
    data = yaml.safe_load(S.SOURCES.read_text())
    data["sources"]["mgi_homology"]["gene_map"] = {"file": "nope"}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match=r"sources.mgi_homology names file roles \['nope'\]"):
        S.load_sources(tmp_path / "s.yaml")
