"""One home for the names every workflow step shares: obs columns, roles, statuses, slots.

Datasets (after ``prepare_dataset``) carry :data:`CELL_TYPE`, :data:`BATCH` and :data:`TECH`;
split files assign each cell a :data:`ROLE` per fold; method outputs add the prediction
columns and slots below. Change a name here and every step follows.
"""
from __future__ import annotations

# dataset columns (common schema)
CELL_TYPE = "cell_type"
BATCH = "batch"
TECH = "tech"
DATASET_COLUMNS = (CELL_TYPE, BATCH, TECH)
SOURCE_DATASET = "source_dataset"   # which configured dataset a cell came from (cross-dataset splits)

# further obs columns of the standard schema (converters.py for real data, as the stand-ins name
# them); a converted dataset has the ones its source describes
CELL_TYPE_LEVELS = ("celltype.l1", "celltype.l2", "celltype.l3")   # coarse -> fine (PBMC160k)
DONOR = "donor"
TISSUE = "tissue"
SPECIES = "species"
CONDITION = "condition"              # disease status (healthy / moderate / severe ...)
STANDARD_OBS = DATASET_COLUMNS + CELL_TYPE_LEVELS + (DONOR, TISSUE, SPECIES, CONDITION)
COUNTS_LAYER = "counts"              # layers: raw counts of a converted dataset (X left empty)

# roles of a cell in one fold of a split
ROLE = "role"
TRAIN, VALID, TEST = "train", "valid", "test"
ROLES = (TRAIN, VALID, TEST)

# method outputs (scverse-style names, as in concerto_core)
EMBEDDING = "X_emb"                  # obsm: (n_cells, d) float32
PREDICTED = "predicted_label"        # obs: predicted label of valid/test cells
CONFIDENCE = "conf_score"            # obs: probability of the predicted label
PROBABILITIES = "label_probabilities"  # obsm: (n_cells, n_classes), columns = uns['label_classes']
CLASSES = "label_classes"            # uns: class names of PROBABILITIES
CLUSTERS = "clusters"                # obsm: (n_cells, n_settings) int cluster ids, columns = uns['cluster_settings']
CLUSTER_SETTINGS = "cluster_settings"
IMPUTED = "imputed"                  # obsm: (n_query, n_features) predicted values
MEASURED = "measured"                # obsm: the same features as measured (for scoring)
FEATURES = "feature_names"           # uns: names of the IMPUTED / MEASURED columns
ATTENTION = "attention_"             # obsm prefix: attention_<modality>, (n_cells, F) CSR attention weights
ATTENTION_FEATURES = "attention_features"  # uns: {modality: F feature names} of the ATTENTION matrices
PROTEIN = "protein"                  # obsm of datasets with a second modality
PROTEIN_NAMES = "protein_names"      # uns

# run status of a method on one fold
OK, FAILED, NOT_INSTALLED = "ok", "failed", "not_installed"
OVER_BUDGET = "over_budget"          # stopped at the experiment's time_budget_s (figures: "> budget")
STATUSES = (OK, FAILED, NOT_INSTALLED, OVER_BUDGET)

# provenance keys every method output carries in uns
PROVENANCE = ("experiment", "task", "dataset", "split", "fold", "preprocessing", "method", "seed",
              "status", "reason", "seconds", "peak_memory_mb", "log")
