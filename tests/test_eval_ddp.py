"""`coconut-eval trainer.devices=2` on CPU (2 processes, gloo, DDP; coconut/training/predict.py)
writes the report and sample rows of one process, every pass included (generation, legibility,
ablations, interventions), timing aside."""

import json
import os
import subprocess
import sys

import pytest
from conftest import tiny_cfg
from hydra import compose, initialize_config_dir

from coconut import CONFIG_DIR
from coconut.commands.evaluate import run_evaluation
from coconut.commands.train import train

# 16 questions in 4 batches: 2 batches a process. One thread per process, as the single process.
SHARED = ["batch_size=4", "cpu_threads=1"]


def without_timing(report: dict) -> dict:
    return {k: v for k, v in report.items() if k not in ("latency", "config")}


@pytest.mark.slow
def test_two_cpu_processes_give_the_report_of_one(tmp_path):
    run = tmp_path / "run"
    train(tiny_cfg(run, "trainer.max_epochs=2", "test=false"))
    ckpt = f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"
    ddp = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"]
    done = subprocess.run(
        [sys.executable, "-m", "coconut.cli.evaluate", ckpt, *SHARED, *ddp, f"hydra.run.dir={tmp_path / 'two'}"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "GLOBAL_RANK: 1" in done.stdout + done.stderr
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="eval", overrides=[ckpt, *SHARED, f"paths.output_dir={tmp_path / 'one'}"])
    one = run_evaluation(cfg)
    two = json.loads((tmp_path / "two" / "report.json").read_text())
    assert one["n"] == 16 and one["legibility"]["causal_edits"] is not None
    assert set(one["legibility"]["ablation"]) == {"zeros", "mean", "other"}
    assert without_timing(two) == without_timing(one)
    assert (tmp_path / "two" / "samples.jsonl").read_text() == (tmp_path / "one" / "samples.jsonl").read_text()
