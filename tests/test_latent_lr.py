"""The learning-rate schedule: `curriculum.latent_lr_scale` drops the rate once when the curriculum
leaves stage 0, for every method alike, and a resumed run does not drop it twice; a scheduler
stepped per epoch (`scheduler_interval=epoch`, the quickstart's last-epochs decay) counts epochs."""

import os
import signal

import pytest
import torch
from conftest import scalars, tiny_cfg
from hydra import compose, initialize_config_dir

from coconut import CONFIG_DIR
from coconut.commands.train import train
from coconut.core.errors import ConfigError
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
NO_SCHEDULER = "scheduler=null"  # the default run (cpu_quickstart) decays its last epochs
MULTISTEP = ["++scheduler._target_=torch.optim.lr_scheduler.MultiStepLR", "++scheduler._partial_=true"]


def final_lrs(folder) -> list[float]:
    saved = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=False)
    return [group["lr"] for state in saved["optimizer_states"] for group in state["param_groups"]]


def losses(folder) -> list[float]:
    return [value for _, value in scalars(folder)["train/loss"]]


@pytest.fixture(scope="module")
def scaled(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scaled") / "run"
    return folder, train(tiny_cfg(folder, *RUN, SCALE, NO_SCHEDULER))


def test_the_scale_equals_a_step_schedule_at_the_first_latent_epoch(scaled, tmp_path):
    folder, _ = scaled
    lr = tiny_cfg(tmp_path, *RUN).optimizer.lr
    stepped = tmp_path / "stepped"
    train(
        tiny_cfg(
            stepped,
            *RUN,
            "curriculum.latent_lr_scale=1.0",  # the default run (cpu_quickstart) sets 1/3 itself
            *MULTISTEP,
            "scheduler_interval=step",
            "++scheduler.milestones=[6]",
            "++scheduler.gamma=0.3333333",
        )
    )
    assert losses(folder) == losses(stepped)  # every step, exactly
    assert final_lrs(folder) == pytest.approx([lr * 0.3333333])


def test_a_baseline_gets_the_same_rate_per_update(tmp_path):
    lr = tiny_cfg(tmp_path, *RUN).optimizer.lr
    train(tiny_cfg(tmp_path / "no_cot", *RUN, SCALE, NO_SCHEDULER, "method=no_cot"))
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
        train(tiny_cfg(tmp_path / "run", *RUN, SCALE, NO_SCHEDULER))
    monkeypatch.setattr(CoconutLitModule, "training_step", original)
    resumed = train(tiny_cfg(tmp_path / "run", *RUN, SCALE, NO_SCHEDULER))
    assert final_lrs(tmp_path / "run") == final_lrs(folder)
    assert resumed["train/loss"] == pytest.approx(metrics["train/loss"], abs=1e-6)


def test_an_epoch_milestone_trains_like_the_step_milestone_at_that_epochs_first_update(scaled, tmp_path):
    # Epoch 1 starts at update 6 here; both milestones come on top of the latent stage's drop.
    folder, _ = scaled
    lr = tiny_cfg(tmp_path, *RUN).optimizer.lr
    milestones = {"epoch": 1, "step": 6}
    for interval, milestone in milestones.items():
        train(
            tiny_cfg(
                tmp_path / interval,
                *RUN,
                SCALE,
                *MULTISTEP,
                f"scheduler_interval={interval}",
                f"++scheduler.milestones=[{milestone}]",
                "++scheduler.gamma=0.5",
            )
        )
    assert losses(tmp_path / "epoch") == losses(tmp_path / "step")  # every update, exactly
    assert losses(tmp_path / "epoch")[:6] == losses(folder)[:6]  # the same rate before the milestone
    assert final_lrs(tmp_path / "epoch") == pytest.approx([lr * 0.3333333 * 0.5])


def test_a_scheduler_interval_other_than_step_or_epoch_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="scheduler_interval must be one of step, epoch, got 'batch'"):
        train(tiny_cfg(tmp_path, *RUN, "scheduler_interval=batch"))


def test_the_default_run_trains_at_3e_3_then_1e_3_then_3e_4_for_its_last_four_epochs(tmp_path):
    # The quickstart's own schedule (no debug=fast, which shortens it), one update per epoch.
    tiny = [
        "data.sizes={train: 16, val: 8, test: 8}",
        "data.batch_size=16",
        "data.eval_batch_size=8",
        "data.val_generation_size=8",
        "data.max_new_tokens=8",
        "model.architecture.n_layer=1",
        "model.architecture.n_embd=32",
        "model.architecture.n_head=2",
        "model.tokenizer_vocab_size=300",
        "++trainer.limit_val_batches=1",
        "trainer.log_every_n_steps=1",
        "callbacks.thought_diagnostics=null",
        "test=false",
        f"paths.output_dir={tmp_path}",
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        train(compose(config_name="train", overrides=tiny))
    rates = [value for _, value in scalars(tmp_path)["lr-AdamW"]]
    assert rates == pytest.approx([3e-3] * 6 + [1e-3] * 14 + [3e-4] * 4)
