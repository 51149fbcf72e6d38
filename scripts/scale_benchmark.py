from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""Run benchmarks/bench_scale.py (the CLI's main) with the rule's params; it writes the summary
JSON (config, mapping accuracy, seconds / cells/s / peak RSS per phase) to the output."""
import importlib.util

sm = snakemake  # noqa: F821
spec = importlib.util.spec_from_file_location("bench_scale", sm.input.script)
bench_scale = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_scale)
p = sm.params
bench_scale.main(["--cells", str(p.cells), "--genes", str(p.genes), "--query-cells", str(p.query_cells),
                  "--batch-size", str(p.batch_size), "--threads", str(sm.threads),
                  "--workdir", p.workdir, "--output", sm.output[0]])
