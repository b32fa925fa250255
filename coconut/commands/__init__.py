"""The work behind each command, with no argument parsing and no `@hydra.main` (those are cli/'s):

    build.py        config -> tokenizer, model, method, curriculum, data (and the LightningModule)
    load.py         checkpoint (coconut-train's, the official code's, Hugging Face, exported) -> the same
    checks.py       the checks of configs, overrides and checkpoints that run before anything is built
    train.py        `train(cfg)`: coconut-train's run, in named steps
    evaluate.py     `run_evaluation(cfg)`: coconut-eval on one split
    suite.py        `run_suite(cfg)`: one checkpoint on several benchmarks (it runs evaluate.py's)
    stage_curve.py  every stage{k}-best.ckpt of a run: the per-stage curve
    export.py       `export(cfg)`: any checkpoint as a Hugging Face folder
    run_folders.py  the Hydra callback that refuses a folder holding earlier outputs
    config.py       the typed configs: one dataclass per group, registered as Hydra structured configs

`${coconut.project_root:}` (conf/paths/default.yaml) is registered here, before any config is
composed: `$PROJECT_ROOT`, else the project's folder, absolute, so that `paths.data_dir` is the folder
coconut-data writes, whatever the current folder. So are the typed configs (config.py), the
schemas conf/train.yaml, eval.yaml and export.yaml name first in their defaults."""

from omegaconf import OmegaConf

import coconut.commands.config  # noqa: F401 (registers train_schema, eval_schema, export_schema)
from coconut.data.prepare import project_root

OmegaConf.register_new_resolver("coconut.project_root", lambda: str(project_root()), replace=True)
