"""Hydra entry points (`coconut-train`, `coconut-eval`) and the checks of configs and checkpoints
they run before anything is built. The top of the dependency order: it may import every layer.

`${coconut.project_root:}` (conf/paths/default.yaml) is registered here, before any config is
composed: `$PROJECT_ROOT`, else the project's folder, absolute, so that `paths.data_dir` is the folder
coconut-data writes, whatever the current folder. So are the typed configs (coconut/commands/config.py),
the schemas of conf/train.yaml, eval.yaml and export.yaml."""

from omegaconf import OmegaConf

import coconut.commands.config  # noqa: F401 (registers the schemas conf/*.yaml name: train_schema, ...)
from coconut.data.prepare import project_root

OmegaConf.register_new_resolver("coconut.project_root", lambda: str(project_root()), replace=True)
