"""Workflow-side library of the Concerto reproduction.

Everything the Snakemake rules do lives here as plain, testable functions; the
rule scripts in ``scripts/*.py`` only read ``snakemake.input/params`` and call
into this package.

Modules
-------
logs            send a rule script's stdout/stderr (also C-level) to its log
workflow_config cross-field config checks and the ``rule all`` target list
datasets        stand-in / real dataset loading into the common obs schema
preprocessing   filtering, normalisation, HVG selection (fit on training cells)
embedding_io    the embedding-file contract shared by every method
methods         registry of competitors (one function each) + isolated runner
concerto_runner train / embed with ``concerto_core`` (Concerto's own rules)
metrics         kBET, ASW, k-NN label transfer accuracy, confusion matrices
tables          tidy result tables (dataset, split, method, metric, value, status, log)
plotting        figures, drawn only from result tables
"""
