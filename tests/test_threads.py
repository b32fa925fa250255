"""The CPU thread policy (coconut/core/threads.py): the thread count as a pure function of the allowed
cores and the config, OMP_WAIT_POLICY=PASSIVE set before any entry point loads torch and inherited by
the processes it starts, and the choice recorded in run.json. (Speed under load: scripts/bench_cpu_load.py.)"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, tiny_cfg

from coconut.cli.train import train
from coconut.core.errors import ConfigError
from coconut.core.threads import apply_cpu_threads, choose_cpu_threads, cpu_quota, physical_cores
from coconut.training.runs import run_config


# -- the choice ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cores, processes, threads",
    [(1, 1, 1), (2, 1, 2), (4, 1, 4), (64, 1, 64), (16, 4, 4), (6, 4, 1), (2, 8, 1)],
)
def test_automatic_threads_are_the_allowed_cores_shared_by_the_processes(cores, processes, threads):
    choice = choose_cpu_threads(cores, None, processes=processes)
    assert choice.threads == threads
    assert choice.source.startswith(f"automatic: {cores} cores")


def test_a_count_set_by_hand_wins_then_omp_num_threads():
    assert choose_cpu_threads(64, 3, env_threads="8").threads == 3
    assert choose_cpu_threads(64, 3).source == "set by hand"
    assert choose_cpu_threads(64, None, env_threads="8") == choose_cpu_threads(2, None, env_threads=" 8")
    assert choose_cpu_threads(64, None, env_threads="8").source == "OMP_NUM_THREADS=8"
    for unusable in ("", "0", "two", "-1"):  # not a positive count: the automatic choice
        assert choose_cpu_threads(4, None, env_threads=unusable).threads == 4


@pytest.mark.parametrize("bad", [0, -2, True, "2", 1.5])
def test_an_impossible_count_is_a_config_error(bad):
    with pytest.raises(ConfigError, match=f"cpu_threads must be an integer >= 1 .*got {bad!r}"):
        choose_cpu_threads(4, bad)


def test_hyperthreads_of_one_core_count_once(tmp_path):
    # cpu0/cpu2 share core 0, cpu1/cpu3 core 1 (one package); cpu4 is core 0 of a second package.
    for cpu, package, core in [(0, 0, 0), (1, 0, 1), (2, 0, 0), (3, 0, 1), (4, 1, 0)]:
        folder = tmp_path / f"cpu{cpu}" / "topology"
        folder.mkdir(parents=True)
        (folder / "physical_package_id").write_text(f"{package}\n")
        (folder / "core_id").write_text(f"{core}\n")
    assert physical_cores({0, 1, 2, 3}, tmp_path) == 2
    assert physical_cores({0, 2}, tmp_path) == 1
    assert physical_cores({0, 4}, tmp_path) == 2
    assert physical_cores({0, 7}, tmp_path) == 2  # cpu7's topology unknown: logical CPUs counted


def test_a_cgroup_quota_bounds_the_cores(tmp_path):
    cpu_max = tmp_path / "cpu.max"
    for text, cpus in [("200000 100000\n", 2), ("150000 100000\n", 2), ("50000 100000\n", 1), ("max 100000\n", None)]:
        cpu_max.write_text(text)
        assert cpu_quota(cpu_max) == cpus
    assert cpu_quota(tmp_path / "absent") is None


def test_threads_are_set_on_cpu_runs_only():
    before = torch.get_num_threads()
    try:
        record = apply_cpu_threads(None, device="cuda")
        assert torch.get_num_threads() == before and "GPU run" in record["source"]
        record = apply_cpu_threads(1, device="cpu")
        assert torch.get_num_threads() == 1 and record["threads"] == 1 and record["source"] == "set by hand"
        assert "OMP_WAIT_POLICY" in record
    finally:
        torch.set_num_threads(before)


# -- the environment ---------------------------------------------------------------------------------
# Runs an entry point's import (or a script) in a fresh interpreter, recording OMP_WAIT_POLICY at the
# moment torch is first imported (and stopping there: the rest is not needed, and torch is slow to
# load), then what a process the entry point starts afterwards sees.
SPY = """
import importlib.abc, os, runpy, subprocess, sys
seen = {}
class Spy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch":
            seen.setdefault("torch", os.environ.get("OMP_WAIT_POLICY"))
            raise ImportError("torch is not loaded in this test")
sys.meta_path.insert(0, Spy())
kind, target = sys.argv[1], sys.argv[2]
try:
    if kind == "module":
        __import__(target)  # what the console script does first: from <module> import main
    elif kind == "call":
        module, _, name = target.partition(":")
        getattr(__import__(module, fromlist=[name]), name)(["--help"])
    else:
        sys.argv = [target, "--help"]
        runpy.run_path(target, run_name="__main__")
except (SystemExit, ImportError):
    pass
child = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('OMP_WAIT_POLICY'))"],
                       capture_output=True, text=True).stdout.strip()
print("RESULT", seen.get("torch", "not-loaded"), child)
"""
ENTRY_POINTS = [
    ("module", "coconut.cli.train"),  # coconut-train
    ("module", "coconut.cli.evaluate"),  # coconut-eval
    ("call", "coconut.data.prepare:main"),  # coconut-data
    ("script", str(ROOT / "scripts" / "bench_train_step.py")),
    ("script", str(ROOT / "scripts" / "bench_generate.py")),
]


def spy(kind: str, target: str, **env: str) -> list[str]:
    environ = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | env
    done = subprocess.run(
        [sys.executable, "-c", SPY, kind, target], capture_output=True, text=True, env=environ, cwd=ROOT, timeout=300
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
    assert lines, done.stderr[-2000:]
    return lines[-1].split()[1:]


@pytest.mark.parametrize("kind, target", ENTRY_POINTS, ids=[Path(t).name for _, t in ENTRY_POINTS])
def test_every_entry_point_sets_passive_wait_before_torch_loads_and_its_children_inherit_it(kind, target):
    at_torch, child = spy(kind, target)
    assert at_torch in ("PASSIVE", "not-loaded"), f"torch loaded with OMP_WAIT_POLICY={at_torch}"
    assert child == "PASSIVE"


def test_a_wait_policy_the_user_set_is_kept():
    assert spy("module", "coconut.cli.train", OMP_WAIT_POLICY="ACTIVE") == ["ACTIVE", "ACTIVE"]


# -- the run record ----------------------------------------------------------------------------------
def test_the_choice_is_logged_and_recorded_in_run_json_and_not_part_of_the_run_config(tmp_path, caplog):
    before = torch.get_num_threads()
    try:
        with caplog.at_level("INFO", logger="coconut.core.threads"):
            train(tiny_cfg(tmp_path, "trainer.cpu_threads=1", "trainer.max_epochs=1", "test=false"))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["cpu_threads"]["threads"] == 1 and record["cpu_threads"]["source"] == "set by hand"
    assert record["cpu_threads"]["OMP_WAIT_POLICY"] == os.environ["OMP_WAIT_POLICY"]
    lines = [r.getMessage() for r in caplog.records if r.name == "coconut.core.threads"]
    assert lines == [f"CPU threads: 1 (set by hand) | OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}"]
    # Another thread count resumes the same run: the count is not what the run trains.
    assert run_config(tiny_cfg(tmp_path, "trainer.cpu_threads=3")) == run_config(tiny_cfg(tmp_path))
    assert "cpu_threads" not in record["config"]["trainer"]
