"""Which of the paper's panels the configured study reproduces: the README's coverage table,
generated from the config (``python -m concerto_workflow.coverage [config.yaml] --write README.md``)
so it never drifts from what actually runs. The panel list and descriptions are the paper's."""
from __future__ import annotations

import argparse
import re
import sys

#: panel -> what the paper shows there
PAPER_PANELS = {
    "2a": "PBMC45k intra-dataset annotation, 5-fold CV within batches (median F1)",
    "2b": "PBMC45k inter-protocol annotation, leave one protocol out (median F1)",
    "2c": "thymus + PBMC45k fine-grained annotation (accuracy)",
    "2d": "rejection of unseen T-cell types (confidence densities)",
    "2e": "PBMC160k multimodal annotation: RNA / protein / both",
    "2f": "Tabula Muris Senis intra-tissue annotation vs SciBet",
    "2g": "Tabula Muris Senis cross-tissue transfer vs MARS (ARI)",
    "2h": "Limb Muscle held out: UMAP of transferred annotations",
    "2i": "Limb Muscle held out: Sankey of transferred annotations",
    "3a": "clustering metrics (NMI, ARI, silhouette) per resolution",
    "3b": "UMAPs of clusters vs truth",
    "3c": "multimodal embeddings: RNA, protein, both",
    "3d": "attention signatures of marker genes and proteins",
    "3e": "pancreas integration UMAPs (2,000 HVGs, all genes)",
    "3f": "partially overlapping integration (over-correction, beta cells removed)",
    "3g": "pancreas integration kBET / ASW at every HVG level",
    "4a": "query-to-reference mapping accuracy (HP->inDrop, HP->MP)",
    "4b": "mapping confusion matrices",
    "4c": "unseen cell type mapped onto the reference (UMAP)",
    "4d": "CD8 T distance to NK vs marker expression",
    "4e": "protein inference of an RNA-only query (Pearson r)",
    "4f": "measured vs inferred protein UMAPs",
    "4g": "scalability: reference building and mapping time and memory",
    "4h": "overall comparison of mapping tools",
    "5a": "COVID-19 PBMC hierarchical mapping onto the healthy reference",
    "5b": "CD8 T subtypes and exhausted T cells by disease status",
    "5c": "NK subtypes by disease status",
    "5d": "monocyte subtypes by disease status",
    **{f"S{i}": d for i, d in enumerate((
        "per-fold heatmaps of Fig 2a", "per-fold heatmaps of Fig 2b", "Tabula Muris Senis per tissue",
        "rejection level 1", "rejection level 2", "rejection level 3", "Sankey plots, Spleen and Brain",
        "Splatter robustness (dropout, DE strength)", "clustering results 1", "clustering results 2",
        "clustering results 3", "integration UMAPs at the other HVG levels"), start=1)},
}

BEGIN, END = "<!-- coverage:begin -->", "<!-- coverage:end -->"


def _panels_of(text: str) -> list[str]:
    """'3e', '4a (left)', 'S1', '2a + S1' -> ['3e'], ['4a'], ['S1'], ['2a', 'S1']."""
    return [p for p in re.findall(r"S\d+|\d[a-i]", str(text)) if p in PAPER_PANELS]


def coverage(config: dict) -> dict[str, list[str]]:
    """panel -> the enabled figures that draw it (in file order)."""
    from .workflow_config import enabled_experiments

    enabled = enabled_experiments(config)
    out: dict[str, list[str]] = {p: [] for p in PAPER_PANELS}
    for name, f in config.get("figures", {}).items():
        if all(x in enabled for x in f["experiments"]):
            for p in _panels_of(f["panel"]):
                out[p].append(name)
    if config.get("covid", {}).get("enabled", False):   # Fig 5: rules/covid.smk
        from .covid import FIGURES

        for name, (panel, *_) in FIGURES.items():
            out[panel].append(name)
    return out


OPT_IN = "config/opt_in.yaml"


def table(config: dict, opt_in: dict | None = None) -> str:
    """The coverage table of ``config``; panels that only the opt-in study ``opt_in`` (the default
    study with its switched-off experiments enabled, :data:`OPT_IN`) draws are marked opt-in."""
    cov = coverage(config)
    cov_opt = coverage(opt_in) if opt_in else {p: [] for p in PAPER_PANELS}
    rows = ["| panel | what the paper shows | status in the default study | figure files |",
            "|---|---|---|---|"]
    for p, desc in PAPER_PANELS.items():
        figs = cov[p]
        complete = any(config["figures"].get(f, {}).get("complete", False) for f in figs)
        status = "reproduced" if complete else "partly (caption says what differs)" if figs else "not yet"
        if not figs and cov_opt[p]:
            figs, status = cov_opt[p], f"opt-in: `--configfile {OPT_IN}`"
        rows.append(f"| {p} | {desc} | {status} | {', '.join(f'`{f}.png`' for f in figs)} |")
    done = sum(bool(v) for k, v in cov.items() if not k.startswith("S"))
    supp = sum(bool(v) for k, v in cov.items() if k.startswith("S"))
    extra = sum(bool(cov_opt[k]) and not cov[k] for k in PAPER_PANELS)
    rows.append("")
    rows.append(f"{done} of {sum(not k.startswith('S') for k in PAPER_PANELS)} main panels and {supp} of 12 "
                "supplementary figures are drawn, fully or partly, by the default study"
                + (f", {extra} more by the opt-in study `{OPT_IN}`" if extra else "")
                + " (generated from the config by `python -m concerto_workflow.coverage --write README.md`).")
    return "\n".join(rows)


def replace_block(text: str, begin: str, end: str, body: str) -> str:
    """``text`` with what lies between the markers ``begin`` and ``end`` replaced by ``body``: the
    README's generated blocks (this coverage table, the real-data comparison table)."""
    if begin not in text or end not in text:
        raise ValueError(f"README has no {begin} ... {end} block")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body}\n{end}{tail}"


def write_block(path: str, begin: str, end: str, body: str) -> None:
    """Replace a generated block of ``path``; the new text is made before the file is opened for
    writing, so an error (no markers, a failing table) leaves the file as it was."""
    with open(path) as fh:
        text = replace_block(fh.read(), begin, end, body)
    with open(path, "w") as fh:
        fh.write(text)


def update_readme(text: str, config: dict, opt_in: dict | None = None) -> str:
    return replace_block(text, BEGIN, END, table(config, opt_in))


def load_config(path: str) -> dict:
    import os

    import yaml
    from snakemake.utils import validate

    from .workflow_config import extend_config

    config = extend_config(yaml.safe_load(open(path)))
    validate(config, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "rules",
                                  "config.schema.yaml"))
    return config


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("config", nargs="?", default="config.yaml")
    p.add_argument("--opt-in", default=OPT_IN, help="the study with the opt-in experiments enabled "
                   "(its panels are marked opt-in; '' for none)")
    p.add_argument("--write", metavar="README", help="replace the coverage block of this file")
    a = p.parse_args(argv)
    config = load_config(a.config)
    opt_in = load_config(a.opt_in) if a.opt_in else None
    if a.write:
        write_block(a.write, BEGIN, END, table(config, opt_in))
    else:
        print(table(config, opt_in))
    return 0


if __name__ == "__main__":
    sys.exit(main())
