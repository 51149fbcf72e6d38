#!/usr/bin/env bash
# Best-effort install of R, Seurat and SingleR (Debian packages) plus rpy2 into the venv.
# Never fails the setup: without R the R competitors are reported as `not_installed`.
VENV=${1:-.venv}
warn() { echo "WARNING: $*; R competitors (seurat) will be reported as not_installed." >&2; exit 0; }
if ! command -v apt-get >/dev/null 2>&1; then warn "apt-get not available"; fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else warn "not root and no passwordless sudo"; fi
fi
if ! command -v R >/dev/null 2>&1 || ! Rscript -e 'quit(status = !all(c("Seurat","SingleR") %in% rownames(installed.packages())))' >/dev/null 2>&1; then
  echo "Installing R, r-cran-seurat, r-bioc-singler with apt-get (a few minutes) ..."
  $SUDO apt-get update -qq >/dev/null 2>&1 || warn "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      r-base-core r-base-dev r-cran-seurat r-bioc-singler >/dev/null 2>&1 || warn "apt-get install of R packages failed"
fi
"$VENV/bin/python" -m pip install --quiet "rpy2==3.5.17" || warn "pip install rpy2==3.5.17 failed"
"$VENV/bin/python" -c "import rpy2.robjects as r; r.r('library(Seurat)')" >/dev/null 2>&1 || warn "rpy2 cannot load Seurat"
echo "R competitors available (R, Seurat, SingleR, rpy2)."
