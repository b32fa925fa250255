"""Training methods as data: each one says how a record becomes a training sequence.

Adding a method is one entry in `conf/method/` naming these fields; the sequence builder and the
model read nothing else. The paper's baselines map onto them:
  coconut   markers, continuous thoughts, stage from the curriculum
  cot       stage 0 forever: the full chain of thought as text, no markers
  no_cot    every step dropped, no thoughts, no markers
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from coconut.curriculum import Curriculum
from coconut.errors import ConfigError

ThoughtKind = Literal["continuous", "pause", "none"]
StageRule = Literal["curriculum", "zero", "final"]


@dataclass(frozen=True)
class Method:
    name: str
    thought: ThoughtKind = "continuous"  # continuous: hidden state fed back; pause: a learned token
    stage: StageRule = "curriculum"  # curriculum: from the epoch; zero: always CoT; final: no steps
    markers: bool = True  # wrap thoughts in <|start-latent|> ... <|end-latent|>

    def __post_init__(self):
        if self.thought not in ("continuous", "pause", "none"):
            raise ConfigError(f"method.thought must be continuous, pause or none, got {self.thought!r}")
        if self.stage not in ("curriculum", "zero", "final"):
            raise ConfigError(f"method.stage must be curriculum, zero or final, got {self.stage!r}")

    def stage_for(self, scheduled: int, final_stage: int) -> int:
        return {"curriculum": scheduled, "zero": 0, "final": final_stage}[self.stage]

    def stage_at_epoch(self, curriculum: Curriculum, epoch: int) -> int:
        """The stage this method trains at `epoch`: the one function the data and callbacks ask."""
        return self.stage_for(curriculum.stage_for_epoch(epoch), curriculum.final_stage)
