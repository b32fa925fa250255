"""`coconut-train`: the Hydra entry point. `train(cfg)` is a plain function tests call directly.

coconut-train                                    # CPU quickstart on the built-in arithmetic data
coconut-train experiment=<name> key=value ...    # any configuration
coconut-train -m curriculum.c_thought=1,2 seed=0,1,2   # a sweep, one output folder per run
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from coconut.base_model import load_base_model, save_tokenizer
from coconut.callbacks import CurriculumCallback, StageBestCheckpoint
from coconut.curriculum import Curriculum
from coconut.data.splits import load_splits
from coconut.datamodule import CoconutDataModule
from coconut.errors import UserInputError
from coconut.lit_module import CoconutLitModule
from coconut.methods import Method
from coconut.model import ContinuousThoughtLM

log = logging.getLogger(__name__)
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def build_curriculum(cfg: DictConfig) -> Curriculum:
    c = cfg.curriculum
    return Curriculum(
        epochs_per_stage=c.epochs_per_stage,
        epochs_first_stage=c.get("epochs_first_stage"),
        max_latent_stage=c.max_latent_stage,
        latents_per_step=c.latents_per_step,
        pad_latent_to_max=c.pad_latent_to_max,
        stage_mix_prob=c.stage_mix_prob,
    )


def build_method(cfg: DictConfig) -> Method:
    return Method(name=cfg.method.name, thought=cfg.method.thought, stage=cfg.method.stage, markers=cfg.method.markers)


def describe(cfg: DictConfig, datamodule: CoconutDataModule, curriculum: Curriculum, method: Method) -> str:
    """Derived quantities worth seeing before a long run starts."""
    train = datamodule.samples["train"]
    n_steps = sum(len(s.steps) for s in train) / max(len(train), 1)
    final = curriculum.plan(curriculum.final_stage, round(n_steps)).thoughts if method.thought != "none" else 0
    stages = sorted({method.stage_at_epoch(curriculum, e) for e in range(cfg.trainer.max_epochs)})
    return (
        f"method={method.name} | train/val/test = {len(train)}/{len(datamodule.samples['val'])}/"
        f"{len(datamodule.samples['test'])} records, {n_steps:.1f} steps each | stages {stages} over "
        f"{cfg.trainer.max_epochs} epochs | {curriculum.latents_per_step} thoughts per step, "
        f"~{final} per sample at the final stage | {len(train) // cfg.data.batch_size} steps/epoch"
    )


def train(cfg: DictConfig) -> dict[str, float]:
    """Trains (and optionally tests) one configuration; returns the final logged metrics."""
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    curriculum, method = build_curriculum(cfg), build_method(cfg)

    splits = load_splits(cfg.data)
    texts = (t for r in splits["train"] for t in (r.question, *r.steps, "### " + r.answer))
    tokenizer, lm, ids = load_base_model(cfg.model, texts)
    save_tokenizer(tokenizer, output_dir / "tokenizer")
    model = ContinuousThoughtLM(lm, ids.latent)

    datamodule = CoconutDataModule(
        splits,
        tokenizer,
        ids,
        method,
        curriculum,
        batch_size=cfg.data.batch_size,
        eval_batch_size=cfg.data.eval_batch_size,
        val_generation_size=cfg.data.val_generation_size,
        seed=cfg.seed,
        num_workers=cfg.data.num_workers,
    )
    module = CoconutLitModule(
        model,
        tokenizer,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        answer_kind=cfg.data.answer_kind,
        max_new_tokens=cfg.data.max_new_tokens,
        config=OmegaConf.to_container(cfg, resolve=True),
    )
    log.info(describe(cfg, datamodule, curriculum, method))

    checkpoint_dir = output_dir / "checkpoints"
    callbacks = [
        CurriculumCallback(curriculum, method, cfg.curriculum.reset_optimizer),
        StageBestCheckpoint(str(checkpoint_dir), curriculum, method, monitor="val/acc"),
        *(instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None),
    ]
    logger = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger or False)
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if cfg.get("test"):
        trainer.test(module, datamodule=datamodule, ckpt_path=None)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    try:
        train(cfg)
    except UserInputError as error:
        # The user's input is wrong: say what and how to fix it, without a traceback.
        log.error("%s", error)
        sys.exit(2)


if __name__ == "__main__":
    main()
