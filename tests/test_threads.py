"""The CPU thread policy (coconut/training/threads.py): the most threads as a pure function of the allowed
cores and the config, the count following the cores other processes leave free, and the choice logged
and recorded in run.json. (Speed alone and under load: scripts/bench_cpu_load.py.)"""

import json
import logging
import os
import sys

import pytest
import torch
from conftest import tiny_cfg

from coconut.commands.train import train
from coconut.core.errors import ConfigError
from coconut.training.cpu_time import CpuClock, cpu_time_since, describe_cpu_time
from coconut.training.runs import run_config
from coconut.training.threads import (
    BUSY_SAMPLES_BEFORE_WARNING,
    ThreadGovernor,
    apply_cpu_threads,
    choose_cpu_threads,
    cpu_quota,
    cpu_seconds,
    cpu_ticks,
    physical_cores,
    threads_for_load,
    usable_cores,
)


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


def test_threads_are_set_on_cpu_runs_only_and_follow_the_load_only_when_automatic(monkeypatch):
    before = torch.get_num_threads()
    try:
        threads = apply_cpu_threads(None, device="cuda")
        assert torch.get_num_threads() == before and "GPU run" in threads.record["source"]
        assert threads.governor is None
        threads = apply_cpu_threads(1, device="cpu")
        assert torch.get_num_threads() == 1 and threads.record["source"] == "set by hand"
        assert threads.governor is None and "OMP_WAIT_POLICY" in threads.record
        threads = apply_cpu_threads(2, device="cpu")  # fixed: the governor only watches, to warn
        assert torch.get_num_threads() == 2 and threads.record["source"] == "set by hand"
        assert threads.governor is not None and threads.governor.fixed_by == "cpu_threads=2"
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        threads = apply_cpu_threads(None, device="cpu")
        assert threads.record["source"].endswith("fewer while other processes use them")
        assert threads.governor is not None and threads.governor.most == threads.record["threads"]
        assert list(threads.governed([1, 2])) == [1, 2] and len(threads.governed([1, 2])) == 2
    finally:
        torch.set_num_threads(before)


# -- following the load ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "most, cores, others, threads",
    [
        (2, 2, 0.0, 2),
        (2, 2, 0.2, 2),  # background noise
        (2, 2, 0.3, 1),
        (2, 2, 1.0, 1),  # one busy process
        (2, 2, 2.0, 1),  # two: one thread still
        (4, 8, 3.0, 4),
        (4, 8, 5.5, 2),
    ],
)
def test_threads_follow_the_cores_other_processes_leave_free(most, cores, others, threads):
    assert threads_for_load(most, cores, others) == threads


def test_the_governor_samples_every_interval_and_sets_the_threads_it_decides():
    clock, samples, set_to = [0.0], [], []
    # Cumulative (busy seconds of the 2 CPUs, this process's CPU seconds).
    readings = iter([(0.0, 0.0), (2.0, 0.5), (3.0, 1.5), (4.9, 3.4)])
    governor = ThreadGovernor(
        2, {0, 1}, clock=lambda: clock[0], sample=lambda: samples.append(1) or next(readings), set_threads=set_to.append
    )
    assert governor.update() == 2 and len(samples) == 1  # the first sample: nothing to compare yet
    clock[0] = 0.5
    assert governor.update() == 2 and len(samples) == 1  # within the interval: not sampled
    clock[0] = 1.0  # others used (2.0 - 0.5) / 1 s = 1.5 cores
    assert governor.update() == 1 and set_to == [1]
    clock[0] = 2.0  # others used (1.0 - 1.0) = 0 cores
    assert governor.update() == 2 and set_to == [1, 2]
    clock[0] = 3.0  # others 1.9 - 1.9 = 0: unchanged, not set again
    assert governor.update() == 2 and set_to == [1, 2] and governor.changes == 2


