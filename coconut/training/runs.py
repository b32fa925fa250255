"""Run folders: what a run records about itself (`run.json`), which earlier run the same command
resumes, and the rule that a run never writes over another run's outputs.

`run.json` holds the run's config (resolved, paths left out), its status (`running`, then
`finished`, `interrupted` (SIGTERM, Ctrl-C) or `failed`), the process that runs it, the checkpoint
it resumed from (the final metrics are in `metrics.json`), and at its end `cpu_time`: the
process's CPU seconds and the busy / idle / stolen shares of its cores while it ran
(coconut/training/cpu_time.py). With `resume=auto` a new run looks at the run folders next to its
own (Hydra's `outputs/train/runs/*`, or the jobs of earlier sweeps) for the most recent run with the
same config; if that run did not finish and its process is gone, the new run starts from its
`checkpoints/last.ckpt`, writing into its own folder.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from coconut.core.errors import DISK_FULL, ConfigError, OutputError
from coconut.data.prepare import data_root
from coconut.training.cpu_time import CpuClock, cpu_time_since, describe_cpu_time

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
LAST = Path("checkpoints") / "last.ckpt"
# Keys that say where a run writes or how it was started, not what it trains.
NOT_PART_OF_THE_RUN = ("paths", "ckpt_path", "resume", "resume_search_dir")
RESUMABLE = ("running", "interrupted")
# Classes named by `_target_` in configs that moved when coconut/ was split into layers (0.1 -> 0.2).
# Runs and checkpoints recorded before the move name the old paths; they are read as the new ones.
MOVED_TARGETS = {
    "coconut.callbacks.LastCheckpoint": "coconut.training.callbacks.LastCheckpoint",
    "coconut.diagnostics.ThoughtDiagnostics": "coconut.training.diagnostics.ThoughtDiagnostics",
}
OLD_DATA_ROOT = "./data/"  # paths.data_dir before it was absolute
# Knobs renamed to the official code's names (facebookresearch/coconut); old records, checkpoints and
# command lines that use the old names are read as the new, with a deprecation message.
RENAMED = {
    "curriculum.latents_per_step": "curriculum.c_thought",
    "curriculum.stage_mix_prob": "curriculum.uniform_prob",
}
_warned: set[str] = set()


def deprecated(old: str, new: str) -> None:
    """One deprecation message per old name and process: `old` is read as `new`."""
    if old not in _warned:
        _warned.add(old)
        log.warning("%s is deprecated: read as %s (the official code's name). Use the new name", old, new)


def renamed_knobs(config):
    """`config` (a whole config, as plain containers) with the old names of `RENAMED` knobs read as the
    new ones. An old `latents_per_step` wins over `c_thought` (it was set apart from it, or equal)."""
    curriculum = config.get("curriculum") if isinstance(config, dict) else None
    if not isinstance(curriculum, dict) or not any(k.split(".")[1] in curriculum for k in RENAMED):
        return config
    curriculum = dict(curriculum)
    for old, new in RENAMED.items():
        old_leaf, new_leaf = old.split(".")[1], new.split(".")[1]
        if old_leaf in curriculum:
            value = curriculum.pop(old_leaf)
            deprecated(old, f"{new}={value}")
            curriculum[new_leaf] = value
    return {**config, "curriculum": curriculum}


def comparable(config):
    """`config` without its null values: a key the schema added as null (coconut/commands/config.py)
    reads the same as one an older run did not record."""
    if isinstance(config, dict):
        return {k: comparable(v) for k, v in config.items() if v is not None}
    if isinstance(config, list):
        return [comparable(v) for v in config]
    return config


def upgraded(config):
    """`config` (a recorded run's or a checkpoint's, as plain containers) with renamed knobs read
    under their new names (`renamed_knobs`), moved `_target_`s renamed, and data files recorded
    under the relative `./data/` (the data root was the current folder's `data/`) read as the data
    root's (`coconut.data.prepare.data_root`)."""
    if isinstance(config, str) and config.startswith(OLD_DATA_ROOT):
        return str(data_root() / config.removeprefix(OLD_DATA_ROOT))
    if isinstance(config, dict):
        return {
            k: MOVED_TARGETS.get(v, v) if k == "_target_" and isinstance(v, str) else upgraded(v)
            for k, v in renamed_knobs(config).items()
        }
    if isinstance(config, list):
        return [upgraded(v) for v in config]
    return config


def run_config(cfg: DictConfig) -> dict:
    """The resolved config with every path made relative to the run folder and `paths` dropped,
    so that two runs of the same command compare equal."""
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.paths.output_dir = "<run folder>"
    resolved = OmegaConf.to_container(cfg, resolve=True)
    # How many CPU threads ran it is not what it trains: a run resumes under another count, and runs
    # recorded before the key existed still compare equal. run.json records the count apart.
    (resolved.get("trainer") or {}).pop("cpu_threads", None)
    # The legibility objective off (conf/train.yaml's default) is how every run trained before the
    # key existed: such a run compares equal to one recorded then.
    if resolved.get("legibility") == {"weight": 0.0, "read": "lm_head"}:
        resolved.pop("legibility")
    # Likewise step supervision off.
    if resolved.get("step_supervision") == {"weight": 0.0, "loss_level": None}:
        resolved.pop("step_supervision")
    # Likewise the learning gate off.
    if resolved.get("gate") == {"min_val_acc": None, "extra_epochs": 0, "monitor": "val/acc"}:
        resolved.pop("gate")
    return {k: v for k, v in resolved.items() if k not in NOT_PART_OF_THE_RUN}


def read_run(folder: Path) -> dict | None:
    try:
        return json.loads((folder / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None


def damaged_run(folder: Path) -> str | None:
    """Why `folder`'s run.json cannot be read (cut off mid-write, edited by hand), or None."""
    try:
        record = json.loads((folder / RUN_FILE).read_text())
    except OSError:
        return None
    except ValueError as error:
        return f"not valid JSON: {error}"
    return None if isinstance(record, dict) else f"a JSON {type(record).__name__}, not an object"


def half_written(folder: Path) -> list[str]:
    """The files a write did not finish in a run folder (`*.partial`), relative to it."""
    found = [*folder.glob("*.partial"), *(folder / "checkpoints").glob("*.partial")]
    return sorted(str(p.relative_to(folder)) for p in found)


def write_run(folder: Path, record: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / (RUN_FILE + ".partial")
    partial.write_text(json.dumps(record, indent=1, default=str) + "\n")
    os.replace(partial, folder / RUN_FILE)


def start_run(folder: Path, config: dict, resumed_from: Path | None, cpu_threads: dict | None = None) -> dict:
    record = {
        "status": "running",
        "started": time.time(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "resumed_from": str(resumed_from) if resumed_from else None,
        "cpu_threads": cpu_threads,  # coconut.training.threads.apply_cpu_threads: threads, why, OMP_WAIT_POLICY
        "config": config,
    }
    write_run(folder, record)
    return record


def end_run(folder: Path, record: dict, status: str, cpu_time: dict) -> None:
    write_run(folder, dict(record, status=status, ended=time.time(), cpu_time=cpu_time))


def _alive(record: dict) -> bool:
    """Whether the run's process still runs (on this machine; elsewhere we cannot tell, so yes)."""
    if record.get("host") != socket.gethostname():
        return True
    try:
        pid = int(record["pid"])
        if pid <= 0 or pid == os.getpid():  # this process runs only the new run
            return False
        os.kill(pid, 0)
    except (ProcessLookupError, KeyError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Resumable:
    folder: Path  # the earlier run
    checkpoint: Path  # where the new run starts from


def _checkpoint_run(record: dict) -> Path | None:
    return Path(record["resumed_from"]).resolve().parent.parent if record.get("resumed_from") else None


def find_resumable(search_dirs: list[Path], config: dict) -> Resumable | None:
    """The most recent run under `search_dirs` (their sub-folders and sub-sub-folders) with `config`,
    if it did not finish and nothing runs it. A run that a later run resumed is passed over, and a
    run killed before its first checkpoint resumes from the checkpoint it started from itself."""
    runs: dict[Path, dict] = {}
    damaged: dict[Path, str] = {}
    for root in search_dirs:
        for path in (*root.glob(f"*/{RUN_FILE}"), *root.glob(f"*/*/{RUN_FILE}")):
            record = read_run(path.parent)
            if isinstance(record, dict):
                runs[path.parent.resolve()] = record
            elif damaged_run(path.parent) and (path.parent / LAST).is_file():
                damaged[path.parent.resolve()] = damaged_run(path.parent)
    # A run that resumed from another run's checkpoint takes its place (resuming in place does not count).
    superseded = {_checkpoint_run(r) for folder, r in runs.items() if _checkpoint_run(r) not in (None, folder)}
    config = comparable(config)
    same = [
        (r.get("started", 0), folder, r)
        for folder, r in runs.items()
        if comparable(upgraded(r.get("config"))) == config
    ]
    same = [item for item in same if item[1] not in superseded]
    newest = max((item[0] for item in same), default=0)
    for folder, reason in sorted(damaged.items()):
        if folder not in superseded and (folder / LAST).stat().st_mtime > newest:
            raise ConfigError(
                f"resume=auto: {folder / RUN_FILE} is damaged ({reason}), so it cannot say whether that run had "
                f"this config or finished, and its {folder / LAST} is there. Fix: give ckpt_path={folder / LAST} "
                "to continue that run, resume=false to start afresh, or repair or delete that run.json"
            )
    if not same:
        return None
    _, folder, record = max(same, key=lambda item: item[0])
    if record.get("status") not in RESUMABLE:
        log.info("the last run with this config, %s, is %s: starting a new run", folder, record.get("status"))
        return None
    if record.get("status") == "running" and _alive(record):
        log.info("the last run with this config, %s, is still running: starting a new run", folder)
        return None
    if (folder / LAST).is_file():
        return Resumable(folder, folder / LAST)
    if record.get("resumed_from") and Path(record["resumed_from"]).is_file():
        return Resumable(folder, Path(record["resumed_from"]))
    return None


def holds_a_run(folder: Path) -> bool:
    return (folder / RUN_FILE).exists() or any((folder / "checkpoints").glob("*.ckpt"))


def refuse_to_overwrite(folder: Path) -> ConfigError:
    record = read_run(folder) or {}
    return ConfigError(
        f"paths.output_dir={folder} already holds another run's outputs (status: {record.get('status', 'unknown')}); "
        "a new run never writes over them. Fix: leave paths.output_dir to its default (a new timestamped folder) "
        "or give a new folder; to continue that run, use its own config (it resumes by itself) or "
        f"ckpt_path={folder / LAST}"
    )


def _rank() -> int:
    """This process's global rank, from the launcher's environment (0 when not distributed)."""
    for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def search_dirs(output_dir: Path, configured: str | None) -> list[Path]:
    """Where earlier runs of the same command are: `resume_search_dir`, else the folder holding
    this run's folder (Hydra's runs/), and for a sweep job also the earlier sweeps (multiruns/)."""
    if configured:
        return [Path(configured)]
    dirs = [output_dir.parent]
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            dirs.append(output_dir.parent.parent)
    except ImportError:  # pragma: no cover - hydra is a dependency
        pass
    return dirs


def resume_point(cfg: DictConfig, output_dir: Path, config: dict) -> Path | None:
    """The checkpoint to resume from: `ckpt_path` if given, else with `resume=auto` the last
    checkpoint of an unfinished earlier run of this config, else None. Raises
    ConfigError when `output_dir` holds another run's outputs that this run would write over."""
    explicit = cfg.get("ckpt_path")
    found = None
    if _rank() > 0:
        # Lightning starts the other DDP processes once rank 0 is fitting: they follow its run.json.
        record = read_run(output_dir)
        if record and record.get("status") == "running":
            return Path(record["resumed_from"]) if record.get("resumed_from") else None
    if explicit:
        if not Path(explicit).is_file():
            raise ConfigError(f"ckpt_path={explicit}: no such file. Fix: give a .ckpt written by coconut-train")
        checkpoint = Path(explicit)
    elif cfg.get("resume", "auto") == "auto":
        found = find_resumable(search_dirs(output_dir, cfg.get("resume_search_dir")), config)
        checkpoint = found.checkpoint if found else None
    else:
        checkpoint = None
    if holds_a_run(output_dir) and _rank() == 0:
        continuing = checkpoint is not None and checkpoint.resolve().parent.parent == output_dir.resolve()
        if not continuing:
            raise refuse_to_overwrite(output_dir)
    if found:
        log.info(
            "resuming the unfinished run %s from %s (same config; resume=false starts a new run instead)",
            found.folder,
            checkpoint,
        )
        if half_written(found.folder):
            log.warning(
                "%s holds half-written files, from a write that did not finish (%s): they are not used, "
                "and can be deleted",
                found.folder,
                ", ".join(half_written(found.folder)),
            )
    return checkpoint


def _disk_full(error: BaseException | None) -> OSError | None:
    """The error (or one it was raised from) that says the disk is full, or None."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in DISK_FULL:
            return error
        error = error.__cause__ or error.__context__
    return None


def _disk_full_error(folder: Path, error: OSError, removed: list[str], recorded: bool) -> OutputError:
    last = folder / LAST
    resume = f"resume=auto continues from {last}" if last.is_file() else "it starts afresh: no checkpoint was complete"
    return OutputError(
        f"no space left on the device holding {folder} ({error.strerror or error}, writing "
        f"{Path(error.filename2 or error.filename or '?').name}): the run stopped"
        + (f"; its half-written files were removed ({', '.join(removed)})" if removed else "")
        + ("; run.json says interrupted" if recorded else "; run.json could not be updated (it still says running)")
        + f". Fix: free space there (or write elsewhere: hydra.run.dir=<folder>), then run the same command "
        f"again ({resume})"
    )


@contextmanager
def recorded(
    folder: Path, config: dict, resumed_from: Path | None, enabled: bool = True, cpu_threads: dict | None = None
):
    """`run.json` says `running` inside the block, then `finished`, `interrupted` (SIGTERM, Ctrl-C:
    Lightning turns both into SystemExit; a full disk) or `failed`. A full disk is one OutputError,
    raised after the half-written `*.partial` files are removed (which frees the space to record it).
    The block may name another ending for a run that ran to its end: `outcome["status"] = ...` (the
    learning gate's `not_learnt`)."""
    outcome: dict[str, str] = {}
    if not enabled:
        yield outcome
        return
    clock = CpuClock.read()
    record = start_run(folder, config, resumed_from, cpu_threads)
    status, full = "failed", None
    try:
        yield outcome
        status = outcome.get("status", "finished")
    except SystemExit:
        status = "interrupted"
        raise
    except OSError as error:
        full = _disk_full(error)
        if full is None:
            raise
        status, record["stopped_by"] = "interrupted", f"no space left on the device ({full.strerror})"
    finally:
        removed = half_written(folder) if full is not None else []
        for name in removed:
            (folder / name).unlink(missing_ok=True)
        cpu_time = cpu_time_since(clock)
        written = True
        try:
            end_run(folder, record, status, cpu_time)
        except OSError as error:
            (folder / (RUN_FILE + ".partial")).unlink(missing_ok=True)
            if _disk_full(error) is None:
                raise
            full, written = full or _disk_full(error), False
        minutes = (time.time() - record["started"]) / 60
        log.info("run %s after %.1f min (%s)", status, minutes, describe_cpu_time(cpu_time))
    if full is not None:
        raise _disk_full_error(folder, full, removed, written) from None
