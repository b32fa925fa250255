"""The COCONUT curriculum as pure functions: which stage an epoch trains, and for a stage how many
reasoning steps are dropped and how many continuous thoughts replace them.

Stage k (k <= max_latent_stage) drops the first k steps and writes k * c_thought thoughts,
as the official code does even when a sample has fewer than k steps. Beyond max_latent_stage every
step is dropped and the thoughts are capped at min(n_steps, max_latent_stage) * c_thought,
or max_latent_stage * c_thought with pad_latent_to_max.

Evaluation never reads the reference steps (`inference_thoughts`): stage k writes k * c_thought
thoughts, and beyond max_latent_stage max_latent_stage * c_thought, whatever the question's
reference chain. A test question's step count is test-time information, and benchmarks without steps
(SVAMP, MultiArith, ASDiv, GSM-Hard) would get no thoughts at all. The official evaluation
(facebookresearch/coconut, `get_question_latent_dataset`) writes min(k, n_steps, max_latent_stage) * c
unless pad_latent_to_max: the same count for every question with at least max_latent_stage reference
steps, fewer for the shorter ones.

`start_stage` > 0 begins at that stage (the paper's GSM8K recipe starts COCONUT at stage 1 from a
chain-of-thought checkpoint); later stages keep `epochs_per_stage` epochs each.

Names are the official code's (facebookresearch/coconut): `c_thought` (the paper's c), `max_latent_stage`,
`pad_latent_to_max`, `uniform_prob`. A command's config is checked before a Curriculum is built
(coconut/commands/config.py); the checks here guard the library's direct users.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

ALL_STEPS = 10**9  # "drop every step"


@dataclass(frozen=True)
class StagePlan:
    steps_dropped: int  # leading reasoning steps replaced (ALL_STEPS: every one)
    thoughts: int  # thought positions written between the markers


@dataclass(frozen=True)
class Curriculum:
    epochs_per_stage: int = 1
    # Stage 0 (full chain of thought) may run longer than the others, as the paper's GSM8K recipe
    # does; None: epochs_per_stage.
    epochs_first_stage: int | None = None
    max_latent_stage: int = 3
    c_thought: int = 1  # thoughts per replaced step (the paper's c)
    pad_latent_to_max: bool = False
    uniform_prob: float = 0.0  # chance a training sample uses a uniformly drawn stage
    # The stage of epoch 0. 1 skips stage 0, as the paper's GSM8K recipe does when it starts from a
    # chain-of-thought checkpoint (official: `resume: 3` with `load_model_path`); each later stage
    # keeps epochs_per_stage epochs.
    start_stage: int = 0

    def __post_init__(self):
        for name in ("epochs_per_stage", "c_thought"):
            if getattr(self, name) < 1:
                raise ValueError(f"curriculum.{name} must be >= 1, got {getattr(self, name)}")
        if self.epochs_first_stage is not None and self.epochs_first_stage < 1:
            raise ValueError(f"curriculum.epochs_first_stage must be >= 1 or null, got {self.epochs_first_stage}")
        if self.max_latent_stage < 0:
            raise ValueError(f"curriculum.max_latent_stage must be >= 0, got {self.max_latent_stage}")
        if not 0.0 <= self.uniform_prob <= 1.0:
            raise ValueError(f"curriculum.uniform_prob must be in [0, 1], got {self.uniform_prob}")
        if not 0 <= self.start_stage <= self.final_stage:
            raise ValueError(
                f"curriculum.start_stage must be in 0..{self.final_stage} (max_latent_stage + 1), "
                f"got {self.start_stage}"
            )

    @property
    def final_stage(self) -> int:
        """The first stage with no written steps left."""
        return self.max_latent_stage + 1

    def stage_for_epoch(self, epoch: int) -> int:
        if self.start_stage > 0:
            return min(self.start_stage + epoch // self.epochs_per_stage, self.final_stage)
        first = self.epochs_per_stage if self.epochs_first_stage is None else self.epochs_first_stage
        if epoch < first:
            return 0
        return min(1 + (epoch - first) // self.epochs_per_stage, self.final_stage)

    def plan(self, stage: int, n_steps: int) -> StagePlan:
        if stage <= self.max_latent_stage:
            return StagePlan(steps_dropped=stage, thoughts=stage * self.c_thought)
        cap = self.max_latent_stage if self.pad_latent_to_max else min(n_steps, self.max_latent_stage)
        return StagePlan(steps_dropped=ALL_STEPS, thoughts=cap * self.c_thought)

    def inference_thoughts(self, stage: int) -> int:
        """Thoughts of a generation prompt at `stage`, from the stage alone (never the reference
        steps): k * c_thought, capped at max_latent_stage * c_thought, the count the
        final stage trains on every chain of max_latent_stage steps or more."""
        return min(stage, self.max_latent_stage) * self.c_thought

    def sample_stage(self, stage: int, n_steps: int, rng: random.Random) -> int:
        """The stage one training sample uses: with probability uniform_prob a uniformly drawn
        stage in 0..n_steps (the official `uniform_prob` mixing), else the scheduled one."""
        if self.uniform_prob > 0 and rng.random() < self.uniform_prob:
            return rng.randint(0, n_steps)
        return stage
