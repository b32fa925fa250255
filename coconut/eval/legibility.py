"""Legibility: how much of a model's reasoning a human can still read, and whether the thoughts
still carry and drive it. Pure functions over per-question records; `coconut.eval.evaluator`
fills them from generation.

Each reference step of a question is either *replaced* (the first `steps_replaced` steps, which
the stage turned into thoughts; thoughts i*c .. (i+1)*c - 1 stand for step i, c = latents per
step) or left to be *written*. Its key content is `coconut.data.step_keys.step_key`.

  decode_top1 / decode_top5   replaced steps whose key content's first token is the top-1 / among
                              the top-5 tokens of one of their thoughts read through the LM head
                              (logit lens); `*_chance` scores the same thoughts against the steps
                              of another question (a fixed shuffle), the level small vocabularies
                              reach by luck.
  probe                       held-out accuracy of a linear (ridge) probe from a thought vector to
                              its step's key content, cross-validated with questions split across
                              folds; `probe_majority` is the most-frequent-class baseline.
  text_steps_correct          written steps whose key content equals the reference step's at the
                              same position.
  reasoning legibility        per question, the share of its reference steps a reader recovers:
                              replaced steps by decode top-1, the rest by a correct written step.
  loss                        mean legibility of the reference reasoning (the CoT model's written
                              steps on the same questions, or the reference chain itself, 1.0,
                              when no CoT evaluation is given) minus the model's.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from coconut.data.step_keys import first_token_ids
from coconut.eval.steps import step_key, steps_match

TOP_K = 5


@dataclass
class QuestionReasoning:
    reference_steps: list[str]
    steps_replaced: int
    latents_per_step: int
    thought_tokens: list[list[str]] = field(default_factory=list)  # per thought, its top-k tokens (stripped)
    written: list[str] = field(default_factory=list)  # the steps the model wrote, in order

    def thoughts_for_step(self, step: int) -> list[list[str]]:
        c = self.latents_per_step
        return self.thought_tokens[step * c : (step + 1) * c]

    @property
    def decodable_steps(self) -> list[int]:
        """Replaced steps that have a key content and at least one thought standing for them."""
        return [
            i
            for i in range(self.steps_replaced)
            if self.thoughts_for_step(i) and step_key(self.reference_steps[i]) is not None
        ]


# key content -> the strings its first token decodes to (with and without a leading space)
KeyTokens = Callable[[str], set[str]]


def key_tokens_for(tokenizer) -> KeyTokens:
    cache: dict[str, set[str]] = {}

    def first_tokens(key: str) -> set[str]:
        if key not in cache:
            # The tokens training's legibility objective scores (coconut.data.step_keys), as text.
            cache[key] = {tokenizer.decode([token]).strip() for token in first_token_ids(tokenizer, key)}
        return cache[key]

    return first_tokens


def step_decoded(thoughts: list[list[str]], key: str, key_tokens: KeyTokens, k: int) -> bool:
    wanted = key_tokens(key)
    return any(token in wanted for tokens in thoughts for token in tokens[:k])


def decode_accuracy(questions: Sequence[QuestionReasoning], key_tokens: KeyTokens, k: int) -> float | None:
    hits = [
        step_decoded(q.thoughts_for_step(i), step_key(q.reference_steps[i]), key_tokens, k)
        for q in questions
        for i in q.decodable_steps
    ]
    return sum(hits) / len(hits) if hits else None


def decode_chance(questions: Sequence[QuestionReasoning], key_tokens: KeyTokens, k: int, seed: int = 0) -> float | None:
    """Decode accuracy of each question's thoughts against another question's steps (a derangement),
    step i against step i, where the other question has one."""
    if len(questions) < 2:
        return None
    order = list(range(len(questions)))
    random.Random(seed).shuffle(order)
    partner = {order[j]: order[(j + 1) % len(order)] for j in range(len(order))}  # nobody is their own
    hits = []
    for index, q in enumerate(questions):
        other = questions[partner[index]]
        for i in q.decodable_steps:
            key = step_key(other.reference_steps[i]) if i < len(other.reference_steps) else None
            if key is not None:
                hits.append(step_decoded(q.thoughts_for_step(i), key, key_tokens, k))
    return sum(hits) / len(hits) if hits else None


def text_steps_correct(questions: Sequence[QuestionReasoning]) -> float | None:
    checks = [
        steps_match(text, q.reference_steps[q.steps_replaced + i])
        if q.steps_replaced + i < len(q.reference_steps)
        else False  # a step beyond the reference chain reads as reasoning that is not there
        for q in questions
        for i, text in enumerate(q.written)
    ]
    return sum(checks) / len(checks) if checks else None


def reasoning_legibility(q: QuestionReasoning, key_tokens: KeyTokens) -> float | None:
    """The share of this question's reference steps a reader recovers (None without any steps)."""
    readable = []
    for i, step in enumerate(q.reference_steps):
        if i < q.steps_replaced:
            key = step_key(step)
            readable.append(key is not None and step_decoded(q.thoughts_for_step(i), key, key_tokens, 1))
        else:
            written = i - q.steps_replaced
            readable.append(written < len(q.written) and steps_match(q.written[written], step))
    return sum(readable) / len(readable) if readable else None


