"""Training methods as data: each one says how a record becomes a training sequence.

Adding a method is one entry in `conf/method/` naming these fields; the sequence builder and the
model read nothing else. The COCONUT paper's methods and baselines (Hao et al. 2024, Section 4)
map onto them:
  coconut           markers, continuous thoughts, stage from the curriculum
  cot               stage 0 forever: the full chain of thought as text, no markers
  no_cot            every step dropped, no thoughts, no markers
  pause             `<pause>` tokens between question and answer, final stage from the first epoch
                    (Goyal et al. 2024): as many as COCONUT's final-stage thoughts
  pause_as_thought  COCONUT's curriculum with `<pause>` tokens in place of the thoughts
  no_curriculum     COCONUT trained on the final stage from the first epoch ("w/o curriculum")
  no_thought        the curriculum removes steps, nothing takes their place ("w/o thought")
  pccot             PCCoT (Wu et al. 2025, arXiv:2506.18582): the final stage from the first
                    epoch, its thoughts computed by `jacobi_iterations` parallel Jacobi updates
                    instead of one after another (core/jacobi.py)
  icot              stepwise internalization (Deng et al. 2024, "From explicit CoT to implicit
                    CoT"): `tokens_removed_per_epoch` CoT tokens removed from the start of the
                    chain of thought each epoch (`stage: tokens`)

For `stage: tokens` the stage number *is* the count of CoT tokens removed, so the stage-keyed
machinery (optimizer reset on a change, `stage{k}-best.ckpt`, `curriculum/stage`) works unchanged:
iCoT also resets the optimizer whenever the count grows.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Literal

from coconut.core.curriculum import Curriculum
from coconut.core.errors import ConfigError

ThoughtKind = Literal["continuous", "pause", "none"]
StageRule = Literal["curriculum", "zero", "final", "tokens"]
THOUGHTS = ("continuous", "pause", "none")
STAGE_RULES = ("curriculum", "zero", "final", "tokens")
# iCoT draws the smoothing offset from 0..99, the last value taking the remaining mass.
MAX_REMOVAL_OFFSET = 99


@dataclass(frozen=True)
class Method:
    name: str
    thought: ThoughtKind = "continuous"  # continuous: hidden state fed back; pause: a learned token
    # curriculum: from the epoch; zero: always CoT; final: no steps; tokens: iCoT token removal
    stage: StageRule = "curriculum"
    markers: bool = True  # wrap thoughts in <|start-latent|> ... <|end-latent|>
    # stage: tokens only (iCoT's names: remove_per_epoch, removal_smoothing_lambda,
    # remove_all_when_remove_beyond; `inf` there is null here).
    tokens_removed_per_epoch: int = 0
    removal_smoothing_lambda: float | None = None
    remove_all_beyond: int | None = None
    # Continuous thoughts by T parallel Jacobi updates (PCCoT's num_iterations), at training and at
    # inference; null: one after another (COCONUT).
    jacobi_iterations: int | None = None

    def __post_init__(self):
        if self.thought not in THOUGHTS:
            raise ConfigError(f"method.thought must be one of {', '.join(THOUGHTS)}, got {self.thought!r}")
        if self.stage not in STAGE_RULES:
            raise ConfigError(f"method.stage must be one of {', '.join(STAGE_RULES)}, got {self.stage!r}")
        iterations = self.jacobi_iterations
        if iterations is not None:
            if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
                raise ConfigError(f"method.jacobi_iterations must be an integer >= 0 or null, got {iterations!r}")
            if self.thought != "continuous":
                raise ConfigError(
                    f"method={self.name}: jacobi_iterations={iterations} iterates continuous thoughts; "
                    f"method.thought={self.thought} has none. Fix: method.jacobi_iterations=null"
                )
        if self.stage != "tokens":
            return
        if self.thought != "none" or self.markers:
            raise ConfigError(
                f"method={self.name}: stage: tokens removes chain-of-thought tokens with nothing in their "
                "place; set method.thought=none and method.markers=false"
            )
        if self.tokens_removed_per_epoch < 1:
            raise ConfigError(
                f"method.tokens_removed_per_epoch must be >= 1 for stage: tokens, got {self.tokens_removed_per_epoch}"
            )
        if self.removal_smoothing_lambda is not None and not self.removal_smoothing_lambda > 0:
            raise ConfigError(
                "method.removal_smoothing_lambda must be > 0 or null (no smoothing), "
                f"got {self.removal_smoothing_lambda}"
            )
        if self.remove_all_beyond is not None and self.remove_all_beyond < 0:
            raise ConfigError(f"method.remove_all_beyond must be >= 0 or null, got {self.remove_all_beyond}")

    @classmethod
    def from_config(cls, cfg: Mapping) -> Method:
        """From a `conf/method/*.yaml` mapping; an unknown key is an error, not silently ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ConfigError(f"method: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**dict(cfg))

    def stage_for(self, scheduled: int, final_stage: int) -> int:
        return {"curriculum": scheduled, "zero": 0, "final": final_stage, "tokens": scheduled}[self.stage]

    def stage_at_epoch(self, curriculum: Curriculum, epoch: int) -> int:
        """The stage this method trains at `epoch`: the one function the data and callbacks ask.
        For `stage: tokens`, the number of chain-of-thought tokens removed."""
        if self.stage == "tokens":
            return self.tokens_removed_at_epoch(epoch)
        return self.stage_for(curriculum.stage_for_epoch(epoch), curriculum.final_stage)

    # -- stage: tokens (iCoT) ------------------------------------------------------------------
    def tokens_removed_at_epoch(self, epoch: int) -> int:
        """Delta tokens more each epoch, from none at epoch 0. The official code raises the count
        by one every 1/Delta of an epoch; here it moves once per epoch, when the data is rebuilt.
        Once `remove_all_beyond` is reached the count stops there (and every token goes)."""
        removed = self.tokens_removed_per_epoch * epoch
        return removed if self.remove_all_beyond is None else min(removed, self.remove_all_beyond)

    def removes_all(self, tokens_removed: int) -> bool:
        return self.remove_all_beyond is not None and tokens_removed >= self.remove_all_beyond

    def removal_offset(self, rng: random.Random) -> int:
        """Removal smoothing: extra tokens removed from one training sample, o with
        P(o) = (1 - e^-lambda) e^(-lambda o), truncated at 99 (as the official code draws it);
        0 without smoothing."""
        if self.removal_smoothing_lambda is None:
            return 0
        keep_going = math.exp(-self.removal_smoothing_lambda)  # P(o >= k + 1 | o >= k)
        offset = 0
        while offset < MAX_REMOVAL_OFFSET and rng.random() < keep_going:
            offset += 1
        return offset
