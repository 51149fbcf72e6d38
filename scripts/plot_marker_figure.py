from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""Marker figures of one fold (paper Fig 4d): feature heatmaps over each method's UMAP
(feature_umap) or marker expression against the distance to a target type (marker_distance).
Writes the drawn numbers next to the figure (results/figures/<name>.tsv)."""
import anndata as ad
import pandas as pd

from concerto_workflow import figures, marker_maps, outputs

sm = snakemake  # noqa: F821
f = sm.params.figure
cells = ad.read_h5ad(sm.input.cells)
tabs = figures.read_umap_tables(sm.input.umaps, f["umap_methods"]) if "umaps" in sm.input.keys() else {}
if f["type"] == "feature_umap" and sm.params.task == "impute":  # paper Fig 4f
    layout_method, layout = next(iter(tabs.items()))
    rows, values, missing = marker_maps.measured_vs_inferred_rows(
        layout, {p: outputs.read_output(p, "impute") for p in sm.input.outputs}, f["features"], layout_method)
    pd.concat(values, names=["row", "cell"]).to_csv(sm.output.table, sep="\t")
    figures.plot_feature_umaps(rows, values, sm.output.figure, features=f["features"], title=f["title"],
                               missing=missing)
elif f["type"] == "feature_umap":
    values, missing = marker_maps.feature_values(cells, f["features"])
    values.rename_axis("cell").to_csv(sm.output.table, sep="\t")
    figures.plot_feature_umaps(tabs, values, sm.output.figure, features=f["features"], title=f["title"],
                               missing=missing)
else:
    points, corr, rows = {}, {}, []
    for p in sm.input.outputs:
        a = outputs.read_output(p, sm.params.task)
        m = a.uns["method"]
        if a.uns["status"] != "ok":
            points[m] = (a.uns["status"], a.uns["reason"])
            continue
        kw = dict(label_key=f["label_key"], group=f["group"], target=f["target"], features=f["features"])
        corr[m] = marker_maps.marker_distance_correlation(a, cells, **kw)
        points[m] = marker_maps.distance_table(a, cells, **kw)
        rows.append(corr[m].assign(method=m))
    table = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=marker_maps.CORRELATION_COLUMNS)
    table.to_csv(sm.output.table, sep="\t", index=False)
    print(table.to_string(), flush=True)
    figures.plot_marker_distance(points, corr, sm.output.figure, features=f["features"], group=f["group"],
                                 target=f["target"], title=f["title"])
