"""The learning gate: a run whose checkpoint other runs continue (a stage-0 preset) must have learnt
before it hands that checkpoint on.

With `gate.min_val_acc` set, the best `val/acc` (or the `gate.monitor` metric) of the run's last
curriculum stage is checked when its last epoch ends. Below the bar, the run trains on, one epoch at
a time, for at most `gate.extra_epochs` more; still below, it stops with `StageNotLearnt` (one
message, exit code 2), its `run.json` says `not_learnt`, and `init_from=` refuses its checkpoints. A stage-0 run whose
induction head has not formed (val/acc at chance, 0.5 on two-candidate graph questions) therefore
never starts 25 minutes of latent training from a checkpoint that knows nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

from coconut.core.curriculum import Curriculum
from coconut.core.errors import ConfigError, UserInputError
from coconut.core.methods import Method

log = logging.getLogger(__name__)

NOT_LEARNT = "not_learnt"  # run.json's status for a run the gate stopped


class StageNotLearnt(UserInputError):
    """The gate's bar was not reached within its budget (the fix is in the recipe or the seed)."""


@dataclass(frozen=True)
class GateConfig:
    min_val_acc: float | None = None  # null: no gate
    extra_epochs: int = 0  # epochs the last stage may train on below the bar
    # What is held to the bar: val/acc, or another validation metric in [0, 1] (a chain of thought on
    # graphs that cannot plan answers near chance yet writes valid hops: val/legibility/text_hops_valid).
    monitor: str = "val/acc"

    def __post_init__(self):
        if self.min_val_acc is not None and not 0 < self.min_val_acc <= 1:
            raise ConfigError(f"gate.min_val_acc must be in (0, 1] or null, got {self.min_val_acc}")
        if self.extra_epochs < 0:
            raise ConfigError(f"gate.extra_epochs must be >= 0, got {self.extra_epochs}")


class LearningGate(L.Callback):
    """Extends the run while its last stage is below `min_val_acc` (at most `extra_epochs` epochs),
    then passes or fails it; `train()` raises `StageNotLearnt` on a failed gate (`failure`)."""

    def __init__(self, config: GateConfig, curriculum: Curriculum, method: Method):
        self.config, self.curriculum, self.method, self.monitor = config, curriculum, method, config.monitor
        self.best: dict[int, float] = {}  # stage -> best score
        self.granted = 0  # extra epochs given so far
        self.failure: str | None = None

    def stage(self, epoch: int) -> int:
        return self.method.stage_at_epoch(self.curriculum, epoch)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        stage = self.stage(trainer.current_epoch)
        score = float(trainer.callback_metrics[self.monitor])
        self.best[stage] = max(score, self.best.get(stage, score))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A resumed run keeps the extra epochs the gate had given it.
        if self.granted:
            trainer.fit_loop.max_epochs += self.granted

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        bar = self.config.min_val_acc
        if bar is None or trainer.current_epoch < trainer.fit_loop.max_epochs - 1:
            return
        stage = self.stage(trainer.current_epoch)
        best = self.best.get(stage)
        if best is not None and best >= bar:
            rank_zero_info(f"gate: stage {stage} reached {self.monitor}={best:.4f} >= {bar:g}")
            return
        shown = "never measured" if best is None else f"{best:.4f}"
        # Training on must stay in this stage (a stage-0 run, or the final stage of a curriculum).
        if self.granted < self.config.extra_epochs and self.stage(trainer.current_epoch + 1) == stage:
            self.granted += 1
            trainer.fit_loop.max_epochs += 1
            log.warning(
                "gate: stage %d ended at best %s=%s, below gate.min_val_acc=%g: training on for extra epoch %d of %d",
                stage,
                self.monitor,
                shown,
                bar,
                self.granted,
                self.config.extra_epochs,
            )
            return
        self.failure = (
            f"stage {stage} did not learn: its best {self.monitor} is {shown}, below gate.min_val_acc={bar:g}, "
            f"after {self.granted} extra epoch(s) (gate.extra_epochs={self.config.extra_epochs}). Its checkpoints "
            f"are not handed on (init_from refuses them). Fix: another seed, more extra epochs "
            f"(gate.extra_epochs=N), or the recipe of docs/results.md for this preset"
        )
        trainer.should_stop = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A run resumed after its last epoch had ended (killed before the decision) decides here.
        bar, stage = self.config.min_val_acc, self.stage(trainer.current_epoch)
        if bar is not None and self.failure is None and self.best.get(stage, 0.0) < bar:
            self.granted = self.config.extra_epochs
            self.on_train_epoch_end(trainer, pl_module)

    def summary(self) -> dict:
        """metrics.json's record of the gate."""
        return {
            "monitor": self.monitor,
            "min_val_acc": self.config.min_val_acc,
            "extra_epochs_used": self.granted,
            "passed": self.failure is None,
        }

    def state_dict(self) -> dict:
        return {"best": self.best, "granted": self.granted}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best = {int(k): v for k, v in state_dict.get("best", {}).items()}
        self.granted = int(state_dict.get("granted", 0))