def mean_legibility(questions: Sequence[QuestionReasoning], key_tokens: KeyTokens) -> float | None:
    scores = [s for s in (reasoning_legibility(q, key_tokens) for q in questions) if s is not None]
    return sum(scores) / len(scores) if scores else None


def legibility_loss(model: Sequence[float | None], reference: Sequence[float | None]) -> float | None:
    """Mean reference legibility minus mean model legibility over the questions both score."""
    pairs = [(m, r) for m, r in zip(model, reference) if m is not None and r is not None]
    if not pairs:
        return None
    return sum(r for _, r in pairs) / len(pairs) - sum(m for m, _ in pairs) / len(pairs)


def probe_accuracy(
    vectors: torch.Tensor, labels: Sequence[str], groups: Sequence[int], folds: int = 5, ridge: float = 1.0
) -> tuple[float | None, float | None]:
    """(probe accuracy, majority-class accuracy), both held-out over `folds` folds of groups.

    A ridge regression onto one-hot labels (a linear classifier with a closed form: no learning
    rate to tune, the same answer every time). Test vectors whose label never occurs in the
    training folds count as wrong for both.
    """
    distinct_groups = sorted(set(groups))
    folds = min(folds, len(distinct_groups))
    if folds < 2 or len(set(labels)) < 2:
        return None, None
    fold_of = {g: i % folds for i, g in enumerate(random.Random(0).sample(distinct_groups, len(distinct_groups)))}
    x = vectors.double()
    fold = torch.tensor([fold_of[g] for g in groups])
    correct = majority_correct = 0
    for f in range(folds):
        train, test = fold != f, fold == f
        classes = sorted({label for label, t in zip(labels, train.tolist()) if t})
        index = {c: i for i, c in enumerate(classes)}
        y = torch.zeros(int(train.sum()), len(classes), dtype=torch.double)  # (N_train, C)
        train_labels = [label for label, t in zip(labels, train.tolist()) if t]
        y[torch.arange(len(train_labels)), torch.tensor([index[label] for label in train_labels])] = 1.0
        mean, std = x[train].mean(0), x[train].std(0).clamp(min=1e-6)
        xs = torch.nn.functional.pad((x[train] - mean) / std, (0, 1), value=1.0)  # (N_train, D + 1), bias
        gram = xs.T @ xs + ridge * torch.eye(xs.shape[1], dtype=torch.double)
        weights = torch.linalg.solve(gram, xs.T @ y)  # (D + 1, C)
        xt = torch.nn.functional.pad((x[test] - mean) / std, (0, 1), value=1.0)
        predicted = [classes[i] for i in (xt @ weights).argmax(1).tolist()]
        test_labels = [label for label, t in zip(labels, test.tolist()) if t]
        correct += sum(p == label for p, label in zip(predicted, test_labels))
        majority = max(classes, key=train_labels.count)
        majority_correct += sum(label == majority for label in test_labels)
    return correct / len(labels), majority_correct / len(labels)
