"""Evaluation speed: coconut-eval's answers (batched, KV-cached through the thoughts and the text,
legibility not measured) against the official code's batch-1 generation on the same checkpoint and
prompts, and whether both write the same answers.

    python scripts/bench_eval.py ckpt_path=<checkpoint> [data=gsm8k] [limit=1319] \\
        [--official /path/to/facebookresearch/coconut] [--official-limit 100] [--threads 1]

The positional arguments are coconut-eval's (Hydra overrides); `legibility.measure=false` is added.
Prints coconut-eval's questions per second over the answering alone (report.json's `latency`) and
over the whole evaluation (loading the checkpoint, tokenizing, answering, writing the report), then
the official generation's questions per second on the first `--official-limit` of the same prompts
and how many of their answers equal coconut-eval's.

The official generation: `--official` names a clone of facebookresearch/coconut (or its coconut.py),
whose `Coconut.generate` runs as written; the only adapter is for the transformers version (the
official code passes and reads the KV cache as a list of (key, value) per layer, which transformers
5 replaced by `DynamicCache`). Without `--official`, `official_generate` below, the official semantics
re-implemented as tests/test_foreign_checkpoints.py checks them: one question at a time, each thought
the last hidden state over everything before it, then greedy tokens each over the whole sequence
without a cache. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from hydra import compose, initialize_config_dir
from torch import nn
from transformers import DynamicCache

from coconut import CONFIG_DIR
from coconut.commands.evaluate import prepare_questions, run_evaluation


def eval_config(overrides: list[str], output_dir: Path):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(
            config_name="eval", overrides=[*overrides, "legibility.measure=false", f"paths.output_dir={output_dir}"]
        )


def prompts_of(loader) -> list[list[int]]:
    """The prompt token ids of every question, without the left padding, in the loader's order."""
    prompts = []
    for batch in loader:
        for ids, mask in zip(batch["input_ids"], batch["attention_mask"]):
            prompts.append(ids[mask.bool()].tolist())
    return prompts


@torch.no_grad()
def official_generate(lm, prompt: list[int], latent_id: int, eos: int, max_new_tokens: int) -> list[int]:
    """The official semantics, one question, no cache (as tests/test_foreign_checkpoints.py)."""
    embeds = lm.get_input_embeddings()(torch.tensor([prompt])).clone()  # (1, T, D)
    for position in [i for i, t in enumerate(prompt) if t == latent_id]:
        hidden = lm(inputs_embeds=embeds[:, :position], output_hidden_states=True).hidden_states[-1]
        embeds[0, position] = hidden[0, -1]
    tokens = []
    for _ in range(max_new_tokens):
        logits = lm(inputs_embeds=embeds).logits[0, -1]
        logits[latent_id] = float("-inf")
        token = int(logits.argmax())
        if token == eos:
            break
        tokens.append(token)
        embeds = torch.cat([embeds, lm.get_input_embeddings()(torch.tensor([[token]]))], dim=1)
    return tokens


class LegacyCache(nn.Module):
    """The base model as the official code calls it under transformers 4: `past_key_values` a list of
    (key, value) per layer, given and returned; everything else passed through."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm
        # transformers 5.2x names the cache argument `cache` (`past_key_values` deprecated)
        self.keyword = "cache" if "cache" in inspect.signature(lm.forward).parameters else "past_key_values"

    def get_input_embeddings(self):
        return self.lm.get_input_embeddings()

    def forward(self, past_key_values=None, **kwargs):
        cache = DynamicCache(config=self.lm.config)
        for layer, (keys, values) in enumerate(past_key_values or []):
            cache.update(keys, values, layer)
        out = self.lm(**{self.keyword: cache}, use_cache=True, **kwargs)
        returned = getattr(out, "cache", None) or out.past_key_values
        legacy = [(layer.keys, layer.values) for layer in returned.layers]
        return SimpleNamespace(logits=out.logits, hidden_states=out.hidden_states, past_key_values=legacy)


def official_coconut(path: Path, lm, tokenizer, latent_id: int):
    """facebookresearch/coconut's `Coconut` around `lm` (its coconut.py loaded from `path`)."""
    file = path / "coconut.py" if path.is_dir() else path
    spec = importlib.util.spec_from_file_location("official_coconut", file)  # not `coconut`: this package's name
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|start-latent|>", "<|end-latent|>")}
    return module.Coconut(
        LegacyCache(lm), latent_id, ids["<|start-latent|>"], ids["<|end-latent|>"], tokenizer.eos_token_id
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="+", help="coconut-eval's overrides: ckpt_path=... [data=...] [limit=...]")
    parser.add_argument("--official", type=Path, default=None, help="a clone of facebookresearch/coconut")
    parser.add_argument("--official-limit", type=int, default=100, help="questions the official generation answers")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads for both (default: automatic)")
    args = parser.parse_args()
    overrides = list(args.overrides) + ([f"cpu_threads={args.threads}"] if args.threads else [])
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        report = run_evaluation(eval_config(overrides, Path(folder) / "eval"))
        whole = time.perf_counter() - start
        rows = (Path(folder) / "eval" / "samples.jsonl").read_text().splitlines()
        generated = [json.loads(row)["generated"] for row in rows]
        questions = prepare_questions(eval_config(overrides, Path(folder) / "prompts"))
    n, answering = report["n"], report["latency"]["seconds"]
    print(
        f"coconut-eval, {report['dataset']} {report['split']}, {n} questions, batch {questions.loader.batch_size}, "
        f"{torch.get_num_threads()} threads: {n / answering:.2f} questions/s answering ({answering:.1f} s), "
        f"{n / whole:.2f} questions/s for the whole evaluation ({whole:.1f} s), accuracy {report['accuracy']:.4f}"
    )
    model, tokenizer = questions.loaded.model, questions.loaded.tokenizer
    model.eval()
    lm, latent, eos = model.lm, model.latent_token_id, tokenizer.eos_token_id
    prompts = prompts_of(questions.loader)[: args.official_limit]
    official = official_coconut(args.official, lm, tokenizer, latent) if args.official else None
    times, same = [], 0
    for position, prompt in enumerate(prompts):
        start = time.perf_counter()
        if official is not None:
            with torch.no_grad():
                ids = torch.tensor([prompt])
                out = official.generate(ids, torch.ones_like(ids), max_new_tokens=questions.max_new_tokens)
            tokens = out[0, len(prompt) :].tolist()
        else:
            tokens = official_generate(lm, prompt, latent, eos, questions.max_new_tokens)
        times.append(time.perf_counter() - start)
        same += tokenizer.decode(tokens, skip_special_tokens=True) == generated[position]
    kind = f"official code ({args.official})" if official is not None else "official semantics (re-implemented)"
    per_question = statistics.mean(times)
    print(
        f"{kind}, batch 1, no cache: {1 / per_question:.2f} questions/s over the first {len(prompts)} "
        f"({sum(times):.1f} s); the same answer as coconut-eval in {same} of {len(prompts)}; "
        f"coconut-eval answers {per_question * n / answering:.1f}x as many questions a second"
    )


if __name__ == "__main__":
    main()
