"""Where a run's wall time went on the CPU, for `run.json`: the process's own CPU seconds and what
the cores it may use did meanwhile (busy, idle, and *stolen*: time the hypervisor gave this virtual
machine's cores to other guests).

Wall times from shared virtual machines are not comparable without it: on the 2-core VM the graph
presets were timed on, the host took 15% of the cores' time over a 20-second sample while one
training ran alone, and that training's updates took 0.13-0.23 s from minute to minute. Linux only
(`/proc/stat`); elsewhere the shares are left out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from coconut.training.threads import PROC_STAT, allowed_cpus, cpu_ticks


@dataclass(frozen=True)
class CpuClock:
    """A reading of the process's CPU seconds and its cores' /proc/stat counters."""

    process_s: float
    ticks: list[int] | None  # coconut.training.threads.cpu_ticks

    @classmethod
    def read(cls, stat: Path = PROC_STAT) -> CpuClock:
        own = os.times()
        return cls(process_s=own.user + own.system, ticks=cpu_ticks(allowed_cpus(), stat))


def cpu_time_since(start: CpuClock, end: CpuClock | None = None) -> dict:
    """`process_cpu_s`, and the busy / idle / stolen shares of its cores' time in between."""
    end = end or CpuClock.read()
    record = {"process_cpu_s": round(end.process_s - start.process_s, 1)}
    if start.ticks is None or end.ticks is None:
        return record
    user, nice, system, idle, iowait, irq, softirq, steal = (b - a for a, b in zip(start.ticks, end.ticks))
    total = user + nice + system + idle + iowait + irq + softirq + steal
    if total > 0:
        record.update(
            cores_busy_share=round((user + nice + system + irq + softirq) / total, 3),
            cores_idle_share=round((idle + iowait) / total, 3),
            cores_stolen_share=round(steal / total, 3),
        )
    return record


def describe_cpu_time(cpu_time: dict) -> str:
    """One line for the log: "12.3 CPU min, 15% of the cores' time stolen by the host"."""
    text = f"{cpu_time['process_cpu_s'] / 60:.1f} CPU min"
    if "cores_stolen_share" in cpu_time:
        text += f", {cpu_time['cores_stolen_share']:.0%} of the cores' time stolen by the host"
    return text
