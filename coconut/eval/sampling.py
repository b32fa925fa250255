"""Sampled answers and what they buy: majority-vote accuracy (self-consistency, Wang et al. 2023)
and pass@k (the unbiased estimator of Chen et al. 2021), beside the greedy accuracy.

Each question is answered `num_samples` times at `temperature` / `top_p` in one batched pass
(`coconut.core.generation.generate`): the prompt and its continuous thoughts are computed once and
stay deterministic, only the written tokens are sampled. The cost counted per question is what the
model spent on it: its thoughts plus every sample's tokens (`tokens_per_question`), and the
sequential passes of its prompt once plus each sample's decoding passes (`forward_passes_per_question`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from coconut.core.generation import generate
from coconut.core.model import ContinuousThoughtLM
from coconut.data.records import Record
from coconut.eval.answers import answers_match, extract_answer
from coconut.eval.report import Evaluation, SamplingResult

log = logging.getLogger(__name__)


def majority_vote(predictions: Sequence[str], kind: str = "auto") -> str:
    """The most frequent answer among `predictions`, answers that match under `kind` counting as one
    ("1,000" and "1000.0" vote together); ties go to the answer seen first, and empty predictions
    (no answer found) do not vote. "" when nothing voted."""
    groups: list[list[str]] = []
    for prediction in predictions:
        if not prediction.strip():
            continue
        group = next((g for g in groups if answers_match(prediction, g[0], kind)), None)
        if group is None:
            groups.append([prediction])
        else:
            group.append(prediction)
    return max(groups, key=len)[0] if groups else ""  # max keeps the first of equal lengths


def pass_at_k(n: int, correct: int, k: int) -> float:
    """The chance that at least one of k samples drawn without replacement from n (of which
    `correct` are right) is right: 1 - C(n - c, k) / C(n, k)."""
    if not 0 <= correct <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= correct <= n and 1 <= k <= n, got n={n}, correct={correct}, k={k}")
    if n - correct < k:
        return 1.0
    return 1.0 - math.comb(n - correct, k) / math.comb(n, k)


def ks_for(num_samples: int) -> list[int]:
    """The k of pass@k reported: 1, the powers of two below n, and n."""
    ks = [1]
    while ks[-1] * 2 < num_samples:
        ks.append(ks[-1] * 2)
    return ks + [num_samples] if num_samples > 1 else ks


@dataclass(frozen=True)
class SamplingConfig:
    """coconut-eval's `generation`, checked where the config is composed (coconut/commands/config.py)."""

    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0  # nucleus sampling's mass
    num_samples: int = 1  # sampled answers per question

    @property
    def active(self) -> bool:
        """Whether anything beside the greedy answer is asked for."""
        return self.temperature > 0 or self.num_samples > 1


@dataclass
class SampledQuestion:
    index: int  # into the evaluated records
    predictions: list[str]
    correct: list[bool]
    vote: str
    vote_correct: bool
    tokens: int  # thoughts + every sample's tokens (eos included)
    forward_passes: int  # the prompt's passes once + each sample's decoding passes


@torch.no_grad()
def sample_all(
    model: ContinuousThoughtLM,
    tokenizer: PreTrainedTokenizerBase,
    loader: DataLoader,
    records: Sequence[Record],
    sampling: SamplingConfig,
    *,
    answer_kind: str,
    max_new_tokens: int,
    seed: int = 0,
) -> tuple[list[SampledQuestion], float]:
    """Every prompt of `loader` answered `num_samples` times, and the seconds generation took."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    n, questions, seconds = sampling.num_samples, [], 0.0
    for batch in loader:
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        start = time.perf_counter()
        out = generate(
            model,
            batch["input_ids"],
            batch["attention_mask"],
            batch["position_ids"],
            eos_token_id=tokenizer.eos_token_id,
            max_new_tokens=max_new_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            num_samples=n,
            generator=generator,
        )
        seconds += time.perf_counter() - start
        thoughts = (batch["input_ids"] == model.latent_token_id).sum(1).tolist()
        for b, index in enumerate(batch["index"]):
            rows = range(b * n, (b + 1) * n)
            predictions = [extract_answer(tokenizer.decode(out.tokens[r], skip_special_tokens=True)) for r in rows]
            reference = records[index].answer
            vote = majority_vote(predictions, answer_kind)
            prompt_passes = 1 + thoughts[b] + (1 if thoughts[b] else 0)
            questions.append(
                SampledQuestion(
                    index=index,
                    predictions=predictions,
                    correct=[answers_match(p, reference, answer_kind) for p in predictions],
                    vote=vote,
                    vote_correct=bool(vote) and answers_match(vote, reference, answer_kind),
                    tokens=thoughts[b] + sum(out.emitted[r] for r in rows),
                    forward_passes=prompt_passes + sum(out.forward_passes[r] - prompt_passes for r in rows),
                )
            )
    return questions, seconds


def sampling_result(questions: Sequence[SampledQuestion], sampling: SamplingConfig, seconds: float) -> SamplingResult:
    """The report's `sampling` section: majority-vote accuracy, pass@k, and the cost per question."""
    n, count = sampling.num_samples, len(questions)
    return SamplingResult(
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        num_samples=n,
        majority_accuracy=sum(q.vote_correct for q in questions) / count,
        pass_at_k={str(k): sum(pass_at_k(n, sum(q.correct), k) for q in questions) / count for k in ks_for(n)},
        tokens_per_question=sum(q.tokens for q in questions) / count,
        forward_passes_per_question=sum(q.forward_passes for q in questions) / count,
        samples_per_second=count * n / seconds if seconds > 0 else None,
    )


def add_sampling(
    evaluation: Evaluation,
    model: ContinuousThoughtLM,
    tokenizer: PreTrainedTokenizerBase,
    loader: DataLoader,
    records: Sequence[Record],
    sampling: SamplingConfig,
    *,
    answer_kind: str,
    max_new_tokens: int,
    seed: int = 0,
) -> None:
    """Samples every question of a finished greedy `evaluation` (same loader, same order) and adds
    the report's `sampling` section and each row's sampled answers and vote."""
    questions, seconds = sample_all(
        model, tokenizer, loader, records, sampling, answer_kind=answer_kind, max_new_tokens=max_new_tokens, seed=seed
    )
    result = evaluation.report.sampling = sampling_result(questions, sampling, seconds)
    k = str(sampling.num_samples)
    log.info(
        f"sampling ({sampling.num_samples} per question, T={sampling.temperature}, top_p={sampling.top_p}): "
        f"majority-vote accuracy {result.majority_accuracy:.4f}, pass@1 {result.pass_at_k['1']:.4f}, "
        f"pass@{k} {result.pass_at_k[k]:.4f}, {result.tokens_per_question:.1f} tokens per question"
    )
    for row, question in zip(evaluation.rows, questions):
        row.update({"sampled": question.predictions, "sampled_correct": question.correct, "vote": question.vote})
