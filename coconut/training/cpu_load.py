"""The Lightning side of coconut/training/threads.py: between batches of every loop (training, validation
with its generation, test), torch's CPU thread count follows the cores other processes leave free."""

from __future__ import annotations

import lightning as L

from coconut.training.threads import CpuThreads


class FollowCpuLoad(L.Callback):
    def __init__(self, threads: CpuThreads):
        self.threads = threads

    def on_train_batch_end(self, *args, **kwargs) -> None:
        self.threads.update()

    def on_validation_batch_end(self, *args, **kwargs) -> None:
        self.threads.update()

    def on_test_batch_end(self, *args, **kwargs) -> None:
        self.threads.update()
