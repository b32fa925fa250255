"""`coconut-train`: the Hydra entry point. The run itself is coconut.commands.train.train(cfg), a
plain function tests call directly; this shell composes the config and turns the user's errors
into one line and an exit code.

coconut-train                                    # CPU quickstart on the built-in arithmetic data
coconut-train experiment=<name> key=value ...    # any configuration
coconut-train -m curriculum.c_thought=1,2 seed=0,1,2   # a sweep, one output folder per run
"""

from __future__ import annotations

import errno
import logging
import signal
import sys
from pathlib import Path

import hydra
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from coconut import CONFIG_DIR
from coconut.commands.checks import checked_command
from coconut.commands.train import train
from coconut.core.errors import DISK_FULL, UserInputError
from coconut.training.progress_log import lightning_logs_to_root

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def run(cfg: DictConfig) -> float | None:
    lightning_logs_to_root()  # Lightning's messages into Hydra's console and train.log
    try:
        metrics = train(cfg)
    except UserInputError as error:
        # The user's input is wrong: say what and how to fix it, without a traceback.
        log.error("%s", error)
        sys.exit(2)
    except OSError as error:  # the run's folder, outside the training loop (tokenizer/, metrics.json)
        if error.errno not in (*DISK_FULL, errno.EACCES, errno.EROFS, errno.EPERM):
            raise
        log.error(
            "could not write %s (%s). Fix: free space there, or give a folder you can write to (hydra.run.dir=...)",
            error.filename or cfg.paths.output_dir,
            error.strerror,
        )
        sys.exit(2)
    except SIGTERMException:
        last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        log.error("stopped by SIGTERM; %s holds the run so far: run the same command again to resume", last)
        sys.exit(128 + signal.SIGTERM)  # what a shell reports for a process ended by SIGTERM
    # A sweeper (hparams_search=...) optimises the value returned here.
    name = cfg.get("optimized_metric")
    if name and name not in metrics:
        log.error("optimized_metric=%s was not logged; logged: %s", name, ", ".join(sorted(metrics)))
        sys.exit(2)
    return metrics[name] if name else None


def main() -> float | None:
    """The `coconut-train` command: a config group choice that does not exist (`method=xyz`) gets
    one line listing the valid ones, before Hydra composes anything."""
    return checked_command("coconut-train", run, CONFIG_DIR)


if __name__ == "__main__":
    main()
