"""Hydra entry points (`coconut-train`, `coconut-eval`) and the checks of configs and checkpoints
they run before anything is built. The top of the dependency order: it may import every layer.

Importing this package sets `OMP_WAIT_POLICY=PASSIVE` (unless the environment sets it) before the
entry points import torch: idle OpenMP threads then sleep instead of spinning on cores that other
processes need (coconut/core/threads.py)."""

from coconut.core.threads import prefer_passive_wait

prefer_passive_wait()
