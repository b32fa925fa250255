"""coconut: training and evaluation of latent reasoning (COCONUT, Hao et al. 2024).

Layers, each importing only those before it (tests/test_architecture.py):
    core      thought mechanics, curriculum, methods, tokens      (no Lightning, no Hydra)
    data      raw record -> tokenized sample -> stage-k sequence -> batch
    eval      answers, batched evaluation, legibility, reports
    training  LightningModule, datamodule, callbacks, strategies, run records
    commands  the work behind each command: config or checkpoint -> tokenizer, model, method,
              curriculum, data (build.py, load.py); train, evaluate, suite, export; their checks
    cli       coconut-train, coconut-eval, coconut-export: thin `@hydra.main` shells over commands
"""

from pathlib import Path

# The Hydra configs ship inside the package, so that `pip install coconut` (not only an editable
# install of a checkout) finds them; a user's own configs join through `hydra.searchpath`.
CONFIG_DIR = str(Path(__file__).resolve().parent / "conf")
