"""`coconut-eval`: evaluate a saved checkpoint. A Hydra entry point like training; every evaluation
writes into its own folder (outputs/eval/runs/<time>/), never into the training run's. The work is
coconut.commands: evaluate.py (one split), suite.py (several benchmarks), stage_curve.py (a run folder).

coconut-eval ckpt_path=outputs/train/runs/<time>/checkpoints/last.ckpt          # its own test split
coconut-eval ckpt_path=latest                                  # the newest training run's last.ckpt
coconut-eval ckpt_path=... data=files data.test_path=../shared/data/prosqa/prosqa_valid.json
coconut-eval -m ckpt_path=... n_thoughts=0,1,2,3,4,6                          # inference-time scaling
coconut-eval ckpt_path=<coconut ckpt> legibility.reference=<folder of a CoT model's evaluation>
coconut-eval ckpt_path=... suite=math       # gsm8k, gsm_hard, svamp, multiarith, asdiv: coconut/commands/suite.py
coconut-eval ckpt_path=hf:<folder or hub id> data=gsm8k                       # a Hugging Face CoT / No-CoT model
coconut-eval ckpt_path=<official checkpoint_N> model.pretrained=gpt2 n_thoughts=6 data=gsm8k  # official code's
coconut-eval ckpt_path=outputs/train/runs/<time>                 # every stage{k}-best.ckpt: a per-stage curve
coconut-eval ckpt_path=... generation.temperature=0.7 generation.num_samples=8   # majority vote, pass@k
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from coconut import CONFIG_DIR
from coconut.commands.checks import check_accelerator, checked_command
from coconut.commands.config import validate_eval_config
from coconut.commands.evaluate import run_evaluation
from coconut.commands.load import is_run_folder
from coconut.commands.stage_curve import run_stage_curve
from coconut.commands.suite import run_suite
from coconut.core.errors import UserInputError

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def run(cfg: DictConfig) -> float:
    try:
        validate_eval_config(cfg)  # before a suite or a curve evaluates anything
        check_accelerator("device", cfg.device)
        if cfg.get("benchmarks") is not None:  # several benchmarks, one folder and a summary
            rows = run_suite(cfg)["benchmarks"].values()
            return sum(row["accuracy"] for row in rows) / len(rows)
        if is_run_folder(cfg.ckpt_path):  # every stage{k}-best.ckpt of a run: the per-stage curve
            return run_stage_curve(cfg, run_evaluation)[-1]["accuracy"]
        return run_evaluation(cfg)["accuracy"]
    except UserInputError as error:
        log.error("%s", error)
        sys.exit(2)


def main() -> float | None:
    """The `coconut-eval` command: an unknown group choice (`method=xyz`, `data=xyz`) gets coconut-train's
    one line listing the valid ones, before Hydra composes anything."""
    return checked_command("coconut-eval", run, CONFIG_DIR)


if __name__ == "__main__":
    main()
