"""The learning gate (coconut/training/gate.py): a run below gate.min_val_acc trains on for at most
gate.extra_epochs, then stops with one message, and init_from refuses what it wrote."""

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from conftest import tiny_cfg

from coconut.commands.train import train
from coconut.core.curriculum import Curriculum
from coconut.core.errors import ConfigError
from coconut.core.methods import Method
from coconut.training.gate import GateConfig, LearningGate, StageNotLearnt

COT = Method("cot", thought="none", stage="zero", markers=False)


def coconut_train(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "coconut.cli.train", *overrides], capture_output=True, text=True, timeout=300
    )


def test_a_stage_below_the_bar_trains_on_then_stops_and_is_not_handed_on(tmp_path):
    """debug=fast answers nothing (val/acc 0): two extra epochs of stage 0, then exit 2 with one line;
    run.json says not_learnt, metrics.json records the gate, and init_from refuses the checkpoint."""
    run = tmp_path / "stage0"
    done = coconut_train(
        "debug=fast",
        "method=cot",
        "gate.min_val_acc=0.9",
        "gate.extra_epochs=2",
        f"hydra.run.dir={run}",
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "stage 0 did not learn: its best val/acc is 0.0000, below gate.min_val_acc=0.9" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    assert json.loads((run / "run.json").read_text())["status"] == "not_learnt"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["gate"] == {"monitor": "val/acc", "min_val_acc": 0.9, "extra_epochs_used": 2, "passed": False}
    assert metrics["final"]["curriculum/stage"] == 0.0
    assert "epoch 3 stage 0" in done.stdout and "epoch 4" not in done.stdout  # 2 + 2 epochs, no more

    refused = coconut_train(
        "debug=fast", f"init_from={run / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={tmp_path / 'next'}"
    )
    assert refused.returncode == 2
    assert "stopped at its learning gate" in refused.stdout and "Traceback" not in refused.stdout
    assert not (tmp_path / "next" / "checkpoints").exists()


class FakeTrainer:
    """What the gate reads of Lightning's trainer."""

    def __init__(self, max_epochs: int):
        self.fit_loop = SimpleNamespace(max_epochs=max_epochs)
        self.current_epoch, self.callback_metrics, self.sanity_checking, self.should_stop = 0, {}, False, False

    def validate(self, gate: LearningGate, epoch: int, acc: float) -> None:
        self.current_epoch, self.callback_metrics = epoch, {"val/acc": torch.tensor(acc)}
        gate.on_validation_end(self, None)
        gate.on_train_epoch_end(self, None)


def test_the_gate_passes_at_the_bar_extends_below_it_and_fails_when_the_budget_is_spent():
    gate = LearningGate(GateConfig(min_val_acc=0.8, extra_epochs=2), Curriculum(), COT)
    trainer = FakeTrainer(max_epochs=2)
    trainer.validate(gate, 0, 0.9)  # not the last epoch: nothing decided
    trainer.validate(gate, 1, 0.5)  # the best of the stage counts: 0.9 >= 0.8
    assert trainer.fit_loop.max_epochs == 2 and gate.failure is None and gate.summary()["passed"]

    gate = LearningGate(GateConfig(min_val_acc=0.8, extra_epochs=2), Curriculum(), COT)
    trainer = FakeTrainer(max_epochs=2)
    trainer.validate(gate, 0, 0.5)
    trainer.validate(gate, 1, 0.5)
    assert trainer.fit_loop.max_epochs == 3 and gate.failure is None  # one more epoch
    trainer.validate(gate, 2, 0.85)
    assert trainer.fit_loop.max_epochs == 3 and gate.summary() == {
        "monitor": "val/acc",
        "min_val_acc": 0.8,
        "extra_epochs_used": 1,
        "passed": True,
    }

    gate = LearningGate(GateConfig(min_val_acc=0.8, extra_epochs=1), Curriculum(), COT)
    trainer = FakeTrainer(max_epochs=1)
    trainer.validate(gate, 0, 0.5)
    trainer.validate(gate, 1, 0.6)
    assert trainer.fit_loop.max_epochs == 2 and trainer.should_stop and "best val/acc is 0.6000" in gate.failure
    # A resumed run keeps the extra epochs it was given.
    resumed = LearningGate(GateConfig(min_val_acc=0.8, extra_epochs=1), Curriculum(), COT)
    resumed.load_state_dict(gate.state_dict())
    trainer = FakeTrainer(max_epochs=1)
    resumed.on_train_start(trainer, None)
    assert trainer.fit_loop.max_epochs == 2


def test_without_a_bar_nothing_changes(tmp_path):
    train(tiny_cfg(tmp_path / "run", "method=cot"))
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())["gate"]
    assert summary == {"monitor": "val/acc", "min_val_acc": None, "extra_epochs_used": 0, "passed": True}


def test_a_curriculum_run_does_not_train_on_into_another_stage(tmp_path):
    """The last epoch is stage 1 and the next would be stage 2: the gate stops instead."""
    with pytest.raises(StageNotLearnt, match="stage 1 did not learn.*after 0 extra epoch"):
        train(
            tiny_cfg(tmp_path / "run", "curriculum.max_latent_stage=3", "gate.min_val_acc=0.9", "gate.extra_epochs=3")
        )


@pytest.mark.parametrize("bad", [{"min_val_acc": 0.0}, {"min_val_acc": 1.5}, {"extra_epochs": -1}])
def test_bad_gate_settings_are_refused(bad):
    with pytest.raises(ConfigError, match="gate."):
        GateConfig(**bad)
