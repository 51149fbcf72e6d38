from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""Run benchmarks/study_real.py (its main) with the rule's threads as processes."""
import importlib.util

sm = snakemake  # noqa: F821
spec = importlib.util.spec_from_file_location("study_real", sm.input.script)
study = importlib.util.module_from_spec(spec)
spec.loader.exec_module(study)
study.main(["--out", sm.params.out, "--data-dir", sm.params.data_dir, "--jobs", str(sm.threads)])
