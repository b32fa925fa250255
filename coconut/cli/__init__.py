"""Hydra entry points: `coconut-train`, `coconut-eval`, `coconut-export`. Each is a thin shell that
composes the config and hands it to coconut.commands, which does the work. The top of the dependency
order: it may import every layer, but no cli/ module imports another (tests/test_architecture.py)."""
