"""Benchmark: a PCCoT training step (method=pccot, T = 1, 2, 3 Jacobi iterations; core/jacobi.py)
against the sequential COCONUT step and the plain chain-of-thought step, on the same batch and the
same model (forward + backward + AdamW as training configures it), interleaved in one process.

    python scripts/bench_pccot.py                        # every model of bench_train_step.py
    python scripts/bench_pccot.py [--repeats 10] [--threads 1] [--iterations 1,2,3] [--only quickstart]

Prints, per model, the median wall time of each step and its ratio to the COCONUT step (PCCoT's
claim: its band costs T + 1 passes of the whole band instead of one single-column pass per thought),
then the table again in Markdown. The batches are bench_train_step.py's (GSM8K-Aug-like at stage 3:
6 thoughts; the graph presets' Llama: 9). Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from bench_train_step import MODELS, ROOT, make_batch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from transformers import AutoConfig, AutoModelForCausalLM

from coconut.core.model import ContinuousThoughtLM


def bench(name, architecture, batch_size, vocab, sequences, repeats, iterations, device="cpu") -> dict[str, float]:
    """Median step seconds of `cot`, `coconut` and `pccot T=t` for each t in `iterations`; prints one line."""
    torch.manual_seed(0)
    architecture = dict(architecture)
    config = AutoConfig.for_model(architecture.pop("model_type"), vocab_size=vocab, **architecture)
    lm = AutoModelForCausalLM.from_config(config).to(device).train()
    latent = vocab - 1
    models = {
        "cot": ContinuousThoughtLM(lm, latent_token_id=vocab),  # no id is a thought: the plain step
        "coconut": ContinuousThoughtLM(lm, latent),
        **{f"pccot T={t}": ContinuousThoughtLM(lm, latent, jacobi_iterations=t) for t in iterations},
    }
    optimizer = instantiate(OmegaConf.load(ROOT / "coconut/conf/train.yaml").optimizer)(params=lm.parameters())
    b = make_batch(batch_size, vocab, **sequences)
    ids, mask, pos, labels = (b[k].to(device) for k in ("input_ids", "attention_mask", "position_ids", "labels"))

    def timed(model: ContinuousThoughtLM) -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        model(ids, mask, pos, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for model in models.values():  # warm-up
        timed(model)
    times: dict[str, list[float]] = {key: [] for key in models}
    for _ in range(repeats):  # interleaved, so drift hits all alike
        for key, model in models.items():
            times[key].append(timed(model))
    medians = {key: statistics.median(t) for key, t in times.items()}
    parts = [f"{key} {1e3 * s:.1f} ms ({s / medians['coconut']:.2f}x)" for key, s in medians.items()]
    print(f"{name}, batch {batch_size}, {sequences['thoughts']} thoughts, {torch.get_num_threads()} threads: "
          + ", ".join(parts), flush=True)  # fmt: skip
    return medians


def markdown(rows: list[tuple[str, dict[str, float]]]) -> str:
    keys = list(rows[0][1])
    lines = ["| model | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for name, medians in rows:
        cells = [f"{1e3 * medians[k]:.1f} ms ({medians[k] / medians['coconut']:.2f}x)" for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--iterations", default="1,2,3", help="PCCoT's T values, each a step (default: 1,2,3)")
    parser.add_argument("--only", default=None, help="run only models whose name contains this")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads is not None and device == "cpu":
        torch.set_num_threads(args.threads)
    iterations = tuple(int(t) for t in args.iterations.split(","))
    load = os.getloadavg()[0]
    print(f"device {device}, torch {torch.__version__}, load average {load:.1f} on {os.cpu_count()} cores")
    rows = []
    for name, (architecture, batch, vocab, sequences) in MODELS.items():
        if args.only is None or args.only in name:
            rows.append((name, bench(name, architecture, batch, vocab, sequences, args.repeats, iterations, device)))
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
