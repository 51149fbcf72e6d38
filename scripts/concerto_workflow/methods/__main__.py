"""``python -m concerto_workflow.methods``: list the registered methods, their tasks and state."""
from . import REGISTRY, capability, missing_dependencies
from .api import KINDS
from ..outputs import TASKS

for kind in KINDS:
    for m in (m for m in REGISTRY.values() if m.kind == kind):
        tasks = [t + ("*" if capability(m.name, t)[0] != "own" else "") for t in TASKS if capability(m.name, t)]
        missing = missing_dependencies(m.name)
        state = "ok" if not missing else "not installed: " + ", ".join(missing)
        print(f"{m.name:15s} {kind:17s} {','.join(tasks):32s} [{state}]  {m.description}")
print("(* = through the engine's shared k-NN vote / smoothing / Leiden on the method's embedding)")
