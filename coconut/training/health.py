"""Numerical health of a training run: a NaN or infinite loss stops it with a message naming the
step, epoch, batch and curriculum stage, and no checkpoint is ever written from non-finite
weights, so the last good `last.ckpt` and `stage{k}-best.ckpt` survive. On a GPU, training keeps
off the one attention kernel seen to return NaN gradients.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import lightning as L
import torch

from coconut.core.errors import UserInputError

log = logging.getLogger(__name__)


class NonFiniteLossError(UserInputError, FloatingPointError):
    """Training diverged. A user error in the sense that the fix is in the configuration (the
    learning rate, clipping, the data), so `coconut-train` prints it in one line and exits 2."""


FIX = (
    "Fix: lower optimizer.lr, keep trainer.gradient_clip_val set (1.0 by default), or check the batch's data; "
    "resume from the last good checkpoint with ckpt_path=<it>"
)


def where(trainer: L.Trainer) -> str:
    """`step 12 (epoch 1, batch 4, curriculum stage 1)` for the batch just trained: the step is the
    x-axis of train/loss in TensorBoard (the optimizer steps before this batch's)."""
    loop = trainer.fit_loop.epoch_loop
    datamodule = getattr(trainer, "datamodule", None)
    stage = datamodule.current_stage() if hasattr(datamodule, "current_stage") else "?"
    # Lightning logs a batch's metrics at _batches_that_stepped, which it advances only after the hooks.
    step = getattr(loop, "_batches_that_stepped", trainer.global_step)
    batch = loop.batch_progress.current.ready - 1
    return f"step {step} (epoch {trainer.current_epoch}, batch {batch}, curriculum stage {stage})"


def last_good_checkpoint(trainer: L.Trainer) -> str:
    path = getattr(trainer.checkpoint_callback, "last_model_path", "") if trainer.checkpoint_callback else ""
    return f"the last good checkpoint is {path}" if path else "no checkpoint had been written yet"


def non_finite_parameters(module: torch.nn.Module) -> list[str]:
    return [name for name, p in module.named_parameters() if not torch.isfinite(p).all()]


def check_finite_weights(trainer: L.Trainer) -> None:
    """Raises NonFiniteLossError instead of letting a checkpoint of NaN/inf weights replace a good one."""
    bad = non_finite_parameters(trainer.lightning_module)
    if bad:
        raise NonFiniteLossError(
            f"the weights became non-finite ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}) by "
            f"{where(trainer)}; the run stopped without saving them and {last_good_checkpoint(trainer)}. {FIX}"
        )


class StopOnNonFiniteLoss(L.Callback):
    """Checks `train/loss` after every step. Runs before the checkpoint callbacks (Lightning calls
    ModelCheckpoint subclasses last), so a diverged step never reaches `last.ckpt`."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor) and not torch.isfinite(loss).all():
            raise NonFiniteLossError(
                f"train/loss is {loss.item()} at {where(trainer)}; the run stopped and "
                f"{last_good_checkpoint(trainer)}. {FIX}"
            )


def avoid_cudnn_attention(device: torch.device) -> None:
    """Turns off cuDNN's fused attention for a training run on CUDA. Its backward returned NaN
    gradients ~20 steps into stage 1 of the quickstart under bf16-mixed (torch 2.11, H200, anomaly
    detection: ScaledDotProductCudnnAttentionBackward0); with it off, the same bf16 steps trained
    normally (docs/results.md, "On a GPU"). cuDNN's kernel serves only half precision, so fp32 runs
    are unaffected either way."""
    if device.type == "cuda" and torch.backends.cuda.cudnn_sdp_enabled():
        torch.backends.cuda.enable_cudnn_sdp(False)
        log.info("cuDNN attention off for training: its backward returned NaN in bf16 COCONUT runs (health.py)")
