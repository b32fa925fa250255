"""Benchmark: batched, KV-cached generation through continuous thoughts (`coconut.core.generation.generate`,
batch 32) against one question at a time without a cache (`generate_uncached`, the official
implementation's way), same model and questions, measured in one run.

    python scripts/bench_generate.py [--questions 64] [--batch 32] [--threads 2] [--ckpt path.ckpt] [--samples 8]

Prints questions per second of each and their ratio (target: >= 10x on the tiny model on CPU), and
checks that both produce the same tokens. Then sampling: `--samples` answers per question in one
sampled pass (`num_samples`, the prompt and thoughts computed once, the cache copied per sample)
against as many separate greedy passes over the same batches, in samples per second (target: the
sampled pass faster per sample); and that sampling at temperature 0 gives the greedy tokens.

Without --ckpt the model is the quickstart's tiny GPT-2 (conf/model/gpt2_tiny.yaml) with random
weights on built-in arithmetic questions at stage 3 (3 thoughts); it rarely emits eos, so every
answer runs to --max-new-tokens. With --ckpt, a trained checkpoint on its own test questions at its
final stage.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from coconut.core.base_model import load_base_model
from coconut.core.curriculum import Curriculum
from coconut.core.generation import generate, generate_uncached
from coconut.core.methods import Method
from coconut.core.model import ContinuousThoughtLM
from coconut.core.tokens import special_ids
from coconut.data.collate import collate_prompts
from coconut.data.sequences import build_prompt, tokenize_records
from coconut.data.synthetic import generate_arithmetic

ROOT = Path(__file__).resolve().parent.parent


def tiny_model_and_prompts(n: int) -> tuple[ContinuousThoughtLM, list[list[int]], int]:
    records = generate_arithmetic(n + 2000, num_steps=4, operand_max=9, result_max=20, seed=0)
    model_cfg = OmegaConf.load(ROOT / "coconut" / "conf" / "model" / "gpt2_tiny.yaml")
    texts = (t for r in records for t in (r.question, *r.steps, "### " + r.answer))
    torch.manual_seed(0)
    tokenizer, lm, ids = load_base_model(model_cfg, texts)
    curriculum = Curriculum(epochs_per_stage=1, max_latent_stage=3, c_thought=1)
    method = Method("coconut")
    samples = tokenize_records(records[:n], tokenizer)
    prompts = [build_prompt(s, 3, method, curriculum, ids) for s in samples]
    return ContinuousThoughtLM(lm, ids.latent).eval(), prompts, ids.eos


def checkpoint_model_and_prompts(path: str, n: int) -> tuple[ContinuousThoughtLM, list[list[int]], int]:
    from coconut.commands.build import build_curriculum, build_method  # noqa: PLC0415
    from coconut.data.splits import load_splits  # noqa: PLC0415
    from coconut.training.checkpoints import load_checkpoint  # noqa: PLC0415
    from coconut.training.lit_module import rebuild_from_checkpoint  # noqa: PLC0415

    checkpoint = load_checkpoint(path, "--ckpt")
    config = OmegaConf.create(checkpoint["hyper_parameters"]["config"])
    model, tokenizer = rebuild_from_checkpoint(checkpoint)
    ids = special_ids(tokenizer)
    method, curriculum = build_method(config), build_curriculum(config)
    records = load_splits(config.data, ("test",))["test"][:n]
    stage = method.stage_at_epoch(curriculum, checkpoint["epoch"])
    prompts = [build_prompt(s, stage, method, curriculum, ids) for s in tokenize_records(records, tokenizer)]
    return model.eval(), prompts, ids.eos


def batched(model, prompts, eos, batch_size, max_new_tokens, **sampling) -> tuple[list[list[int]], float]:
    """Answers (num_samples per prompt, question-major) and the seconds they took."""
    outputs, start = [], time.perf_counter()
    for i in range(0, len(prompts), batch_size):
        batch = collate_prompts(prompts[i : i + batch_size], pad_id=eos)
        out = generate(
            model,
            batch["input_ids"],
            batch["attention_mask"],
            batch["position_ids"],
            eos_token_id=eos,
            max_new_tokens=max_new_tokens,
            **sampling,
        )
        outputs += out.tokens
    return outputs, time.perf_counter() - start


def one_at_a_time(model, prompts, eos, max_new_tokens) -> tuple[list[list[int]], float]:
    start = time.perf_counter()
    outputs = [generate_uncached(model, p, eos_token_id=eos, max_new_tokens=max_new_tokens) for p in prompts]
    return outputs, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument(
        "--uncached-questions", type=int, default=16, help="the slow baseline answers only the first N (rates compare)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ckpt", default=None, help="a coconut-train checkpoint instead of the random tiny model")
    parser.add_argument("--samples", type=int, default=8, help="answers per question for the sampling part (0: skip)")
    parser.add_argument("--temperature", type=float, default=0.7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.ckpt:
        model, prompts, eos = checkpoint_model_and_prompts(args.ckpt, args.questions)
    else:
        model, prompts, eos = tiny_model_and_prompts(args.questions)
    thoughts = sum(p.count(model.latent_token_id) for p in prompts) / len(prompts)
    print(f"{len(prompts)} questions, {thoughts:.1f} thoughts each, up to {args.max_new_tokens} new tokens")

    batched(model, prompts[: args.batch], eos, args.batch, 2)  # warm-up
    fast, fast_seconds = batched(model, prompts, eos, args.batch, args.max_new_tokens)
    slow, slow_seconds = one_at_a_time(model, prompts[: args.uncached_questions], eos, args.max_new_tokens)
    same = sum(a == b for a, b in zip(fast, slow))
    tokens = sum(map(len, fast)) / len(fast)
    print(f"mean answer length: {tokens:.1f} tokens; identical outputs: {same}/{len(slow)}")
    fast_rate, slow_rate = len(fast) / fast_seconds, len(slow) / slow_seconds
    print(f"batched (batch {args.batch}, KV cache): {fast_rate:8.2f} questions/s ({len(fast)} questions)")
    print(f"one at a time, no cache:          {slow_rate:8.2f} questions/s ({len(slow)} questions)")
    print(f"speed-up: {fast_rate / slow_rate:.1f}x (target >= 10x)")
    if args.samples > 1:
        bench_sampling(model, prompts, eos, args, fast)


def bench_sampling(model, prompts, eos, args, greedy_tokens) -> None:
    k = args.samples
    at_zero, _ = batched(model, prompts[: args.batch], eos, args.batch, args.max_new_tokens, num_samples=2)
    same = at_zero == [t for t in greedy_tokens[: args.batch] for _ in range(2)]
    print(f"\nsampling at temperature 0 equals greedy: {same}")
    generator = torch.Generator().manual_seed(0)
    sampled, sampled_seconds = batched(
        model, prompts, eos, args.batch, args.max_new_tokens,
        num_samples=k, temperature=args.temperature, generator=generator,
    )  # fmt: skip
    repeated_seconds = 0.0
    for _ in range(k):
        _, seconds = batched(model, prompts, eos, args.batch, args.max_new_tokens)
        repeated_seconds += seconds
    n = len(prompts) * k
    tokens = sum(map(len, sampled)) / len(sampled)
    sampled_rate, repeated_rate = n / sampled_seconds, n / repeated_seconds
    print(f"{k} samples per question, T={args.temperature}, mean sample length {tokens:.1f} tokens")
    rows = f"batch {args.batch} questions = {args.batch * k} rows"
    print(f"sampled, num_samples={k} ({rows}): {sampled_rate:8.2f} samples/s")
    print(f"{k} separate greedy passes (batch {args.batch}): {repeated_rate:8.2f} samples/s")
    print(f"sampled pass per sample: {sampled_rate / repeated_rate:.2f}x the separate passes' rate (target > 1)")


if __name__ == "__main__":
    main()
