"""Interrupted, repeated and diverging runs: a run stopped mid-epoch (Ctrl-C, SIGTERM, SIGKILL) and
started again with the same command ends with the same numbers as an uninterrupted run (on CPU:
exactly, the tolerance asserted is 1e-6); the same seed gives the same losses; a new run never
writes over another run's folder; a NaN loss stops the run and keeps the last good checkpoint."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import scalars, tiny_cfg

from coconut.commands.checks import CheckpointError, check_checkpoint_compatible
from coconut.commands.train import train
from coconut.core.errors import ConfigError
from coconut.data.epoch_loader import EpochLoader
from coconut.training.callbacks import save_atomically
from coconut.training.health import NonFiniteLossError, avoid_cudnn_attention
from coconut.training.lit_module import CoconutLitModule
from coconut.training.runs import find_resumable, read_run, write_run

# 6 batches per epoch, 2 epochs (stages 0 and 1), last.ckpt every 3 steps: step 9 is mid-epoch 1.
RUN = [
    "trainer.max_epochs=2",
    "data.sizes.train=48",
    "trainer.limit_train_batches=1.0",
    "callbacks.last_checkpoint.every_n_train_steps=3",
    "callbacks.thought_diagnostics=null",  # not under test, and it triples the time of these tiny runs
    "test=false",
]
STEPS = 12
COMPARED = ("train/loss", "val/loss", "val/acc", "val/tokens_per_answer", "curriculum/stage")
TOLERANCE = 1e-6


def same_numbers(a: dict, b: dict) -> None:
    for key in COMPARED:
        assert a[key] == pytest.approx(b[key], abs=TOLERANCE, rel=TOLERANCE), key


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict]:
    """One uninterrupted run of RUN, shared by the tests that compare against it."""
    folder = tmp_path_factory.mktemp("reference") / "run"
    return folder, train(tiny_cfg(folder, *RUN))


def test_same_seed_gives_the_same_losses_and_accuracy(reference, tmp_path):
    folder, metrics = reference
    again = tmp_path / "again"
    assert train(tiny_cfg(again, *RUN)) == pytest.approx(metrics, abs=TOLERANCE)
    assert scalars(again)["train/loss"] == scalars(folder)["train/loss"]  # every step, exactly
    assert len(scalars(again)["train/loss"]) == STEPS
    # The finished reference next to it was not resumed: this run started from scratch.
    assert read_run(again)["resumed_from"] is None and read_run(again)["status"] == "finished"


@pytest.mark.parametrize(
    "interruption",
    ["SIGTERM", pytest.param("Ctrl-C", marks=pytest.mark.slow)],
)
def test_interrupted_mid_epoch_then_the_same_config_resumes_to_the_same_numbers(
    reference, tmp_path, monkeypatch, interruption
):
    """In-process variants of the CLI tests below: SIGTERM during step 10 (Lightning stops after the
    batch, last.ckpt is written then), or Ctrl-C (the run keeps the last periodic checkpoint, step 9)."""
    original = CoconutLitModule.training_step

    def interrupted(self, batch, batch_idx):
        if self.global_step == 10:
            if interruption == "SIGTERM":
                os.kill(os.getpid(), signal.SIGTERM)
            else:
                raise KeyboardInterrupt  # Lightning turns Ctrl-C into sys.exit(1) after its clean-up
        return original(self, batch, batch_idx)

    monkeypatch.setattr(CoconutLitModule, "training_step", interrupted)
    with pytest.raises(SystemExit):
        train(tiny_cfg(tmp_path / "run", *RUN))
    monkeypatch.setattr(CoconutLitModule, "training_step", original)
    assert read_run(tmp_path / "run")["status"] == "interrupted"
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    # Mid-epoch 1 (steps 6-11): after batch 4 (SIGTERM) or batch 3 (the step-9 checkpoint).
    start = 11 if interruption == "SIGTERM" else 9
    assert saved["global_step"] == start and saved["epoch"] == 1

    resumed = train(tiny_cfg(tmp_path / "run", *RUN))  # the same config, in the same folder
    same_numbers(resumed, reference[1])
    losses = dict(scalars(tmp_path / "run")["train/loss"])
    assert {step: losses[step] for step in range(start, STEPS)} == {
        step: loss for step, loss in scalars(reference[0])["train/loss"] if step >= start
    }


def cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "coconut.cli.train", "debug=fast", "curriculum.max_latent_stage=1", *RUN, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_checkpoint(runs: Path, process: subprocess.Popen, timeout: float = 240) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(runs.glob("*/checkpoints/last.ckpt"))
        if found:
            return found[0]
        assert process.poll() is None, process.communicate()[0][-3000:]
        time.sleep(0.02)
    process.kill()
    raise AssertionError("no checkpoint appeared")


@pytest.mark.slow  # two runs started from the shell: over a minute on two cores
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_run_and_the_same_command_resume_to_the_same_numbers(reference, tmp_path, signum):
    # Hydra's default: every invocation gets a new timestamped folder under runs/.
    same_command = [f"hydra.run.dir={tmp_path}/runs/${{now:%Y-%m-%d_%H-%M-%S-%f}}"]
    first = cli(*same_command)
    checkpoint = wait_for_checkpoint(tmp_path / "runs", first)
    first.send_signal(signum)
    output = first.communicate(timeout=120)[0]
    killed = checkpoint.parent.parent
    saved = torch.load(checkpoint, weights_only=False)
    assert 0 < saved["global_step"] < STEPS, "the run ended before the signal: make it longer"
    if signum == signal.SIGTERM:
        assert first.returncode == 128 + signal.SIGTERM, output[-3000:]
        assert "SIGTERM" in output and "run the same command again to resume" in output
        assert read_run(killed)["status"] == "interrupted"
    else:
        assert first.returncode == -signal.SIGKILL
        assert read_run(killed)["status"] == "running"  # the process had no chance to say otherwise
    before = {p.name: p.stat().st_mtime_ns for p in (killed / "checkpoints").iterdir()}

    second = cli(*same_command)
    output = second.communicate(timeout=300)[0]
    assert second.returncode == 0, output[-3000:]
    (resumed,) = [p for p in (tmp_path / "runs").iterdir() if p != killed]
    assert read_run(resumed)["resumed_from"] == str(checkpoint)
    same_numbers(json.loads((resumed / "metrics.json").read_text())["final"], reference[1])
    # The interrupted run's files are left as they were.
    assert {p.name: p.stat().st_mtime_ns for p in (killed / "checkpoints").iterdir()} == before


def test_a_new_run_never_writes_over_another_runs_folder(reference, tmp_path):
    folder, _ = reference
    before = {p.name: p.stat().st_mtime_ns for p in (folder / "checkpoints").iterdir()}
    for overrides in ([], ["seed=1"]):  # the same config (finished, so not resumed) or another one
        with pytest.raises(ConfigError, match=r"already holds another run's outputs \(status: finished\)"):
            train(tiny_cfg(folder, *RUN, *overrides))
    assert {p.name: p.stat().st_mtime_ns for p in (folder / "checkpoints").iterdir()} == before


def test_nan_loss_stops_naming_step_and_stage_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    original = CoconutLitModule.model_step

    def diverging(self, batch):
        loss = original(self, batch)
        return loss * float("nan") if self.training and self.global_step == 10 else loss

    monkeypatch.setattr(CoconutLitModule, "model_step", diverging)
    with pytest.raises(NonFiniteLossError) as error:
        train(tiny_cfg(tmp_path, *RUN))
    message = str(error.value)
    assert "train/loss is nan at step 10 (epoch 1, batch 4, curriculum stage 1)" in message
    assert f"last good checkpoint is {tmp_path / 'checkpoints' / 'last.ckpt'}" in message
    assert "optimizer.lr" in message
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["global_step"] == 9
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values())
    assert read_run(tmp_path)["status"] == "failed"


def test_non_finite_weights_are_never_saved(tmp_path, monkeypatch):
    """A finite loss whose update makes the weights infinite: the checkpoint due then is refused."""
    original = CoconutLitModule.optimizer_step

    def poisoning(self, epoch, batch_idx, optimizer, optimizer_closure=None):
        original(self, epoch, batch_idx, optimizer, optimizer_closure)
        if self.global_step == 5:  # the update of batch 5; last.ckpt is due after it (every 3 steps)
            with torch.no_grad():
                next(self.parameters()).fill_(float("inf"))

    monkeypatch.setattr(CoconutLitModule, "optimizer_step", poisoning)
    with pytest.raises(NonFiniteLossError, match=r"weights became non-finite .* by step 5 \(epoch 0, batch 5"):
        train(tiny_cfg(tmp_path, *RUN))
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 3


class _Trainer:
    """What save_atomically uses of a Trainer; its save_checkpoint dies half-way through the file."""

    is_global_zero = True
    lightning_module = torch.nn.Linear(2, 2)

    class strategy:
        @staticmethod
        def barrier():
            pass

    def save_checkpoint(self, path, weights_only=False):
        Path(path).write_bytes(b"half a checkp")
        raise OSError("disk full")


def test_a_failed_write_leaves_the_previous_checkpoint_in_place(tmp_path):
    path = tmp_path / "last.ckpt"
    path.write_bytes(b"the good checkpoint")
    with pytest.raises(OSError, match="disk full"):
        save_atomically(_Trainer(), path)
    assert path.read_bytes() == b"the good checkpoint"


def test_epoch_loader_order_is_fixed_by_seed_and_epoch_and_resumes_mid_epoch():
    data = list(range(20))

    def batches(loader):
        return [b.tolist() for b in loader]

    loader = EpochLoader(data, seed=0, epoch=1, batch_size=3)
    full = batches(loader)
    assert batches(loader) == full  # a second pass (Lightning may start two) gives the same order
    assert sorted(sum(full, [])) == data
    assert batches(EpochLoader(data, seed=0, epoch=2, batch_size=3)) != full
    assert batches(EpochLoader(data, seed=1, epoch=1, batch_size=3)) != full
    torch.manual_seed(123)  # the global RNG plays no part
    iterator = iter(loader)
    head = [next(iterator).tolist() for _ in range(3)]
    state = loader.state_dict()
    assert state == {"epoch": 1, "batches_done": 3}
    restarted = EpochLoader(data, seed=0, epoch=1, batch_size=3)
    restarted.load_state_dict(state)
    assert head + batches(restarted) == full
    assert restarted.state_dict()["batches_done"] == len(full)
    other_epoch = EpochLoader(data, seed=0, epoch=2, batch_size=3)
    other_epoch.load_state_dict(state)  # saved at the end of epoch 1: epoch 2 starts from its first batch
    assert len(batches(other_epoch)) == len(full)


def run_record(folder: Path, config: dict, status: str, started: float, **extra) -> Path:
    write_run(folder, {"status": status, "started": started, "config": config, "pid": 0, "host": "x", **extra})
    (folder / "checkpoints").mkdir(exist_ok=True)
    (folder / "checkpoints" / "last.ckpt").write_bytes(b"ckpt")
    return folder


def test_resume_picks_the_most_recent_unfinished_run_with_the_same_config(tmp_path):
    config = {"seed": 0}
    run_record(tmp_path / "a", config, "interrupted", 1.0)
    newer = run_record(tmp_path / "b", config, "interrupted", 2.0)
    run_record(tmp_path / "c", {"seed": 1}, "interrupted", 3.0)  # another config
    assert find_resumable([tmp_path], config).folder == newer.resolve()
    # b was resumed by d, which died before its first checkpoint: d resumes from b's checkpoint again.
    d = tmp_path / "d"
    killed = subprocess.Popen(["true"])
    killed.wait()  # a process that is gone, as after a SIGKILL
    write_run(d, {"status": "running", "started": 4.0, "config": config, "pid": killed.pid,
                  "host": socket.gethostname(), "resumed_from": str(newer / "checkpoints" / "last.ckpt")})  # fmt: skip
    found = find_resumable([tmp_path], config)
    assert found.folder == d.resolve() and found.checkpoint == newer / "checkpoints" / "last.ckpt"
    # Once the most recent run finished (or failed), the same command starts afresh.
    run_record(tmp_path / "e", config, "finished", 5.0)
    assert find_resumable([tmp_path], config) is None
    # A run still running (this very test's process, seen as another run) is not resumed either.
    run_record(tmp_path / "f", config, "running", 6.0)
    write_run(tmp_path / "f", dict(read_run(tmp_path / "f"), pid=os.getppid(), host=socket.gethostname()))
    assert find_resumable([tmp_path], config) is None


def test_checkpoint_compatibility_with_method_and_tokenizer(reference):
    from coconut.core.methods import Method
    from coconut.training.lit_module import rebuild_from_checkpoint

    checkpoint = torch.load(reference[0] / "checkpoints" / "last.ckpt", weights_only=False)
    _, tokenizer = rebuild_from_checkpoint(checkpoint)
    check_checkpoint_compatible(checkpoint, Method("coconut"), tokenizer)
    check_checkpoint_compatible(checkpoint, Method("coconut_final", stage="final"), tokenizer)  # another stage
    with pytest.raises(CheckpointError, match=r"method=coconut .* as method=cot .*method\.thought: trained"):
        check_checkpoint_compatible(checkpoint, Method("cot", thought="none", stage="zero", markers=False))
    tokenizer.add_tokens(["<extra>"])
    with pytest.raises(CheckpointError, match=r"tokenizer has \d+ tokens but .* trained with \d+"):
        check_checkpoint_compatible(checkpoint, Method("coconut"), tokenizer)
    with pytest.raises(CheckpointError, match="not written by coconut-train"):
        check_checkpoint_compatible({"state_dict": {}}, Method("coconut"))


def test_a_run_recorded_before_the_layers_moved_is_still_resumed(tmp_path):
    config = {"callbacks": {"last_checkpoint": {"_target_": "coconut.training.callbacks.LastCheckpoint"}}}
    old = {"callbacks": {"last_checkpoint": {"_target_": "coconut.callbacks.LastCheckpoint"}}}
    folder = run_record(tmp_path / "a", old, "interrupted", 1.0)
    assert find_resumable([tmp_path], config).folder == folder.resolve()


@pytest.mark.parametrize("device, stays_on", [("cpu", True), ("cuda", False)])
def test_training_on_a_gpu_keeps_off_cudnn_attention(device, stays_on):
    # cuDNN's attention backward returned NaN in bf16 training on an H200 (docs/results.md, "On a GPU");
    # CPU runs never use it and keep torch's setting.
    before = torch.backends.cuda.cudnn_sdp_enabled()
    try:
        torch.backends.cuda.enable_cudnn_sdp(True)
        avoid_cudnn_attention(torch.device(device))
        assert torch.backends.cuda.cudnn_sdp_enabled() is stays_on
    finally:
        torch.backends.cuda.enable_cudnn_sdp(before)
