"""Curriculum-aware callbacks: stage bookkeeping, optimizer reset, per-stage best checkpoints."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

from coconut.curriculum import Curriculum
from coconut.errors import ConfigError
from coconut.methods import Method

log = logging.getLogger(__name__)


class CurriculumCallback(L.Callback):
    """Logs `curriculum/stage` and resets the optimizer state when the stage changes.

    The stage comes from the same pure function the datamodule asks, so a resumed run agrees with
    the data it sees. Resetting at a stage change (not every epoch) is configurable; the official
    code resets every epoch when `reset_optimizer` is on: use reset_optimizer=every_epoch for that.
    """

    def __init__(self, curriculum: Curriculum, method: Method, reset_optimizer: str = "stage_change"):
        if reset_optimizer not in ("never", "stage_change", "every_epoch"):
            raise ConfigError(
                f"curriculum.reset_optimizer must be never, stage_change or every_epoch, got {reset_optimizer!r}"
            )
        self.curriculum, self.method, self.reset_optimizer = curriculum, method, reset_optimizer

    def stage(self, epoch: int) -> int:
        return self.method.stage_at_epoch(self.curriculum, epoch)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        stage = self.stage(epoch)
        changed = epoch > 0 and stage != self.stage(epoch - 1)
        if (self.reset_optimizer == "stage_change" and changed) or (
            self.reset_optimizer == "every_epoch" and epoch > 0
        ):
            for optimizer in trainer.optimizers:
                optimizer.state.clear()  # Adam moments and step counts; the learning rate schedule goes on
        if epoch == 0 or changed:
            rank_zero_info(
                f"epoch {epoch}: curriculum stage {stage}"
                + (" (optimizer reset)" if changed and self.reset_optimizer != "never" else "")
            )
        pl_module.log("curriculum/stage", float(stage), on_step=False, on_epoch=True)


class StageBestCheckpoint(L.Callback):
    """Keeps `stage{k}-best.ckpt`, the checkpoint with the best `monitor` within each stage, and
    prints the per-stage summary at the end of training.

    Files are written to a temporary name and renamed, so a crash never leaves a half-written
    checkpoint in place of a good one.
    """

    def __init__(self, dirpath: str, curriculum: Curriculum, method: Method, monitor: str = "val/acc"):
        self.dirpath, self.monitor = Path(dirpath), monitor
        self.curriculum, self.method = curriculum, method
        self.best: dict[int, dict] = {}  # stage -> {"score", "epoch", "path"}

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        score = float(trainer.callback_metrics[self.monitor])
        stage = self.method.stage_at_epoch(self.curriculum, trainer.current_epoch)
        rank_zero_info(f"epoch {trainer.current_epoch} stage {stage}: {self.monitor}={score:.4f}")
        best = self.best.get(stage)
        if best is not None and score <= best["score"]:
            return
        path = self.dirpath / f"stage{stage}-best.ckpt"
        self.best[stage] = {"score": score, "epoch": trainer.current_epoch, "path": str(path)}
        save_atomically(trainer, path)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.best:
            return
        lines = [f"best {self.monitor} per stage:"]
        lines += [
            f"  stage {s}: {b['score']:.4f} (epoch {b['epoch']})  {b['path']}" for s, b in sorted(self.best.items())
        ]
        rank_zero_info("\n".join(lines))

    def state_dict(self) -> dict:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best = {int(k): v for k, v in state_dict["best"].items()}


def save_atomically(trainer: L.Trainer, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    trainer.save_checkpoint(partial)
    if trainer.is_global_zero:
        os.replace(partial, path)
    trainer.strategy.barrier()
