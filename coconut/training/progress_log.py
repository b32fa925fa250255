"""What a run says through Python logging, so that it reaches the console and the run's `train.log`
(Hydra's handlers) when nobody watches a progress bar: under nohup, SLURM or CI a run would
otherwise print one line per epoch and leave `train.log` nearly empty.

- `train/loss` (and the learning rate, seconds per step) every `trainer.log_every_n_steps`
  optimizer steps, when stdout is not a terminal (in a terminal the progress bar shows it);
- every validation's metrics, and the test metrics, always;
- Lightning's own messages (the curriculum stage per epoch, the best `val/acc` per stage at the end)
  are routed to the same handlers by `lightning_logs_to_root`.
"""

from __future__ import annotations

import logging
import sys
import time

import lightning as L

log = logging.getLogger(__name__)


def lightning_logs_to_root() -> None:
    """Lightning gives its logger its own stderr handler and stops propagation when it is imported
    before logging is configured (as under Hydra); once the root logger has handlers (Hydra's console
    and `<job>.log` file), send Lightning's messages there instead."""
    if not logging.getLogger().handlers:
        return
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True


def _format(metrics: dict, prefix: str) -> str:
    items = sorted((k, float(v)) for k, v in metrics.items() if k.startswith(prefix))
    return " ".join(f"{k}={v:.4g}" for k, v in items)


class LogMetrics(L.Callback):
    """Training loss every `log_every_n_steps` (when stdout is not a terminal), validation and test
    metrics always, as log lines (rank 0 only)."""

    def __init__(self, steps_when_interactive: bool = False):
        self.steps = steps_when_interactive or not sys.stdout.isatty()
        self._last_step, self._last_time = 0, time.monotonic()  # for seconds per step
        self._logged_step = -1  # with gradient accumulation several batches end on one step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        step, every = trainer.global_step, max(trainer.log_every_n_steps, 1)
        if not self.steps or not trainer.is_global_zero or step == 0 or step % every or step == self._logged_step:
            return
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        now = time.monotonic()
        per_step = (now - self._last_time) / (step - self._last_step) if step > self._last_step else None
        self._last_step, self._last_time, self._logged_step = step, now, step
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None
        log.info(
            "epoch %d batch %d step %d: train/loss=%.4f%s%s",
            trainer.current_epoch,
            batch_idx + 1,
            step,
            float(loss),
            f" lr={lr:.3g}" if lr is not None else "",
            f" ({per_step:.2f} s/step)" if per_step is not None else "",
        )

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Validation and checkpoints between epochs do not count as step time.
        self._last_step, self._last_time = trainer.global_step, time.monotonic()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        line = _format(trainer.callback_metrics, "val/")
        if line:
            log.info("epoch %d step %d validation: %s", trainer.current_epoch, trainer.global_step, line)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            log.info("test: %s", _format(trainer.callback_metrics, "test/"))
