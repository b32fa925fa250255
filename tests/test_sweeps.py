"""Sweeps: the Optuna preset runs a real 2-trial search optimising val/acc, the SLURM preset composes,
and scripts/aggregate.py tabulates a multirun folder (mean ± std over seeds)."""

import json
import subprocess
import sys
from pathlib import Path

import aggregate  # scripts/aggregate.py (scripts/ is on pytest's pythonpath)
import pytest
import yaml
from hydra import compose, initialize_config_dir

from coconut import CONFIG_DIR

ROOT = Path(__file__).resolve().parent.parent


def test_presets_compose():
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        optuna = compose(config_name="train", overrides=["hparams_search=optuna_val_acc"], return_hydra_config=True)
        slurm = compose(
            config_name="train",
            overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "trainer=ddp", "trainer.devices=4"],
            return_hydra_config=True,
        )
    assert optuna.optimized_metric == "val/acc"
    assert optuna.hydra.sweeper.direction == "maximize" and "optimizer.lr" in optuna.hydra.sweeper.params
    assert slurm.hydra.launcher._target_.endswith("SlurmLauncher")
    assert slurm.hydra.launcher.partition == "gpu" and slurm.hydra.launcher.tasks_per_node == 1


def test_optuna_sweep_returns_val_acc_and_aggregates(tmp_path):
    args = [
        "-m",
        "hparams_search=optuna_val_acc",
        "debug=fast",
        "trainer.max_epochs=1",
        "test=false",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=2",
        f"hydra.sweep.dir={tmp_path}",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "coconut.cli.train", *args], capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    trials = [json.loads((tmp_path / str(i) / "metrics.json").read_text()) for i in range(2)]
    assert results["best_value"] == max(t["final"]["val/acc"] for t in trials)
    header, rows = aggregate.aggregate(tmp_path)
    assert "optimizer.lr" in header and "val/acc" in header and "best val/acc stage0" in header
    assert len(rows) == 2 and all(row[header.index("seeds")] == "1" for row in rows)


def fake_job(folder: Path, overrides: list[str], val_acc: float, stages: dict[str, float]) -> None:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    summary = {"final": {"val/acc": val_acc, "lr-AdamW": 0.1}, "best_per_stage": {"val/acc": stages}}
    (folder / "metrics.json").write_text(json.dumps(summary))


def test_aggregate_groups_seeds_and_keeps_only_varying_keys(tmp_path):
    for i, (c, seed, acc) in enumerate([(1, 0, 0.5), (1, 1, 0.7), (2, 0, 0.2), (2, 1, 0.2)]):
        overrides = ["debug=fast", f"curriculum.c_thought={c}", f"seed={seed}", f"hydra.sweep.dir={tmp_path}"]
        fake_job(tmp_path / str(i), overrides, acc, {"stage0": acc / 2, "stage10": acc})
    (tmp_path / "9" / ".hydra").mkdir(parents=True)  # a job that died before logging anything
    (tmp_path / "9" / ".hydra" / "overrides.yaml").write_text("[seed=2]")
    header, rows = aggregate.aggregate(tmp_path)
    assert header == ["curriculum.c_thought", "seeds", "val/acc", "best val/acc stage0", "best val/acc stage10"]
    assert rows == [
        ["1", "2", "0.6000 ± 0.1414", "0.3000 ± 0.0707", "0.6000 ± 0.1414"],
        ["2", "2", "0.2000 ± 0.0000", "0.1000 ± 0.0000", "0.2000 ± 0.0000"],
    ]
    table = aggregate.markdown(header, rows)
    assert table.splitlines()[1] == "|---|---|---|---|---|"


@pytest.mark.slow
def test_aggregate_a_real_two_seed_two_value_multirun(tmp_path):
    args = ["-m", "debug=fast", "trainer.max_epochs=2", "test=false", "curriculum.max_latent_stage=1"]
    args += ["seed=0,1", "curriculum.c_thought=1,2", f"hydra.sweep.dir={tmp_path}"]
    done = subprocess.run(
        [sys.executable, "-m", "coconut.cli.train", *args], capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "aggregate.py"), str(tmp_path)], capture_output=True, text=True
    )
    lines = out.stdout.splitlines()
    assert lines[0].startswith("| curriculum.c_thought | seeds | val/acc | val/loss |")
    assert "best val/acc stage1" in lines[0] and len(lines) == 4
    assert all(line.split(" | ")[1] == "2" and "±" in line for line in lines[2:])
