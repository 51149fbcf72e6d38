"""Make ``concerto_workflow`` (in ``<repo>/scripts``) importable for the workflow tests."""
import sys
from pathlib import Path

_SCRIPTS = str(Path(__file__).resolve().parents[2] / "scripts")
if _SCRIPTS not in sys.path:
    sys.path.insert(0, _SCRIPTS)
