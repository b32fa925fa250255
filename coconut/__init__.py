"""coconut: training and evaluation of latent reasoning (COCONUT, Hao et al. 2024).

Layers, each importing only those before it (tests/test_architecture.py):
    core      thought mechanics, curriculum, methods, tokens      (no Lightning, no Hydra)
    data      raw record -> tokenized sample -> stage-k sequence -> batch
    eval      answers, batched evaluation, legibility, reports
    training  LightningModule, datamodule, callbacks, strategies, run records
    cli       coconut-train, coconut-eval and the checks they run first
"""

from pathlib import Path

# The Hydra configs ship inside the package, so that `pip install coconut` (not only an editable
# install of a checkout) finds them; a user's own configs join through `hydra.searchpath`.
CONFIG_DIR = str(Path(__file__).resolve().parent / "conf")
