"""``python -m concerto_workflow.methods``: list the registered competitors."""
from . import REGISTRY, missing_dependencies

for m in REGISTRY.values():
    missing = missing_dependencies(m)
    state = "ok" if not missing else "not installed: " + ", ".join(missing)
    print(f"{m.name:10s} tasks={','.join(m.tasks):22s} [{state}]  {m.description}")
