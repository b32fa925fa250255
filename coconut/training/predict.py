"""Evaluation through Lightning: every generation pass of coconut/eval/evaluator.py (the greedy
answers, each ablation, each intervention step) as one `trainer.predict` over the devices, the
answers gathered on every process, so that each process runs the later passes on the same record.

The questions are split by whole batches (process r answers batches r, r + N, ...), so every batch
holds the same prompts, with the same padding, as on one device: the answers and the report are
those of one device. Every process must call `evaluate` with the same arguments (the passes'
generation calls are collectives); only rank 0 should write the report.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import lightning as L
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler
from transformers import PreTrainedTokenizerBase

from coconut.core.model import ContinuousThoughtLM, ThoughtHook
from coconut.data.records import Record
from coconut.eval.evaluator import Answer, Answerer, answer_batch, prepared


class PredictModule(L.LightningModule):
    """`predict_step`: one prompt batch of this process's share of `loader` answered (`answer_batch`),
    through the hook the current pass sets (`make_hook`), timing its own generation."""

    def __init__(
        self,
        model: ContinuousThoughtLM,
        tokenizer: PreTrainedTokenizerBase,
        loader: DataLoader,
        records: Sequence[Record],
        **options,
    ):
        super().__init__()
        self.model, self.tokenizer, self.loader, self.records, self.options = model, tokenizer, loader, records, options
        self.make_hook: Callable[[dict], ThoughtHook] | None = None
        self.record_thoughts = False
        self.seconds = 0.0

    def predict_step(self, batch: dict, batch_idx: int) -> list[Answer]:
        start = time.perf_counter()
        batch = prepared(self.model, batch)  # CoLaR: its latents grown before a hook is made for the batch
        grown = time.perf_counter() - start
        hook = self.make_hook(batch) if self.make_hook else None
        start = time.perf_counter() - grown
        answers = answer_batch(
            self.model,
            self.tokenizer,
            batch,
            self.records,
            thought_hook=hook,
            record_thoughts=self.record_thoughts,
            **self.options,
        )
        self.seconds += time.perf_counter() - start
        return answers

    def predict_dataloader(self) -> DataLoader:
        # Called once the strategy is set up: the rank and world size are this process's.
        return batch_shard(self.loader, self.global_rank, self.trainer.world_size)


class _Batches(Sampler[list[int]]):
    """Fixed batches of dataset indices (a batch sampler Lightning can wrap)."""

    def __init__(self, batches: list[list[int]]):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def batch_shard(loader: DataLoader, rank: int, world: int) -> DataLoader:
    """Process `rank`'s share of `loader`'s batches (r, r + world, ...), each batch as `loader` makes it."""
    batches = list(loader.batch_sampler)[rank::world]
    return DataLoader(loader.dataset, batch_sampler=_Batches(batches), collate_fn=loader.collate_fn)


def gather_answers(local: list[Answer], seconds: float, world: int) -> tuple[list[Answer], float]:
    """Every process's answers, in index order, and the slowest process's generation seconds."""
    if world == 1:
        return sorted(local, key=lambda a: a.index), seconds
    parts: list = [None] * world
    dist.all_gather_object(parts, (local, seconds))
    answers = sorted((a for part, _ in parts for a in part), key=lambda a: a.index)
    return answers, max(s for _, s in parts)


def lightning_answerer(
    trainer: L.Trainer,
    model: ContinuousThoughtLM,
    tokenizer: PreTrainedTokenizerBase,
    loader: DataLoader,
    records: Sequence[Record],
    **options,
) -> Answerer:
    """An `Answerer` (coconut.eval.evaluator) whose passes run as `trainer.predict` over this process's
    batches of `loader` (`options`: answer_batch's answer_kind, max_new_tokens, thought_ids). The
    trainer needs `use_distributed_sampler=False`: the batches are split here."""
    module = PredictModule(model, tokenizer, loader, records, **options)

    def answer(make_hook=None, record_thoughts=False) -> tuple[list[Answer], float]:
        module.make_hook, module.record_thoughts, module.seconds = make_hook, record_thoughts, 0.0
        outputs = trainer.predict(module, return_predictions=True)
        local = [a for batch in outputs or [] for a in batch]
        return gather_answers(local, module.seconds, trainer.world_size)

    return answer


def predict_trainer(trainer_cfg: Mapping | None, device: str) -> L.Trainer | None:
    """The Trainer of an evaluation split over `trainer.devices` x `trainer.num_nodes` processes
    (coconut-eval's `trainer` keys); None for one process, which answers in a plain loop. The
    accelerator defaults to the one `device` the model was loaded on (cuda -> gpu)."""
    cfg = dict(trainer_cfg or {})
    devices, num_nodes = cfg.get("devices", 1), cfg.get("num_nodes", 1)
    if devices == 1 and num_nodes == 1:
        return None
    return L.Trainer(
        accelerator=cfg.get("accelerator") or ("gpu" if device == "cuda" else "cpu"),
        devices=devices,
        num_nodes=num_nodes,
        strategy=cfg.get("strategy") or "ddp",
        use_distributed_sampler=False,  # lightning_answerer splits the batches itself
        inference_mode=False,  # the recorded thoughts are read again after predict (legibility, ablations)
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
