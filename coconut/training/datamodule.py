"""The stage-aware LightningDataModule: which stage-k sequences each epoch trains and validates on.

Dataloaders are rebuilt every epoch (`reload_dataloaders_every_n_epochs=1`) and ask the curriculum
for the stage of `trainer.current_epoch`, so a resumed run picks up the right stage by itself.
Validation has two loaders: stage-k sequences for `val/loss`, and generation prompts (a fixed
subset) for `val/acc`.
"""

from __future__ import annotations

from functools import partial

import lightning as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Subset
from transformers import PreTrainedTokenizerBase

from coconut.core.curriculum import Curriculum
from coconut.core.errors import ConfigError
from coconut.core.methods import Method
from coconut.core.tokens import SpecialIds
from coconut.data.collate import collate_prompts, collate_teacher, collate_training, pad_groups
from coconut.data.dataset import PromptDataset, StageDataset
from coconut.data.epoch_loader import EpochLoader
from coconut.data.records import Record
from coconut.data.sequences import TokenizedSample, tokenize_records


def _collate_sequences(
    items: list[dict], latent_id: int, pad_id: int, targets: bool = False, teacher: bool = False
) -> dict:
    batch = collate_training(
        [i["input_ids"] for i in items],
        [i["labels"] for i in items],
        latent_id,
        pad_id,
        [i["thought_targets"] for i in items] if targets else None,
        [i["step_texts"] for i in items] if "step_texts" in items[0] else None,
    )
    if "colar_groups" in items[0]:  # CoLaR: each latent's step tokens
        batch["colar_groups"] = pad_groups([i["colar_groups"] for i in items])
        batch["colar_factors"] = torch.tensor([i["colar_factor"] for i in items])
    if not teacher:
        return batch
    keys = ("teacher_input_ids", "teacher_labels", "distill_index", "teacher_distill_index")
    return collate_teacher(batch, *([i[k] for i in items] for k in keys), pad_id=pad_id)


def _collate_prompts(items: list[dict], pad_id: int, colar: tuple[int, int] | None = None) -> dict:
    batch = collate_prompts([i["prompt"] for i in items], pad_id)
    batch["index"] = [i["index"] for i in items]
    if colar is not None:  # CoLaR: generation grows the latents until <|end-latent|>, at most this many
        batch["colar_end"], batch["colar_max"] = colar
    return batch


def eval_sampler(dataset, trainer: L.Trainer | None) -> UnrepeatedDistributedSampler | None:
    """Under DDP, each process evaluates its share of the records exactly once. Lightning's default
    DistributedSampler pads the shares to equal length by repeating records, which would count some
    answers twice in val/acc; unpadded shares differ by at most one batch, which is safe here because
    evaluation runs no collective per batch (the metrics sync once, at the epoch's end)."""
    if trainer is None or trainer.world_size <= 1:
        return None
    if len(dataset) < trainer.world_size:
        raise ConfigError(
            f"{len(dataset)} evaluation records for {trainer.world_size} processes: every process needs one; "
            "raise data.val_generation_size / the split's size, or use fewer devices"
        )
    return UnrepeatedDistributedSampler(
        dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
    )


def train_shard(dataset, trainer: L.Trainer | None):
    """Under DDP, this process's share of the training set (records rank, rank + world, ...), padded
    by repeating records so that every process runs the same number of steps (each step's gradient
    all-reduce needs all of them); the EpochLoader then shuffles the share. Lightning's sampler
    injection is off (`use_distributed_sampler: false` in conf/trainer/ddp.yaml): it cannot wrap the
    EpochLoader's resumable order."""
    if trainer is None or trainer.world_size <= 1:
        return dataset
    world = trainer.world_size
    indices = list(range(len(dataset)))
    indices += indices[: -len(indices) % world]
    return Subset(dataset, indices[trainer.global_rank :: world])


