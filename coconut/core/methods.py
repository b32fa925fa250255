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
  codi              CODI (Shen et al. 2025, arXiv:2502.21074): `num_latent` thoughts from the
                    first epoch, no curriculum; the same model is trained at once as the
                    chain-of-thought teacher and distils it into the thoughts
                    (`self_distillation`, coconut/core/codi.py)
  colar             CoLaR (Tan et al. 2025, arXiv:2505.16552): each latent the compressed embedding
                    of c step tokens (c drawn per sample from `max_compression_factor`, told in the
                    prompt), a latent head predicting the next one, the latents stopped by the LM head
                    at inference (coconut/core/colar.py)

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
DISTILL_LOSSES = ("smooth_l1", "l2")
EMBED_MODELING_LOSSES = ("mse", "nll")


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
    # A fixed thought count in every training sequence and prompt, whatever the stage (CODI's
    # num_latent); None: the curriculum's count.
    num_latent: int | None = None
    # CODI (coconut/core/codi.py): each training record is also trained as its chain of thought (the
    # teacher) and the student's hidden states at the answer are pulled to the teacher's. The names
    # are the official code's (zhenyi4/codi, src/model.py TrainingArguments).
    self_distillation: bool = False
    ref_loss_factor: float = 1.0  # the teacher's cross-entropy weight
    distill_loss_factor: float = 1.0  # the distillation term's weight
    distill_loss_type: str = "smooth_l1"  # smooth_l1 | l2
    distill_loss_div_std: bool = True  # each layer's term divided by the teacher's std there
    include_last_cot: bool = False  # the teacher keeps the chain's last step (the official default drops it)
    # CoLaR (coconut/core/colar.py), with the official code's names (xiaomi-research/colar,
    # configs/models/colar.yaml): set, the compression factors trained (an int r: 1..r; a list: those).
    max_compression_factor: int | tuple[int, ...] | None = None
    compression_factor: int = 1  # c at inference, told in the prompt
    ce_weight: float = 1.0  # the next-token cross-entropy's weight
    embed_modeling_weight: float = 1.0  # the latent head's loss weight
    embed_modeling_loss: str = "mse"  # mse (an rsample of the head) | nll
    entropy_weight: float = 0.0  # the latent head's mean entropy's weight
    sqrt_mean: bool = True  # compress by sum / sqrt(count); false: sum / count (the mean)
    max_n_latent_forward: int = 64  # the most latents at inference

    def __post_init__(self):
        if isinstance(self.max_compression_factor, list):  # from a config: a tuple, so that Method hashes
            object.__setattr__(self, "max_compression_factor", tuple(self.max_compression_factor))
        if self.max_compression_factor is not None:
            self._check_colar()
        self._check()

    def _check_colar(self) -> None:
        if self.thought != "continuous" or not self.markers or self.stage != "final":
            raise ConfigError(
                f"method={self.name}: max_compression_factor (CoLaR) trains latents between markers with no "
                "curriculum; set method.thought=continuous, method.markers=true, method.stage=final"
            )
        factors = self.compression_factors
        if not factors or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in factors):
            raise ConfigError(
                "method.max_compression_factor must be an integer >= 1 or a list of them, "
                f"got {self.max_compression_factor!r}"
            )
        if isinstance(self.compression_factor, bool) or not isinstance(self.compression_factor, int):
            raise ConfigError(f"method.compression_factor must be an integer >= 1, got {self.compression_factor!r}")
        if self.compression_factor < 1 or self.max_n_latent_forward < 1:
            raise ConfigError("method.compression_factor and method.max_n_latent_forward must be >= 1")
        if self.embed_modeling_loss not in EMBED_MODELING_LOSSES:
            raise ConfigError(
                f"method.embed_modeling_loss must be one of {', '.join(EMBED_MODELING_LOSSES)}, "
                f"got {self.embed_modeling_loss!r}"
            )

    @property
    def colar(self) -> bool:
        return self.max_compression_factor is not None

    @property
    def compression_factors(self) -> tuple[int, ...]:
        """The factors c a training sample is drawn from (CoLaR); () for other methods."""
        factors = self.max_compression_factor
        if factors is None:
            return ()
        if isinstance(factors, int) and not isinstance(factors, bool):
            return tuple(range(1, factors + 1))
        return tuple(factors)

    def _check(self):
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
        if self.num_latent is not None and (not isinstance(self.num_latent, int) or self.num_latent < 1):
            raise ConfigError(f"method.num_latent must be an integer >= 1 or null, got {self.num_latent!r}")
        if self.self_distillation:
            self._check_self_distillation()
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

    def _check_self_distillation(self) -> None:
        if self.thought != "continuous" or not self.markers or self.stage != "final" or self.num_latent is None:
            raise ConfigError(
                f"method={self.name}: self_distillation (CODI) trains a fixed number of continuous thoughts between "
                "markers with no curriculum; set method.thought=continuous, method.markers=true, method.stage=final "
                "and method.num_latent"
            )
        if self.distill_loss_type not in DISTILL_LOSSES:
            raise ConfigError(
                f"method.distill_loss_type must be one of {', '.join(DISTILL_LOSSES)}, got {self.distill_loss_type!r}"
            )
        for name in ("ref_loss_factor", "distill_loss_factor"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"method.{name} must be a number >= 0, got {getattr(self, name)!r}")

    @property
    def thoughts_follow_steps(self) -> bool:
        """Whether thought j stands for replaced step j // c (the curriculum's alignment, which the
        step-wise legibility metrics read); CODI's fixed thoughts stand for no step in particular, and
        CoLaR's latents for c consecutive tokens of the chain, wherever the steps break."""
        return self.num_latent is None and not self.colar

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
