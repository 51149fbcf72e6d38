"""Simulators for the workflow: the Splat model, Splatter via R, the robustness grid,
stand-ins of the paper's datasets and the sharded scsim-scale generator."""
