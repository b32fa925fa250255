"""The training DataLoader: its shuffle order is a pure function of (seed, epoch), and it resumes
mid-epoch at the batch after the last one trained.

Lightning saves `state_dict()` (the epoch and the batches handed out so far) in every checkpoint and,
on resume, calls `load_state_dict()` on the rebuilt loader, whose next pass skips those batches, so
a run restarted from a mid-epoch checkpoint trains on exactly the batches the uninterrupted run
would have. A plain `DataLoader(shuffle=True)` draws its order from the global torch RNG, which a
restarted process does not reproduce, and restarts the epoch from its first batch.
"""

from __future__ import annotations

import hashlib

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler


def epoch_seed(seed: int, epoch: int) -> int:
    return int(hashlib.sha256(f"shuffle {seed} {epoch}".encode()).hexdigest()[:12], 16)


class _Shuffle(DistributedSampler):
    """A permutation seeded by `seed` (plus the epoch Lightning sets), the same on every pass, and
    this process's share of it under DDP; `start` skips its first indices once. A DistributedSampler,
    so that Lightning keeps it rather than putting its own in."""

    def __init__(self, dataset: Dataset, seed: int):
        distributed = dist.is_available() and dist.is_initialized()
        super().__init__(
            dataset,
            num_replicas=dist.get_world_size() if distributed else 1,
            rank=dist.get_rank() if distributed else 0,
            shuffle=True,
            seed=seed,
        )
        self.start = 0

    def __iter__(self):
        order = list(super().__iter__())
        start, self.start = self.start, 0
        return iter(order[start:])


class EpochLoader(DataLoader):
    def __init__(self, dataset: Dataset, *, seed: int, epoch: int, batch_size: int, **kwargs):
        self.epoch, self.shuffle_seed = epoch, epoch_seed(seed, epoch)
        # The loader's own generator seeds the workers, so iterating never touches the global RNG.
        super().__init__(
            dataset,
            batch_size=batch_size,
            sampler=_Shuffle(dataset, self.shuffle_seed),
            generator=torch.Generator(),
            **kwargs,
        )
        self.batches_done = 0

    def __iter__(self):
        self.generator.manual_seed(self.shuffle_seed)
        self.batches_done = self.sampler.start // self.batch_size
        for batch in super().__iter__():
            self.batches_done += 1
            yield batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batches_done": self.batches_done}

    def load_state_dict(self, state: dict) -> None:
        # A checkpoint from another epoch (saved at its end) leaves this epoch to start afresh.
        if state.get("epoch") == self.epoch:
            self.sampler.start = state["batches_done"] * self.batch_size
