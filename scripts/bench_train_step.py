"""Benchmark: a stage-3 COCONUT training step against a plain teacher-forced step of the same base
model on the same token sequences (forward + backward + AdamW as training configures it), measured
interleaved in one process, at each thread count in turn. The plain step is the one
chain-of-thought training takes: the same wrapper and loss, no thought loop.

    python scripts/bench_train_step.py                  # every model at 1 and 2 threads, one table
    python scripts/bench_train_step.py [--repeats 10] [--threads 1,2] [--only Llama] [--precision bf16]

Prints, per model and thread count, the median step time of each, their ratio (targets: <= 1.10x at
GPT-2-small size, <= 1.20x for the graph presets' Llama, <= 1.05x for the quickstart's model) and
the thought band's extra time (the COCONUT step's median minus the plain step's); on CPU also the
ratio of the median CPU time the process spent (steadier than wall time on a machine shared with
other work); and, once per model, the ratio of peak memory (target <= 1.10x): on CUDA the
allocator's peak; on CPU, where torch keeps no allocator statistics, the weights and optimizer
state plus the peak of the step's allocations as the profiler records them. The whole table is
printed again at the end in Markdown. Run it alone on the machine: other processes on the cores
make a second thread wait.
`--precision bf16` runs both steps under bf16 autocast, as `trainer.precision=bf16-mixed` does.
Sequences look like GSM8K-Aug at stage 3 with c=2 for the GPT-2 models: a 40-80 token question,
<|start-latent|>, 6 thoughts, <|end-latent|>, then 10-30 tokens of remaining steps and answer; like
the graph presets' stage 3 for their Llama: a 40-56 token edge list, 9 thoughts (between the markers
that those presets leave out), a 4-token answer.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from transformers import AutoConfig, AutoModelForCausalLM

import coconut
from coconut.core.model import ContinuousThoughtLM
from coconut.data.collate import collate_training

ROOT = Path(__file__).resolve().parent.parent

GSM8K_STAGE3 = {"thoughts": 6, "question": (40, 80), "rest": (10, 30)}
GRAPH_STAGE3 = {"thoughts": 9, "question": (40, 56), "rest": (4, 4)}
# The graph presets' model: conf/model/llama_tiny.yaml as they train it (tied, graph_stage0.yaml).
LLAMA_TINY = dict(OmegaConf.load(ROOT / "coconut/conf/model/llama_tiny.yaml").architecture, tie_word_embeddings=True)


def gpt2(layers: int, width: int, heads: int) -> dict:
    return {"model_type": "gpt2", "n_layer": layers, "n_embd": width, "n_head": heads, "n_positions": 256}


MODELS = {  # name: (architecture, batch, vocabulary, sequences)
    "tiny GPT-2 (4x256), GPT-2 vocabulary": (gpt2(4, 256, 4), 32, 50257, GSM8K_STAGE3),
    "tiny GPT-2 (4x256), quickstart vocabulary": (gpt2(4, 256, 4), 32, 300, GSM8K_STAGE3),
    "GPT-2-small size (12x768)": (gpt2(12, 768, 12), 8, 50257, GSM8K_STAGE3),
    "graph presets' Llama (2x128)": (LLAMA_TINY, 32, 384, GRAPH_STAGE3),
}


def make_batch(batch: int, vocab: int, thoughts: int, question: tuple, rest: tuple, seed: int = 0) -> dict:
    rng = random.Random(seed)
    latent, start, end = vocab - 1, vocab - 2, vocab - 3
    rows = []
    for _ in range(batch):
        question_ids = [rng.randrange(vocab - 3) for _ in range(rng.randint(*question))]
        rest_ids = [rng.randrange(vocab - 3) for _ in range(rng.randint(*rest))]
        rows.append(question_ids + [start] + [latent] * thoughts + [end] + rest_ids)
    labels = [[-100] * (r.index(end) + 1) + r[r.index(end) + 1 :] for r in rows]
    return collate_training(rows, labels, latent, pad_id=0) | {"latent": latent}


def cpu_peak_bytes(step, persistent: int) -> int:
    """Peak memory of one CPU step: what lives between steps (`persistent`: weights, optimizer
    state) plus the highest running total of the allocations the profiler sees during the step."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    # Each op's own allocations net of its own frees; frees outside any op are "[memory]" events.
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    running = peak = 0
    for event in events:
        running += event.self_cpu_memory_usage
        peak = max(peak, running)
    return persistent + peak


@dataclass
class Result:
    """One model at one thread count: median step times (s), their CPU-time ratio (CPU only) and
    peak memory (bytes), measured once per model."""

    name: str
    batch: int
    thoughts: int
    threads: int
    plain: float
    coconut: float
    cpu_ratio: float | None
    memory: tuple[str, int, int] | None  # (kind, plain, coconut)

    def line(self) -> str:
        cpu = f" (cpu time {self.cpu_ratio:.2f}x)" if self.cpu_ratio is not None else ""
        extra = (self.coconut - self.plain) * 1e3
        text = (
            f"{self.name:45s} batch {self.batch:2d}, {self.thoughts} thoughts, {self.threads} thread(s) | "
            f"step plain {self.plain * 1e3:7.1f} ms  coconut {self.coconut * 1e3:7.1f} ms  "
            f"ratio {self.coconut / self.plain:.2f}x{cpu}  band's extra time {extra:7.1f} ms"
        )
        if self.memory is not None:
            kind, plain, coconut = self.memory
            text += f" | {kind} plain {plain / 2**20:7.1f} MiB  coconut {coconut / 2**20:7.1f} MiB"
            text += f"  ratio {coconut / plain:.2f}x"
        return text


