from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""COVID experiment figures (paper Fig 5a-5d) from the mapping and analysis tables."""
import pandas as pd

from concerto_workflow import covid_figures

sm = snakemake  # noqa: F821
f = sm.params.figure
read = lambda path: pd.read_csv(path, sep="\t", keep_default_na=False, na_values=[""])  # noqa: E731
umap = read(sm.input.umap)
if f["kind"] == "mapping":
    covid_figures.plot_mapping(umap, sm.output[0], title=f["title"], caption=sm.params.caption,
                               conditions=f["conditions"])
elif f["kind"] == "status_de":
    de = read(sm.input.status_de)
    covid_figures.plot_status_de(de[de["compartment"] == f["compartment"]], sm.output[0], title=f["title"],
                                 caption=sm.params.caption, conditions=f["conditions"])
else:
    c = f["compartment"]
    states = read(sm.input.states)
    pick = lambda df: df[df["compartment"] == c]  # noqa: E731
    cells = states[states["level1"] == f["level1"]]
    de = pick(read(sm.input.de))
    covid_figures.plot_compartment(umap[umap["dataset"] == "query"], cells, pick(read(sm.input.percentages)),
                                   pick(read(sm.input.tests)), pick(read(sm.input.markers)), sm.output[0],
                                   title=f["title"], caption=sm.params.caption, conditions=f["conditions"],
                                   de=de if len(de) else None, scatter=c == "mono")
