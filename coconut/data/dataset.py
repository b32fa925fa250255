"""Stage-aware datasets over tokenized samples: what one epoch of the curriculum trains on.

`StageDataset` turns sample i into its stage-k sequence on access; with stage mixing (training
only) a sample's stage (or, for iCoT, its removal-smoothing offset) is drawn from a generator
seeded by (seed, epoch, i), so an epoch is reproducible and a resumed run sees the same draws.
For CODI (`method.self_distillation`) an item also carries the teacher's
sequence and both distillation indices (coconut/data/sequences.py); with `step_texts` (step
supervision) each group of thoughts' step text; for CoLaR, each latent's step tokens at a
compression factor drawn as the stage is. `PromptDataset` gives
generation prompts for accuracy.
"""

from __future__ import annotations

import random

from torch.utils.data import Dataset

from coconut.core.curriculum import Curriculum
from coconut.core.methods import Method
from coconut.core.tokens import SpecialIds
from coconut.data.records import Record
from coconut.data.sequences import (
    TokenizedSample,
    build_prompt,
    build_sequence,
    colar_sequence,
    distill_index,
    step_texts,
    teacher_sequence,
)


class StageDataset(Dataset):
    def __init__(
        self,
        samples: list[TokenizedSample],
        *,
        stage: int,
        method: Method,
        curriculum: Curriculum,
        ids: SpecialIds,
        epoch: int = 0,
        seed: int = 0,
        mix_stages: bool = False,
        step_texts: bool = False,
    ):
        self.samples, self.stage, self.method, self.mix_stages = samples, stage, method, mix_stages
        self.step_texts = step_texts
        self.curriculum, self.ids, self.epoch, self.seed = curriculum, ids, epoch, seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        if self.method.colar:
            return self._colar_item(sample, index)
        stage, offset = self.stage, 0
        if self.mix_stages and self.method.stage in ("curriculum", "tokens"):
            rng = random.Random(hash((self.seed, self.epoch, index)))
            if self.method.stage == "curriculum":
                stage = self.curriculum.sample_stage(stage, len(sample.steps), rng)
            else:  # iCoT's removal smoothing
                offset = self.method.removal_offset(rng)
        sequence = build_sequence(sample, stage, self.method, self.curriculum, self.ids, offset)
        item = {"input_ids": sequence.input_ids, "labels": sequence.labels, "thought_targets": sequence.thought_targets}
        if self.method.self_distillation:
            teacher = teacher_sequence(sample, self.method)
            item["teacher_input_ids"], item["teacher_labels"] = teacher.input_ids, teacher.labels
            item["distill_index"] = distill_index(sequence, sample)
            item["teacher_distill_index"] = distill_index(teacher, sample)
        if self.step_texts:
            item["step_texts"] = step_texts(sample, self.method, self.curriculum, sequence.thoughts)
        return item

    def _colar_item(self, sample: TokenizedSample, index: int) -> dict:
        """CoLaR: in training, c drawn from the factors trained (their colar.py:69-76 draws it per batch);
        elsewhere the factor of inference; the latents' labels drawn from the same generator."""
        rng = random.Random(hash((self.seed, self.epoch, index)))
        c = rng.choice(self.method.compression_factors) if self.mix_stages else self.method.compression_factor
        sequence = colar_sequence(sample, c, self.ids, rng)
        return {
            "input_ids": sequence.input_ids,
            "labels": sequence.labels,
            "colar_groups": sequence.groups,
            "colar_factor": c,
        }


class PromptDataset(Dataset):
    def __init__(
        self,
        records: list[Record],
        samples: list[TokenizedSample],
        *,
        stage: int,
        method: Method,
        curriculum: Curriculum,
        ids: SpecialIds,
        n_thoughts: int | None = None,
    ):
        self.records, self.samples, self.stage, self.method = records, samples, stage, method
        self.curriculum, self.ids, self.n_thoughts = curriculum, ids, n_thoughts

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        prompt = build_prompt(self.samples[index], self.stage, self.method, self.curriculum, self.ids, self.n_thoughts)
        return {"prompt": prompt, "index": index}
