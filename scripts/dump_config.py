from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""Write the validated config (schema defaults filled in) for the report."""
import yaml

sm = snakemake  # noqa: F821
with open(sm.output[0], "w") as fh:
    yaml.safe_dump(dict(sm.params.config), fh, sort_keys=False)