def prompt_loader(
    records: list[Record],
    samples: list[TokenizedSample],
    *,
    stage: int,
    method: Method,
    curriculum: Curriculum,
    ids: SpecialIds,
    batch_size: int,
    n_thoughts: int | None = None,
    num_workers: int = 0,
    trainer: L.Trainer | None = None,
) -> DataLoader:
    """Generation prompts in dataset order; each batch carries the `index` of its records."""
    dataset = PromptDataset(
        records, samples, stage=stage, method=method, curriculum=curriculum, ids=ids, n_thoughts=n_thoughts
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=eval_sampler(dataset, trainer),
        num_workers=num_workers,
        collate_fn=partial(
            _collate_prompts,
            pad_id=ids.pad,
            colar=(ids.end_latent, method.max_n_latent_forward) if method.colar else None,
        ),
    )


class CoconutDataModule(L.LightningDataModule):
    def __init__(
        self,
        splits: dict[str, list[Record]],
        tokenizer: PreTrainedTokenizerBase,
        ids: SpecialIds,
        method: Method,
        curriculum: Curriculum,
        *,
        batch_size: int,
        eval_batch_size: int,
        val_generation_size: int,
        seed: int = 0,
        num_workers: int = 0,
        legibility_targets: bool = False,
        step_texts: bool = False,
    ):
        super().__init__()
        self.records = splits
        # Training batches carry each thought's key-content tokens for the legibility objective
        # (`legibility.weight` > 0); only the train split needs them.
        self.legibility_targets = legibility_targets
        # And each group of thoughts' step text for step supervision (`step_supervision.weight` > 0).
        self.step_texts = step_texts
        self.samples = {
            split: tokenize_records(
                recs,
                tokenizer,
                with_step_targets=legibility_targets and split == "train",
                with_step_texts=step_texts and split == "train",
                speeds=tuple(sorted({*method.compression_factors, method.compression_factor})) if method.colar else (),
            )
            for split, recs in splits.items()
        }
        self.ids, self.method, self.curriculum, self.seed = ids, method, curriculum, seed
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.val_generation_size = val_generation_size
        self.n_thoughts: int | None = None  # evaluation may override the stage's thought count

    def current_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def current_stage(self) -> int:
        return self.method.stage_at_epoch(self.curriculum, self.current_epoch())

    def _sequences(self, split: str, shuffle: bool, epoch: int) -> DataLoader:
        dataset = StageDataset(
            self.samples[split],
            stage=self.current_stage(),
            method=self.method,
            curriculum=self.curriculum,
            ids=self.ids,
            epoch=epoch,
            seed=self.seed,
            mix_stages=shuffle,
            step_texts=self.step_texts and shuffle,
        )
        collate = partial(
            _collate_sequences,
            latent_id=self.ids.latent,
            pad_id=self.ids.pad,
            targets=self.legibility_targets and shuffle,
            teacher=self.method.self_distillation and shuffle,  # CODI's teacher: in training only
        )
        if shuffle:  # an order fixed by (seed, epoch), resumable mid-epoch
            return EpochLoader(
                train_shard(dataset, self.trainer),
                seed=self.seed,
                epoch=epoch,
                batch_size=self.batch_size,
                num_workers=self.num_workers,
                collate_fn=collate,
            )
        return DataLoader(
            dataset,
            batch_size=self.eval_batch_size,
            sampler=eval_sampler(dataset, self.trainer),
            num_workers=self.num_workers,
            collate_fn=collate,
        )

    def prompts(self, split: str, limit: int | None = None) -> DataLoader:
        n = len(self.samples[split]) if limit is None else min(limit, len(self.samples[split]))
        return prompt_loader(
            self.records[split][:n],
            self.samples[split][:n],
            stage=self.current_stage(),
            method=self.method,
            curriculum=self.curriculum,
            ids=self.ids,
            batch_size=self.eval_batch_size,
            n_thoughts=self.n_thoughts,
            num_workers=self.num_workers,
            trainer=self.trainer,
        )

    def train_dataloader(self) -> DataLoader:
        return self._sequences("train", shuffle=True, epoch=self.current_epoch())

    def val_dataloader(self) -> list[DataLoader]:
        return [self._sequences("val", shuffle=False, epoch=0), self.prompts("val", self.val_generation_size)]

    def test_dataloader(self) -> list[DataLoader]:
        return [self._sequences("test", shuffle=False, epoch=0), self.prompts("test")]
