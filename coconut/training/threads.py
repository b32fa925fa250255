"""CPU threads: how many threads torch uses on a CPU run, chosen from the cores this process may use
and adapted to what other processes leave free.

On a CPU whose cores something else also uses (a laptop with a browser, CI, a second job, sweep jobs
side by side), OpenMP threads that wait for each other hold cores that another process needs and are
held up by it: on 2 cores beside two busy processes (issue 15), the quickstart's training step took
198 ms with 1 thread and 2032 ms with torch's default of 2. Measured on this project's 2-core machine
(scripts/bench_cpu_load.py), the remedies the issue named trade one case for the other: idle OpenMP
threads that sleep (`OMP_WAIT_POLICY=PASSIVE`) hold up under load but cost 1.6-1.9x on an idle
machine, where every small op then wakes its threads; a shorter spin (`GOMP_SPINCOUNT=50000`) keeps
the idle speed but not the loaded one. What holds in both: as many threads as the cores other
processes leave free, and one thread (no OpenMP team, nothing to wait for) when they leave none.

- `choose_cpu_threads()`: the most threads a run uses, a pure function of the cores this process may
  use (`os.sched_getaffinity`: SLURM, taskset, cpusets; hyperthreads counted once; a cgroup quota)
  and the config. torch's own default is the machine's physical cores, however few the process is
  allowed (a SLURM job granted 4 cores of a 64-core node would run 64 threads).
- `threads_for_load()`, `ThreadGovernor`: every second or so (checked between batches), the cores
  the other processes used on this process's CPUs (/proc/stat minus this process's own CPU time);
  torch's thread count follows what they leave free, between 1 and that most.
- `apply_cpu_threads()`: both, on CPU runs only; a GPU run keeps torch's default. An environment
  that sets OMP_WAIT_POLICY, GOMP_SPINCOUNT or OMP_NUM_THREADS keeps them (OMP_NUM_THREADS fixes the count).

This module imports torch only inside the functions that set threads.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from coconut.core.errors import ConfigError

log = logging.getLogger(__name__)

WAIT_POLICY = "OMP_WAIT_POLICY"
NUM_THREADS = "OMP_NUM_THREADS"
PROC_STAT = Path("/proc/stat")
CPU_TOPOLOGY = Path("/sys/devices/system/cpu")
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2 CPU quota (docker --cpus, Kubernetes limits)


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
    import torch  # noqa: PLC0415

    mps = getattr(torch.backends, "mps", None)
    return not torch.cuda.is_available() and not (mps is not None and mps.is_available())


# -- following the load -------------------------------------------------------------------------------
def threads_for_load(most: int, cores: int, others_busy: float) -> int:
    """The threads to use when other processes kept `others_busy` of this process's `cores` busy: the
    cores they leave free (a quarter of a core of theirs is tolerated as noise), between 1 and `most`."""
    return max(1, min(most, math.floor(cores - others_busy + 0.25)))


def cpu_ticks(cpus: set[int], stat: Path = PROC_STAT) -> list[int] | None:
    """/proc/stat's counters summed over `cpus`, in clock ticks since boot: user, nice, system, idle,
    iowait, irq, softirq, steal (steal: time the hypervisor gave these cores to other guests).
    None without /proc/stat."""
    try:
        lines = stat.read_text().splitlines()
    except OSError:
        return None
    total = [0] * 8
    for line in lines:
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            numbers = [int(v) for v in values[:8]] + [0] * (8 - len(values[:8]))
            total = [t + n for t, n in zip(total, numbers)]
    return total


def cpu_seconds(cpus: set[int], stat: Path = PROC_STAT) -> tuple[float, float] | None:
    """(seconds `cpus` were busy, this process's CPU seconds) since boot; None without /proc/stat."""
    ticks = cpu_ticks(cpus, stat)
    if ticks is None:
        return None
    busy = sum(ticks) - ticks[3] - ticks[4]  # all but idle and iowait: steal counts as busy
    ticks_per_second = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    own = os.times()
    return busy / ticks_per_second, own.user + own.system


# A fixed count's warning waits for this many samples in a row (about a second each) with fewer free
# cores than threads: a short command beside the run (git, an editor's linter) is not worth one.
BUSY_SAMPLES_BEFORE_WARNING = 5


@dataclass
class ThreadGovernor:
    """Between 1 and `most` threads, following the cores other processes leave free on `cpus`;
    `update()` is called between batches and samples at most every `interval` seconds.

    With `fixed_by` (what fixed the count, e.g. "cpu_threads=2") it keeps `most` threads
    and warns once instead, when other processes leave fewer free cores than that for
    BUSY_SAMPLES_BEFORE_WARNING samples: fixed threads then wait on each other (on 2 cores beside
    one busy process, the quickstart's two threads took 0.20-0.25 s a step where one took 0.10-0.11;
    scripts/bench_cpu_load.py once measured 4.7 s against 55 ms)."""

    most: int
    cpus: set[int]
    interval: float = 1.0
    clock: Callable[[], float] = time.monotonic
    sample: Callable[[], tuple[float, float] | None] | None = None
    set_threads: Callable[[int], None] | None = None
    fixed_by: str | None = None
    threads: int = 0
    changes: int = 0
    busy_samples: int = 0
    warned: bool = False
    _last: tuple[float, float, float] | None = field(default=None, repr=False)

    def __post_init__(self):
        self.sample = self.sample or (lambda: cpu_seconds(self.cpus))
        self.threads = self.threads or self.most

    def update(self) -> int:
        now = self.clock()
        if self._last is not None and now - self._last[0] < self.interval:
            return self.threads
        sampled = self.sample()
        if sampled is None:
            return self.threads
        if self._last is not None:
            then, busy, own = self._last
            others = max(0.0, (sampled[0] - busy) - (sampled[1] - own)) / (now - then)
            threads = threads_for_load(self.most, len(self.cpus), others)
            if self.fixed_by is not None:
                self._warn_if_held_up(threads, others)
            elif threads != self.threads:
                log.debug("CPU threads %d -> %d: other processes kept %.2f cores busy", self.threads, threads, others)
                self.threads, self.changes = threads, self.changes + 1
                if self.set_threads is not None:
                    self.set_threads(threads)
                else:
                    import torch  # noqa: PLC0415

                    torch.set_num_threads(threads)
        self._last = (now, *sampled)
        return self.threads

    def _warn_if_held_up(self, free_cores: int, others: float) -> None:
        self.busy_samples = self.busy_samples + 1 if free_cores < self.most else 0
        if self.busy_samples >= BUSY_SAMPLES_BEFORE_WARNING and not self.warned:
            self.warned = True
            log.warning(
                "other processes keep %.1f of this run's %d CPU cores busy, and its %d CPU threads are fixed "
                "(%s): fixed threads on busy cores wait on each other, and a step can take several times one "
                "thread's time (docs/results.md, CPU threads under load). "
                "Give trainer.cpu_threads=1 (coconut-eval: cpu_threads=1), or null to follow the load "
                "(a run's last bits then depend on the load: docs/runs.md#cpu-threads).",
                others,
                len(self.cpus),
                self.most,
                self.fixed_by,
            )


@dataclass
class CpuThreads:
    record: dict  # what run.json records: threads, source, OMP_WAIT_POLICY
    # None: one fixed thread, or a GPU run; with `fixed_by`: a fixed count that only warns under load
    governor: ThreadGovernor | None

    def update(self) -> None:
        if self.governor is not None:
            self.governor.update()

    def governed(self, batches):
        """`batches` (re-iterable, e.g. a DataLoader) with `update()` between batches."""
        return _Governed(batches, self)


class _Governed:
    def __init__(self, batches, threads: CpuThreads):
        self.batches, self.threads = batches, threads

    def __iter__(self):
        for batch in self.batches:
            self.threads.update()
            yield batch

    def __len__(self) -> int:
        return len(self.batches)


def apply_cpu_threads(configured: int | None, *, device: str, processes: int = 1) -> CpuThreads:
    """On a CPU run, sets torch's thread count (`choose_cpu_threads`) and, when the choice is automatic,
    a governor that follows the load; a GPU run keeps torch's default. Logs the choice in one line."""
    import torch  # noqa: PLC0415

    governor = None
    if is_cpu_run(device):
        choice = choose_cpu_threads(
            usable_cores(), configured, env_threads=os.environ.get(NUM_THREADS), processes=processes
        )
        torch.set_num_threads(choice.threads)
        record = {"threads": choice.threads, "source": choice.source}
        if cpu_seconds(allowed_cpus()) is not None:
            if choice.source.startswith("automatic"):
                governor = ThreadGovernor(choice.threads, allowed_cpus())
                record["source"] += ", fewer while other processes use them"
            elif choice.threads > 1:  # one thread has no team to wait on
                fixed_by = choice.source if choice.source.startswith(NUM_THREADS) else f"cpu_threads={choice.threads}"
                governor = ThreadGovernor(choice.threads, allowed_cpus(), fixed_by=fixed_by)
    else:
        record = {"threads": torch.get_num_threads(), "source": "torch's default: not changed on a GPU run"}
    record[WAIT_POLICY] = os.environ.get(WAIT_POLICY, "unset")
    log.info("CPU threads: %d (%s) | %s=%s", record["threads"], record["source"], WAIT_POLICY, record[WAIT_POLICY])
    return CpuThreads(record, governor)
