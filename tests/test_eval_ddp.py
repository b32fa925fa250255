"""Evaluation through Lightning (coconut/training/predict.py): the questions split over 2 CPU
processes (gloo, DDP) give the report and sample rows of one process, every pass included
(generation, legibility, ablations, interventions), timing aside."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_cfg

from coconut.cli.train import train

SCRIPT = Path(__file__).resolve().parent / "eval_ddp_script.py"


def evaluated(ckpt: Path, out: Path, devices: int) -> dict:
    out.mkdir(parents=True)
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(ckpt), str(out), str(devices)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["world"] == devices
    result["report"].pop("latency")  # timing
    return result


@pytest.mark.slow
def test_two_cpu_processes_give_the_report_of_one(tmp_path):
    run = tmp_path / "run"
    train(tiny_cfg(run, "trainer.max_epochs=2", "test=false"))
    ckpt = run / "checkpoints" / "last.ckpt"
    one = evaluated(ckpt, tmp_path / "one", 1)
    two = evaluated(ckpt, tmp_path / "two", 2)
    assert one["report"]["n"] == 16 and one["report"]["legibility"]["causal_edits"] is not None
    assert set(one["report"]["legibility"]["ablation"]) == {"zeros", "mean", "other"}
    assert two["report"] == one["report"]
    assert two["rows"] == one["rows"]
