"""`curriculum.latent_lr_scale`: the learning rate drops once when the curriculum leaves stage 0,
for every method alike, and a resumed run does not drop it twice."""

import os
import signal

import pytest
import torch
from conftest import scalars, tiny_cfg

from coconut.cli.train import train
from coconut.training.lit_module import CoconutLitModule

# 6 batches per epoch, 2 epochs: stage 0 then stage 1 (the first latent stage) from step 6 on.
RUN = [
    "trainer.max_epochs=2",
    "data.sizes.train=48",
    "trainer.limit_train_batches=1.0",
    "callbacks.last_checkpoint.every_n_train_steps=3",
    "callbacks.thought_diagnostics=null",
    "test=false",
]
SCALE = "curriculum.latent_lr_scale=0.3333333"


def final_lrs(folder) -> list[float]:
    saved = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=False)
    return [group["lr"] for state in saved["optimizer_states"] for group in state["param_groups"]]


def losses(folder) -> list[float]:
    return [value for _, value in scalars(folder)["train/loss"]]


@pytest.fixture(scope="module")
def scaled(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scaled") / "run"
    return folder, train(tiny_cfg(folder, *RUN, SCALE))


def test_the_scale_equals_a_step_schedule_at_the_first_latent_epoch(scaled, tmp_path):
    folder, _ = scaled
    lr = tiny_cfg(tmp_path, *RUN).optimizer.lr
    stepped = tmp_path / "stepped"
    train(
        tiny_cfg(
            stepped,
            *RUN,
            "curriculum.latent_lr_scale=1.0",  # the default run (cpu_quickstart) sets 1/3 itself
            "++scheduler._target_=torch.optim.lr_scheduler.MultiStepLR",
            "++scheduler._partial_=true",
            "++scheduler.milestones=[6]",
            "++scheduler.gamma=0.3333333",
        )
    )
    assert losses(folder) == losses(stepped)  # every step, exactly
    assert final_lrs(folder) == pytest.approx([lr * 0.3333333])


def test_a_baseline_gets_the_same_rate_per_update(tmp_path):
    lr = tiny_cfg(tmp_path, *RUN).optimizer.lr
    train(tiny_cfg(tmp_path / "no_cot", *RUN, SCALE, "method=no_cot"))
    assert final_lrs(tmp_path / "no_cot") == pytest.approx([lr * 0.3333333])


def test_a_run_resumed_in_the_first_latent_epoch_drops_the_rate_once(scaled, tmp_path, monkeypatch):
    folder, metrics = scaled
    original = CoconutLitModule.training_step

    def interrupted(self, batch, batch_idx):
        if self.global_step == 8:  # mid-epoch 1, after the drop
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, batch, batch_idx)

    monkeypatch.setattr(CoconutLitModule, "training_step", interrupted)
    with pytest.raises(SystemExit):
        train(tiny_cfg(tmp_path / "run", *RUN, SCALE))
    monkeypatch.setattr(CoconutLitModule, "training_step", original)
    resumed = train(tiny_cfg(tmp_path / "run", *RUN, SCALE))
    assert final_lrs(tmp_path / "run") == final_lrs(folder)
    assert resumed["train/loss"] == pytest.approx(metrics["train/loss"], abs=1e-6)
