"""CPU threads: how many threads torch uses on a CPU run, and whether idle OpenMP threads spin or sleep.

On a CPU whose cores something else also uses (a laptop with a browser, CI, a second job, sweep jobs
side by side), OpenMP threads that spin while they wait for work hold on to cores that another
process needs. On 2 cores beside two busy processes (issue 15), the quickstart's training step took
198 ms with 1 thread, 2032 ms with torch's default of 2 threads, and 248 ms with 2 threads and
`OMP_WAIT_POLICY=PASSIVE` (threads that sleep). Two parts, both used by every entry point:

- `prefer_passive_wait()`: `OMP_WAIT_POLICY=PASSIVE` unless the environment sets it. OpenMP reads it
  once, when torch loads it, so the entry points call this before anything imports torch:
  `coconut/cli/__init__.py` (coconut-train, coconut-eval), `coconut.data.prepare.main`
  (coconut-data) and the scripts/bench_*.py. Child processes (DDP workers, dataloader workers, sweep
  jobs) inherit it.
- `choose_cpu_threads()`: the thread count, a pure function of the cores this process may use and
  the config; `apply_cpu_threads()` sets it with `torch.set_num_threads` on CPU runs only. torch's
  own default is the machine's physical cores, however few of them the process is allowed (a
  SLURM job granted 4 cores of a 64-core node would run 64 threads).

This module imports torch only inside `apply_cpu_threads` and `is_cpu_run`.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from coconut.core.errors import ConfigError

log = logging.getLogger(__name__)

WAIT_POLICY = "OMP_WAIT_POLICY"
NUM_THREADS = "OMP_NUM_THREADS"
CPU_TOPOLOGY = Path("/sys/devices/system/cpu")
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2 CPU quota (docker --cpus, Kubernetes limits)

# Whether prefer_passive_wait() came too late to matter: torch (and its OpenMP) already loaded.
_late = False


def prefer_passive_wait(environ=os.environ) -> str:
    """Sets `OMP_WAIT_POLICY=PASSIVE` in `environ` unless it holds a value already; returns the value in effect."""
    global _late
    if WAIT_POLICY not in environ:
        environ[WAIT_POLICY] = "PASSIVE"
        _late = environ is os.environ and "torch" in sys.modules
    return environ[WAIT_POLICY]


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    source: str  # why this many, for the start-up line and run.json


def choose_cpu_threads(
    allowed_cores: int, configured: int | None = None, *, env_threads: str | None = None, processes: int = 1
) -> ThreadChoice:
    """The torch thread count of a CPU run.

    `configured` (`trainer.cpu_threads`, `cpu_threads` in coconut-eval) wins; else `OMP_NUM_THREADS`
    (`env_threads`) if the environment sets a positive count; else the `allowed_cores` this process
    may use (physical cores of its CPU affinity, bounded by its CPU quota) shared among the
    `processes` that run on this machine (CPU DDP), at least 1.
    """
    if configured is not None:
        if isinstance(configured, bool) or not isinstance(configured, int) or configured < 1:
            raise ConfigError(
                f"cpu_threads must be an integer >= 1 (or null for the automatic choice), got {configured!r}"
            )
        return ThreadChoice(configured, "set by hand")
    if env_threads is not None and env_threads.strip().isdigit() and int(env_threads) >= 1:
        return ThreadChoice(int(env_threads), f"{NUM_THREADS}={int(env_threads)}")
    processes = max(1, processes)
    threads = max(1, allowed_cores // processes)
    shared = f" shared by {processes} processes" if processes > 1 else ""
    return ThreadChoice(threads, f"automatic: {allowed_cores} cores this process may use{shared}")


def allowed_cpus() -> set[int]:
    """The logical CPUs this process may run on (its affinity: SLURM, taskset, docker --cpuset-cpus)."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return set(range(os.cpu_count() or 1))


def physical_cores(cpus: set[int], topology: Path = CPU_TOPOLOGY) -> int:
    """How many physical cores `cpus` span (hyperthreads of one core count once); len(cpus) when the
    topology is unknown."""
    cores = set()
    for cpu in cpus:
        try:
            package = (topology / f"cpu{cpu}" / "topology" / "physical_package_id").read_text().strip()
            core = (topology / f"cpu{cpu}" / "topology" / "core_id").read_text().strip()
        except OSError:
            return len(cpus)
        cores.add((package, core))
    return len(cores) or len(cpus)


def cpu_quota(cpu_max: Path = CGROUP_CPU_MAX) -> int | None:
    """The CPUs a cgroup v2 quota grants (`200000 100000` -> 2), rounded up; None without a quota."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
        return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):  # no file, or "max 100000": no quota
        return None


def usable_cores() -> int:
    """Physical cores of this process's CPU affinity, bounded by its cgroup CPU quota."""
    cpus = allowed_cpus()
    cores = physical_cores(cpus)
    quota = cpu_quota()
    return min(cores, quota) if quota else cores


def is_cpu_run(device: str) -> bool:
    """Whether `device` (Lightning's `trainer.accelerator`, or coconut-eval's `device`) runs on the CPU:
    `cpu`, or `auto` on a machine without CUDA or MPS."""
    if device != "auto":
        return device == "cpu"
    import torch  # noqa: PLC0415 (only when asked: the module is imported before torch loads)

    mps = getattr(torch.backends, "mps", None)
    return not torch.cuda.is_available() and not (mps is not None and mps.is_available())


def apply_cpu_threads(configured: int | None, *, device: str, processes: int = 1) -> dict:
    """Sets torch's thread count on a CPU run (`choose_cpu_threads`); leaves it on a GPU run. Logs the
    choice in one line and returns it as recorded in run.json: threads, source, OMP_WAIT_POLICY."""
    import torch  # noqa: PLC0415

    wait = os.environ.get(WAIT_POLICY, "unset")
    wait_note = " (set after torch loaded: no effect here)" if _late else ""
    if is_cpu_run(device):
        choice = choose_cpu_threads(
            usable_cores(), configured, env_threads=os.environ.get(NUM_THREADS), processes=processes
        )
        torch.set_num_threads(choice.threads)
        record = {"threads": choice.threads, "source": choice.source}
    else:
        record = {"threads": torch.get_num_threads(), "source": "torch's default: not changed on a GPU run"}
    record[WAIT_POLICY] = wait + wait_note
    log.info("CPU threads: %d (%s) | %s=%s", record["threads"], record["source"], WAIT_POLICY, record[WAIT_POLICY])
    return record