def test_a_fixed_count_keeps_its_threads_and_warns_once_when_other_processes_hold_its_cores(caplog):
    clock, set_to, others_busy = [0.0], [], [0.0]

    def sample():  # cumulative (busy seconds of the 2 CPUs, this process's 2 CPU seconds a second)
        sample.busy += 2.0 + others_busy[0]
        sample.own += 2.0
        return sample.busy, sample.own

    sample.busy = sample.own = 0.0
    governor = ThreadGovernor(
        2, {0, 1}, clock=lambda: clock[0], sample=sample, set_threads=set_to.append, fixed_by="cpu_threads=2"
    )

    def seconds(n: int, busy: float) -> None:
        others_busy[0] = busy
        for _ in range(n):
            clock[0] += 1.0
            assert governor.update() == 2

    with caplog.at_level(logging.WARNING, logger="coconut.training.threads"):
        governor.update()
        seconds(BUSY_SAMPLES_BEFORE_WARNING - 1, busy=1.0)  # one busy process, but not yet for long
        seconds(1, busy=0.0)  # it stopped: the count starts again
        seconds(BUSY_SAMPLES_BEFORE_WARNING - 1, busy=1.0)
        assert not caplog.records
        seconds(1, busy=1.0)
        seconds(BUSY_SAMPLES_BEFORE_WARNING * 2, busy=1.0)
    assert set_to == [] and governor.changes == 0  # never changed: the count stays what was asked
    assert len(caplog.records) == 1  # once
    message = caplog.records[0].getMessage()
    assert "keep 1.0 of this run's 2 CPU cores busy" in message and "(cpu_threads=2)" in message
    assert "trainer.cpu_threads=1" in message


def test_cpu_seconds_reads_the_allowed_cpus_busy_time(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text(
        "cpu  300 0 30 900 10 0 0 0 0 0\n"
        "cpu0 100 0 10 300 5 0 0 0 0 0\n"
        "cpu1 200 0 20 600 5 0 0 0 0 0\n"
        "cpu10 50 0 0 0 0 0 0 5 0 0\n"
        "intr 12345\n"
    )
    ticks = os.sysconf("SC_CLK_TCK")
    assert cpu_seconds({1}, stat)[0] == pytest.approx(220 / ticks)  # user + system; idle, iowait left out
    assert cpu_seconds({0, 10}, stat)[0] == pytest.approx((110 + 55) / ticks)  # steal counts as busy
    assert cpu_seconds({0}, tmp_path / "absent") is None


def test_cpu_time_since_splits_the_cores_time_into_busy_idle_and_stolen(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu0 100 0 10 300 5 0 0 0 0 0\n")
    start = CpuClock(process_s=1.0, ticks=cpu_ticks({0}, stat))
    stat.write_text("cpu0 160 0 20 320 5 0 0 20 0 0\n")  # +70 busy, +20 idle, +20 stolen
    end = CpuClock(process_s=31.25, ticks=cpu_ticks({0}, stat))
    assert cpu_time_since(start, end) == {
        "process_cpu_s": 30.2,
        "cores_busy_share": round(70 / 110, 3),
        "cores_idle_share": round(20 / 110, 3),
        "cores_stolen_share": round(20 / 110, 3),
    }
    # Without /proc/stat (not Linux) only the process's own seconds.
    assert cpu_time_since(start, CpuClock(process_s=2.0, ticks=None)) == {"process_cpu_s": 1.0}
    assert describe_cpu_time(cpu_time_since(start, end)) == "0.5 CPU min, 18% of the cores' time stolen by the host"


# -- the run record ----------------------------------------------------------------------------------
def test_the_choice_is_logged_and_recorded_in_run_json_and_not_part_of_the_run_config(tmp_path, caplog, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # the automatic choice, following the load
    before = torch.get_num_threads()
    try:
        with caplog.at_level("INFO", logger="coconut.training.threads"):
            train(tiny_cfg(tmp_path, "trainer.max_epochs=1", "test=false", "trainer.cpu_threads=null"))
    finally:
        torch.set_num_threads(before)
    record = json.loads((tmp_path / "run.json").read_text())["cpu_threads"]
    wait = os.environ.get("OMP_WAIT_POLICY", "unset")
    assert record == {
        "threads": usable_cores(),
        "source": f"automatic: {usable_cores()} cores this process may use, fewer while other processes use them",
        "OMP_WAIT_POLICY": wait,
    }
    lines = [r.getMessage() for r in caplog.records if r.name == "coconut.training.threads" and r.levelname == "INFO"]
    assert lines == [f"CPU threads: {record['threads']} ({record['source']}) | OMP_WAIT_POLICY={wait}"]
    # Another thread count resumes the same run: the count is not what the run trains.
    assert run_config(tiny_cfg(tmp_path, "trainer.cpu_threads=3")) == run_config(tiny_cfg(tmp_path))
    assert "cpu_threads" not in json.loads((tmp_path / "run.json").read_text())["config"]["trainer"]
    # Where the wall time went: the process's CPU seconds and its cores' shares, which add up to 1.
    cpu_time = json.loads((tmp_path / "run.json").read_text())["cpu_time"]
    assert cpu_time["process_cpu_s"] > 0
    if sys.platform == "linux":
        shares = [cpu_time[f"cores_{k}_share"] for k in ("busy", "idle", "stolen")]
        assert sum(shares) == pytest.approx(1, abs=0.002) and all(0 <= s <= 1 for s in shares)
