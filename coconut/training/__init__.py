"""Training machinery on Lightning: the LightningModule, the stage-aware datamodule, callbacks
(curriculum, checkpoints, thought diagnostics, health), distributed strategies and run records.
Imports core, data and eval; nothing below it imports it."""
