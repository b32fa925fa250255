"""Curriculum-aware callbacks: stage bookkeeping, optimizer reset, per-stage best checkpoints, and
`last.ckpt` for resuming (atomic, every N steps, at every epoch end and on SIGTERM)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from coconut.core.curriculum import Curriculum
from coconut.core.errors import ConfigError
from coconut.core.methods import Method
from coconut.training.health import check_finite_weights

log = logging.getLogger(__name__)


class CurriculumCallback(L.Callback):
    """Logs `curriculum/stage`, resets the optimizer state when the stage changes, and scales the
    learning rate by `latent_lr_scale` when the curriculum leaves stage 0.

    The stage comes from the same pure function the datamodule asks, so a resumed run agrees with
    the data it sees. Resetting at a stage change (not every epoch) is configurable; the official
    code resets every epoch when `reset_optimizer` is on: use reset_optimizer=every_epoch for that.

    The learning-rate step follows the curriculum's schedule (`Curriculum.stage_for_epoch`), not the
    method's stage, so a baseline trained with the same curriculum settings (method=no_cot, cot, ...)
    gets the same learning rate at every update. It multiplies the rate once, at the first latent
    epoch; the optimizer's state carries it from there, through a resume too.
    """

    def __init__(
        self,
        curriculum: Curriculum,
        method: Method,
        reset_optimizer: str = "stage_change",
        latent_lr_scale: float = 1.0,
    ):
        # reset_optimizer and latent_lr_scale are checked with the config (coconut/commands/config.py).
        self.curriculum, self.method, self.reset_optimizer = curriculum, method, reset_optimizer
        self.latent_lr_scale = latent_lr_scale
        self.trained_epoch: int | None = None  # the epoch of the last batch this process trained

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
        if self.latent_lr_scale != 1.0 and self.curriculum.stage_for_epoch(epoch) > 0:
            self.scale_learning_rate(trainer, epoch)
        if epoch == 0 or changed:
            rank_zero_info(
                f"epoch {epoch}: curriculum stage {stage}"
                + (" (optimizer reset)" if changed and self.reset_optimizer != "never" else "")
            )

    def scale_learning_rate(self, trainer: L.Trainer, epoch: int) -> None:
        # Once per parameter group: the mark is saved with the optimizer's state, so an epoch start
        # replayed by a resume does not scale the rate twice.
        scaled = False
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                if not group.get("latent_lr_scaled", False):
                    group["lr"] = group["lr"] * self.latent_lr_scale
                    group["latent_lr_scaled"] = True
                    scaled = True
        if scaled:
            rank_zero_info(f"epoch {epoch}: learning rate x {self.latent_lr_scale:g} from the first latent stage on")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        self.trained_epoch = trainer.current_epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Here, not at epoch start: an epoch resumed mid-way does not call on_train_epoch_start. An
        # epoch resumed from its end-of-epoch checkpoint trains no batch and is not logged twice.
        if self.trained_epoch == trainer.current_epoch:
            pl_module.log("curriculum/stage", float(self.stage(trainer.current_epoch)), on_step=False, on_epoch=True)


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


class LastCheckpoint(ModelCheckpoint):
    """`last.ckpt`, the checkpoint a run resumes from: written after every validation (or at the
    end of a training epoch without one), every `every_n_train_steps` optimizer steps (so that a
    SIGKILL loses at most that many), and when SIGTERM stops the run.

    Lightning's ModelCheckpoint writes in place, so a kill during the write would leave a truncated
    last.ckpt; this one writes `last.ckpt.partial` and renames it. A checkpoint mid-way through an
    epoch resumes at the next batch: the training loader's position is saved with it
    (`coconut.data.epoch_loader`). SIGTERM arriving during validation saves nothing (the loop is
    mid-way through its metrics); the previous last.ckpt stays.
    """

    def __init__(self, dirpath: str, every_n_train_steps: int | None = None):
        if every_n_train_steps is not None and every_n_train_steps < 1:
            raise ConfigError(
                f"callbacks.last_checkpoint.every_n_train_steps must be >= 1 or null, got {every_n_train_steps}"
            )
        # A numbered last-v1.ckpt would hide the file a resume looks for.
        super().__init__(dirpath=dirpath, save_last=True, save_top_k=0, enable_version_counter=False)
        self.every = every_n_train_steps

    def _fitting(self, trainer: L.Trainer) -> bool:
        return trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking and not trainer.fast_dev_run

    def _save_last(self, trainer: L.Trainer) -> None:
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if self.every and self._fitting(trainer) and trainer.global_step % self.every == 0:
            if self._last_global_step_saved != trainer.global_step:
                self._save_last(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Always, even if this step was just saved: now the file holds the validation results.
        if self._fitting(trainer):
            self._save_last(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Validation (when it runs) ends before this hook; this covers epochs without one.
        if self._fitting(trainer) and self._last_global_step_saved != trainer.global_step:
            self._save_last(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # Lightning raises SIGTERMException between two batches, so the state is consistent.
        if isinstance(exception, SIGTERMException) and self._fitting(trainer) and not trainer.validating:
            if self._last_global_step_saved != trainer.global_step:
                self._save_last(trainer)
            rank_zero_info(f"SIGTERM: saved {self.last_model_path} at global step {trainer.global_step}")

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        save_atomically(trainer, Path(filepath), self.save_weights_only)
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(self)


def save_atomically(trainer: L.Trainer, path: Path, weights_only: bool = False) -> None:
    """Writes `path.partial`, flushes it to disk, then renames it over `path`: a crash at any point
    leaves either the old file or the new one. Refuses to save non-finite weights."""
    check_finite_weights(trainer)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    trainer.save_checkpoint(partial, weights_only)
    if trainer.is_global_zero:
        with open(partial, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(partial, path)
    trainer.strategy.barrier()
