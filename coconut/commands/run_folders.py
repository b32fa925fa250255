"""Refuse a run folder that holds an earlier run's or evaluation's outputs before Hydra writes into it.

Hydra's job start creates the folder, rewrites `.hydra/{config,hydra,overrides}.yaml` and appends
to `<job>.log` before the task function runs, so a check inside `train()` comes too late to keep an
earlier run's record of how it was trained. This Hydra callback (conf/hydra/default.yaml) runs
first: `hydra.run.dir=<a finished run>` (or, for `-m`, a `hydra.sweep.dir` whose jobs hold outputs)
stops with one message and exit code 2, and nothing in that folder changes. The only folder a
training run may reuse is the unfinished run it continues (`ckpt_path=<that folder>/checkpoints/...`,
or `resume=auto` with the same config), as `coconut.training.runs.resume_point` allows.

A folder that holds no run but files of the names the command writes (a user's own `metrics.json`
or `train.log`) is refused the same way, and so is a folder that cannot be written (read-only, not a
folder): one message before Hydra's own OSError.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from coconut.core.errors import OutputError, writable_folder
from coconut.training.runs import RESUMABLE, _alive, _rank, comparable, holds_a_run, read_run, run_config, upgraded

EVALUATION_FILES = ("report.json", "samples.jsonl")
# What each command writes into its folder besides Hydra's `.hydra/` and `<job>.log`.
WRITES = {
    "train": ("run.json", "metrics.json", "checkpoints", "tokenizer", "tensorboard"),
    "eval": (*EVALUATION_FILES, "report.md", "tensorboard", "summary.md", "summary.csv", "summary.json", "curve.json"),
}


def holds_an_evaluation(folder: Path) -> bool:
    return any((folder / name).exists() for name in EVALUATION_FILES)


def _task_config(config: DictConfig) -> DictConfig:
    task = config.copy()
    with open_dict(task):
        task.pop("hydra", None)
    return task


def continues_in_place(config: DictConfig, folder: Path) -> bool:
    """Whether `coconut-train` with `config` would resume the unfinished run in `folder` there."""
    record = read_run(folder)
    if config.get("ckpt_path"):
        return Path(config.ckpt_path).resolve().parent.parent == folder.resolve()
    if config.get("resume", "auto") != "auto" or not record or record.get("status") not in RESUMABLE:
        return False
    if record.get("status") == "running" and _alive(record):
        return False
    try:
        return comparable(upgraded(record.get("config"))) == comparable(run_config(_task_config(config)))
    except Exception:  # noqa: BLE001 (a config that does not resolve here is judged by train() later)
        return False


def earlier_outputs(config: DictConfig, folder: Path) -> str | None:
    """What in `folder` a `task_name` job would write over, or None."""
    if holds_an_evaluation(folder):
        return f"an evaluation ({', '.join(n for n in EVALUATION_FILES if (folder / n).exists())})"
    if holds_a_run(folder) and not (config.get("task_name") == "train" and continues_in_place(config, folder)):
        status = (read_run(folder) or {}).get("status", "unknown")
        return f"a training run (status: {status})"
    if not holds_a_run(folder):
        # A `<job>.log` beside `.hydra/` is Hydra's own, from an attempt that stopped before writing
        # anything else (a config error): the same command may go on appending to it.
        job = OmegaConf.select(config, "hydra.job.name", default=None)
        log_file = () if (folder / ".hydra").is_dir() else (f"{job}.log",)
        found = sorted(n for n in (*log_file, *WRITES.get(config.get("task_name"), ())) if (folder / n).exists())
        if found:
            return f"files of the names this command writes ({', '.join(found)})"
    return None


def _command(config: DictConfig) -> str:
    return f"coconut-{config.get('task_name') or 'train'}"


def _refuse(config: DictConfig, key: str, folder: Path, what: str) -> None:
    evaluating = config.get("task_name") == "eval"
    noun = {"eval": "an evaluation", "train": "a training run"}.get(config.get("task_name"), "a command")
    status = (read_run(folder) or {}).get("status")
    print(
        f"{_command(config)}: {key}={folder} already holds {what}; {noun} never writes over files it did not "
        f"write, and nothing there was changed. Fix: leave {key} to its default (a new timestamped folder) or give "
        "a new or empty one"
        + (
            f"; to continue that unfinished run, give ckpt_path={folder / 'checkpoints' / 'last.ckpt'}"
            if not evaluating and status in RESUMABLE
            else ""
        ),
        file=sys.stderr,
    )
    sys.exit(2)


def _require_writable(config: DictConfig, key: str, folder: Path) -> None:
    try:
        writable_folder(folder, f"{key}={folder}")
    except OutputError as error:
        print(f"{_command(config)}: {error}", file=sys.stderr)
        sys.exit(2)


class RefuseEarlierOutputs(Callback):
    """Hydra callback: stops a run or sweep whose folder holds earlier outputs or cannot be written,
    before Hydra writes."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if _rank() > 0:  # a DDP process Lightning starts into rank 0's folder (with hydra.output_subdir=null)
            return
        folder = Path(str(OmegaConf.select(config, "hydra.run.dir")))
        what = earlier_outputs(config, folder) if folder.is_dir() else None
        if what:
            _refuse(config, "hydra.run.dir", folder, what)
        _require_writable(config, "hydra.run.dir", folder)
        paths = config.get("paths")
        if paths is not None and "output_dir" in paths and not OmegaConf.is_interpolation(paths, "output_dir"):
            _require_writable(config, "paths.output_dir", Path(str(paths.output_dir)))  # set apart from Hydra's

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
        if _rank() > 0:
            return
        if sweep.is_dir():
            for job in sorted(p for p in sweep.iterdir() if p.is_dir()):
                if holds_an_evaluation(job) or holds_a_run(job):
                    _refuse(config, "hydra.sweep.dir", sweep, f"earlier jobs' outputs (in {job.name}/)")
        _require_writable(config, "hydra.sweep.dir", sweep)
