"""Hydra entry points (`coconut-train`, `coconut-eval`) and the checks of configs and checkpoints
they run before anything is built. The top of the dependency order: it may import every layer."""
