"""`coconut-export`: any checkpoint coconut-eval reads, written as a Hugging Face `save_pretrained`
folder that needs nothing from this project to load as a causal LM (coconut.commands.export).

    coconut-export ckpt_path=outputs/train/runs/<time>/checkpoints/last.ckpt out=exported/coconut-gpt2
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from coconut import CONFIG_DIR
from coconut.commands.export import export
from coconut.core.errors import UserInputError

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="export")
def main(cfg: DictConfig) -> None:
    try:
        export(cfg)
    except UserInputError as error:
        log.error("%s", error)
        sys.exit(2)


if __name__ == "__main__":
    main()
