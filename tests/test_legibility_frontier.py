"""scripts/legibility_frontier.py: evaluations of a lambda x projection x seed sweep -> one point per
(projection, lambda) with the seeds' mean and std, the table, the PNG and TensorBoard; and (slow) the
sweep script itself on tiny debug runs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import legibility_frontier as lf  # scripts/legibility_frontier.py (scripts/ is on pytest's pythonpath)
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parent.parent


def report(projection: str, weight: float, seed: int, accuracy: float, legibility: dict) -> dict:
    train = {
        "seed": seed,
        "legibility": {"weight": weight, "read": "lm_head"},
        "model": {"thought_projection": {"name": projection}},
    }
    return {"accuracy": accuracy, "legibility": {"causal": 0.5, **legibility}, "config": {"train": train}}


def write(folder: Path, content: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(json.dumps(content))
    return folder


def test_seeds_become_one_point_with_mean_and_std_and_the_plot_is_written(tmp_path):
    folders = [
        write(tmp_path / "a", report("identity", 0.0, 0, 0.8, {"decode_top1": 0.1})),
        write(tmp_path / "b", report("identity", 0.0, 1, 0.6, {"decode_top1": 0.3})),
        write(tmp_path / "c", report("sparse_readout", 0.3, 0, 0.5, {"decode_top1": 0.9})),
        write(tmp_path / "d", report("identity", 0.3, 0, 0.7, {"decode_top1": None})),  # no thoughts: left out
        write(tmp_path / "e", report("sparse_readout", 0.3, 1, 0.5, {"decode_top1": 0.95, "read": "readout"})),
    ]
    points = [p for p in (lf.point_of(json.loads((f / "report.json").read_text())) for f in folders) if p]
    rows = lf.frontier(points)
    assert [(r["projection"], r["weight"], r["seeds"]) for r in rows] == [
        ("identity", 0.0, 2),
        ("sparse_readout", 0.3, 1),
        ("sparse_readout (read by its readout)", 0.3, 1),  # another reading of the thoughts: not pooled
    ]
    assert rows[0]["accuracy"] == pytest.approx(0.7) and rows[0]["accuracy_std"] == pytest.approx(0.1414, abs=1e-4)
    assert rows[0]["legibility"] == pytest.approx(0.2) and rows[1]["legibility_std"] == 0.0
    assert rows[0]["legibility_name"] == "decode top-1"
    out = tmp_path / "plot"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "legibility_frontier.py"), *map(str, folders), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "| identity | 0 | 2 | 0.700 ± 0.141 | 0.200 ± 0.141 | 0.500 ± 0.000 | - |" in done.stdout
    assert (out / "legibility_frontier.png").stat().st_size > 0
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert "frontier/accuracy_vs_legibility" in events.Tags()["images"]


def test_graph_reports_plot_frontier_recall():
    point = lf.point_of(report("identity", 1.0, 2, 0.9, {"decode_top1": 0.2, "frontier_topk": 0.6}))
    assert point["legibility"] == 0.6 and point["legibility_name"].startswith("frontier recall")


@pytest.mark.slow
def test_the_sweep_script_trains_evaluates_and_plots_tiny_runs(tmp_path):
    env = {**os.environ, "BIN": str(Path(sys.executable).parent), "WEIGHTS": "0 0.3", "SEEDS": "0 1", "READ": "readout"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    args = ["debug=fast", "curriculum.max_latent_stage=1", "callbacks.thought_diagnostics=null"]
    done = subprocess.run(
        [str(ROOT / "scripts" / "legibility_frontier.sh"), str(tmp_path), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads((tmp_path / "plot" / "frontier.json").read_text())["rows"]
    assert {(r["projection"], r["weight"], r["seeds"]) for r in rows} == {
        (p, w, 2) for p in ("identity", "sparse_readout (read by its readout)") for w in (0.0, 0.3)
    }
    # READ trains and evaluates the sparse_readout runs by the readout; the identity runs keep the LM head.
    reads = {
        f.parent.name: json.loads(f.read_text())["legibility"]["read"] for f in tmp_path.glob("eval/*/report.json")
    }
    assert reads == {
        f"{p}_w{w}_s{s}": r
        for p, r in (("identity", "lm_head"), ("sparse_readout", "readout"))
        for w in (0, 0.3)
        for s in (0, 1)
    }
    assert (tmp_path / "plot" / "legibility_frontier.png").is_file()
