"""scripts/compare.py over seeds: evaluations that differ only in their seed are summarised as
mean ± std (sample std), each method apart, with the chance level beside a legibility column."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def report(folder: Path, method: str, accuracy: float, decode: float) -> Path:
    folder.mkdir(parents=True)
    body = {
        "method": method,
        "stage": 4,
        "dataset": "arithmetic",
        "accuracy": accuracy,
        "tokens": {"generated_mean": 4.0, "forward_passes_mean": 7.0, "thoughts_mean": 3.0},
        "legibility": {"decode_top1": decode, "decode_top1_chance": 0.05},
    }
    (folder / "report.json").write_text(json.dumps(body))
    return folder


def test_seeds_of_one_method_become_one_row_of_mean_and_std(tmp_path):
    folders = [
        report(tmp_path / "a" / "quick-seed0", "coconut", 0.3, 0.1),
        report(tmp_path / "a" / "quick-seed1", "coconut", 0.5, 0.3),
        report(tmp_path / "b" / "quick-seed0", "no_cot", 0.1, 0.2),
        report(tmp_path / "b" / "quick-seed1", "no_cot", 0.1, 0.2),
    ]
    command = [sys.executable, str(ROOT / "scripts" / "compare.py"), *map(str, folders), "--out", str(tmp_path / "out")]
    shown = subprocess.run(command, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr[-2000:]
    rows = [line for line in (tmp_path / "out" / "seeds.md").read_text().splitlines() if line.startswith("| quick")]
    assert len(rows) == 2
    coconut, no_cot = rows
    assert "| coconut |" in coconut and "| 2 | 0.400 ± 0.141 |" in coconut  # stdev([0.3, 0.5]) = 0.1414
    assert "0.20 ± 0.14 (0.05)" in coconut  # decode top-1, its chance in brackets
    assert "| no_cot |" in no_cot and "0.100 ± 0.000" in no_cot
    assert (tmp_path / "out" / "accuracy_vs_tokens.png").stat().st_size > 1000


def test_runs_without_seeds_write_no_seed_table(tmp_path):
    folders = [report(tmp_path / "x", "coconut", 0.3, 0.1), report(tmp_path / "y", "no_cot", 0.1, 0.2)]
    command = [sys.executable, str(ROOT / "scripts" / "compare.py"), *map(str, folders), "--out", str(tmp_path / "out")]
    assert subprocess.run(command, capture_output=True, text=True).returncode == 0
    assert not (tmp_path / "out" / "seeds.md").exists()


@pytest.mark.slow
def test_the_methods_script_gives_each_seed_its_own_overrides(tmp_path):
    """scripts/compare_methods.sh: `{seed}` in an override is the run's seed (the graph methods
    continue the stage-0 run of their own seed), and every run is trained, evaluated and tabled."""
    import os

    env = {**os.environ, "BIN": str(Path(sys.executable).parent)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    overrides = [
        "debug=fast",
        "curriculum.max_latent_stage=1",
        "callbacks.thought_diagnostics=null",
        "data.seed=1{seed}",
    ]
    done = subprocess.run(
        [str(ROOT / "scripts" / "compare_methods.sh"), str(tmp_path), "cpu_quickstart", "0 1", *overrides],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for seed in (0, 1):
        config = json.loads((tmp_path / "runs" / "cpu_quickstart" / f"seed{seed}" / "run.json").read_text())["config"]
        assert (config["seed"], config["data"]["seed"]) == (seed, 10 + seed)
        assert (tmp_path / "eval" / f"cpu_quickstart-seed{seed}" / "report.json").is_file()
    assert "| cpu_quickstart | coconut |" in (tmp_path / "compare" / "seeds.md").read_text()
