"""The stage-aware LightningDataModule: which stage-k sequences each epoch trains and validates on.

Dataloaders are rebuilt every epoch (`reload_dataloaders_every_n_epochs=1`) and ask the curriculum
for the stage of `trainer.current_epoch`, so a resumed run picks up the right stage by itself.
Validation has two loaders: stage-k sequences for `val/loss`, and generation prompts (a fixed
subset) for `val/acc`.
"""

from __future__ import annotations

from functools import partial

import lightning as L
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from coconut.curriculum import Curriculum
from coconut.data.collate import collate_prompts, collate_training
from coconut.data.dataset import PromptDataset, StageDataset
from coconut.data.records import Record
from coconut.data.sequences import tokenize_records
from coconut.methods import Method
from coconut.tokens import SpecialIds


def _collate_sequences(items: list[dict], latent_id: int, pad_id: int) -> dict:
    return collate_training([i["input_ids"] for i in items], [i["labels"] for i in items], latent_id, pad_id)


def _collate_prompts(items: list[dict], pad_id: int) -> dict:
    batch = collate_prompts([i["prompt"] for i in items], pad_id)
    batch["index"] = [i["index"] for i in items]
    return batch


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
    ):
        super().__init__()
        self.records = splits
        self.samples = {split: tokenize_records(recs, tokenizer) for split, recs in splits.items()}
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
        )
        return DataLoader(
            dataset,
            batch_size=self.batch_size if shuffle else self.eval_batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=partial(_collate_sequences, latent_id=self.ids.latent, pad_id=self.ids.pad),
        )

    def prompts(self, split: str, limit: int | None = None) -> DataLoader:
        n = len(self.samples[split]) if limit is None else min(limit, len(self.samples[split]))
        dataset = PromptDataset(
            self.records[split][:n],
            self.samples[split][:n],
            stage=self.current_stage(),
            method=self.method,
            curriculum=self.curriculum,
            ids=self.ids,
            n_thoughts=self.n_thoughts,
        )
        return DataLoader(
            dataset,
            batch_size=self.eval_batch_size,
            num_workers=self.num_workers,
            collate_fn=partial(_collate_prompts, pad_id=self.ids.pad),
        )

    def train_dataloader(self) -> DataLoader:
        return self._sequences("train", shuffle=True, epoch=self.current_epoch())

    def val_dataloader(self) -> list[DataLoader]:
        return [self._sequences("val", shuffle=False, epoch=0), self.prompts("val", self.val_generation_size)]

    def test_dataloader(self) -> list[DataLoader]:
        return [self._sequences("test", shuffle=False, epoch=0), self.prompts("test")]