def bench(
    name: str,
    architecture: dict,
    batch_size: int,
    vocab: int,
    sequences: dict,
    repeats: int,
    device: str,
    bf16: bool,
    threads: tuple[int | None, ...] = (None,),
) -> list[Result]:
    """Times `name` at each of `threads` (None: torch's current count) in turn, in this process;
    prints one line per thread count and returns the results."""
    torch.manual_seed(0)
    architecture = dict(architecture)
    config = AutoConfig.for_model(architecture.pop("model_type"), vocab_size=vocab, **architecture)
    lm = AutoModelForCausalLM.from_config(config)
    lm.to(device).train()
    model = ContinuousThoughtLM(lm, latent_token_id=vocab - 1)
    # The same wrapper and loss with no id taken for a thought: the step CoT training takes, so that
    # the ratio is the thought loop's cost alone.
    plain_model = ContinuousThoughtLM(lm, latent_token_id=vocab)
    optimizer_cfg = OmegaConf.load(ROOT / "coconut/conf/train.yaml").optimizer  # as training
    optimizer = instantiate(optimizer_cfg)(params=lm.parameters())
    b = make_batch(batch_size, vocab, **sequences)
    ids, mask, pos, labels = (b[k].to(device) for k in ("input_ids", "attention_mask", "position_ids", "labels"))

    def step(which: ContinuousThoughtLM):
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = which(ids, mask, pos, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def coconut_step():
        step(model)

    def plain_step():  # the same tokens, latent ids read as ordinary tokens: a chain-of-thought step
        step(plain_model)

    def timed(step) -> tuple[float, float]:  # wall seconds, CPU seconds of this process
        if device == "cuda":
            torch.cuda.synchronize()
        start, start_cpu = time.perf_counter(), time.process_time()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, time.process_time() - start_cpu

    results = []
    for count in threads:
        if count is not None:
            torch.set_num_threads(count)
        for _ in range(3):  # warm-up
            plain_step(), coconut_step()
        times = {"plain": [], "coconut": []}
        for _ in range(repeats):  # interleaved, so drift hits both alike
            times["plain"].append(timed(plain_step))
            times["coconut"].append(timed(coconut_step))
        plain, coconut = (statistics.median(t for t, _ in times[k]) for k in ("plain", "coconut"))
        cpu_plain, cpu_coconut = (statistics.median(c for _, c in times[k]) for k in ("plain", "coconut"))
        memory = measure_memory(lm, optimizer, plain_step, coconut_step, device) if not results else None
        result = Result(
            name, batch_size, sequences["thoughts"], torch.get_num_threads(), plain, coconut,
            cpu_coconut / cpu_plain if device == "cpu" else None, memory,
        )  # fmt: skip
        print(result.line(), flush=True)
        results.append(result)
    return results


def measure_memory(lm, optimizer, plain_step, coconut_step, device: str) -> tuple[str, int, int]:
    """(kind, plain step's peak, COCONUT step's peak) in bytes."""
    if device == "cuda":
        peaks = {}
        for label, step in (("plain", plain_step), ("coconut", coconut_step)):
            torch.cuda.reset_peak_memory_stats()
            step()
            peaks[label] = torch.cuda.max_memory_allocated()
        return "peak allocated", peaks["plain"], peaks["coconut"]
    persistent = sum(t.numel() * t.element_size() for t in lm.parameters())
    persistent += sum(
        v.numel() * v.element_size() for st in optimizer.state.values() for v in st.values() if torch.is_tensor(v)
    )
    return "peak", cpu_peak_bytes(plain_step, persistent), cpu_peak_bytes(coconut_step, persistent)


def markdown(results: list[Result]) -> str:
    """The results as one Markdown table (the speed section of docs/results.md)."""
    rows = [
        "| model, batch, thoughts | threads | plain step | COCONUT step | ratio | band's extra time | memory |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        memory = f"{r.memory[2] / r.memory[1]:.2f}x" if r.memory else ""
        rows.append(
            f"| {r.name}, {r.batch}, {r.thoughts} | {r.threads} | {r.plain * 1e3:.1f} ms | {r.coconut * 1e3:.1f} ms "
            f"| {r.coconut / r.plain:.2f}x | {(r.coconut - r.plain) * 1e3:.1f} ms | {memory} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument(
        "--threads", default="1,2", help="torch CPU thread counts, each in turn in this process (default: 1,2)"
    )
    parser.add_argument("--only", default=None, help="run only models whose name contains this")
    parser.add_argument("--precision", choices=["32", "bf16"], default="32", help="bf16: steps under bf16 autocast")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    threads = tuple(int(t) for t in args.threads.split(",")) if device == "cpu" else (None,)
    print(
        f"device {device}, precision {args.precision}, torch {torch.__version__}, threads {threads}, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores, coconut from {Path(coconut.__file__).parent}"
    )
    results = []
    for name, spec in MODELS.items():
        if args.only is None or args.only in name:
            results += bench(
                name, *spec, repeats=args.repeats, device=device, bf16=args.precision == "bf16", threads=threads
            )
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end\n")
    print(markdown(results))


if __name__ == "__main__":
    main()
