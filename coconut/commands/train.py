"""coconut-train's run: `train(cfg)` is a plain function tests call directly (the `@hydra.main`
shell is coconut/cli/train.py). Its steps, in order:

    start           the config's checks, the CPU threads, the seed
    resume_from     the checkpoint an unfinished run with this config continues from (or ckpt_path)
    build_training  data, tokenizer, model, LightningModule (coconut/commands/build.py)
    build_trainer   the callbacks (curriculum, best checkpoint per stage, learning gate) and the Trainer
    fit             fit (and test), recorded in run.json
    write_metrics   metrics.json and TensorBoard's HPARAMS tab
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from coconut.commands.build import Built, build_curriculum, build_method, build_training
from coconut.commands.checks import check_accelerator
from coconut.commands.config import TrainConfig, validate_config
from coconut.core.base_model import save_tokenizer
from coconut.core.curriculum import Curriculum
from coconut.core.errors import ConfigError
from coconut.core.methods import Method
from coconut.eval.report import flat_params, write_hparams
from coconut.training.callbacks import CurriculumCallback, StageBestCheckpoint
from coconut.training.checkpoints import require_complete, require_fits
from coconut.training.cpu_load import FollowCpuLoad
from coconut.training.datamodule import CoconutDataModule
from coconut.training.gate import NOT_LEARNT, LearningGate, StageNotLearnt
from coconut.training.health import StopOnNonFiniteLoss
from coconut.training.progress_log import LogMetrics
from coconut.training.runs import recorded, resume_point, run_config
from coconut.training.strategies import build_strategy
from coconut.training.threads import apply_cpu_threads

log = logging.getLogger(__name__)


def describe(cfg: DictConfig, datamodule: CoconutDataModule, curriculum: Curriculum, method: Method) -> str:
    """Derived quantities worth seeing before a long run starts."""
    train = datamodule.samples["train"]
    n_steps = sum(len(s.steps) for s in train) / max(len(train), 1)
    final = curriculum.plan(curriculum.final_stage, round(n_steps)).thoughts if method.thought != "none" else 0
    stages = sorted({method.stage_at_epoch(curriculum, e) for e in range(cfg.trainer.max_epochs)})
    return (
        f"method={method.name} | train/val/test = {len(train)}/{len(datamodule.samples['val'])}/"
        f"{len(datamodule.samples['test'])} records, {n_steps:.1f} steps each | stages {stages} over "
        f"{cfg.trainer.max_epochs} epochs | {curriculum.c_thought} thoughts per step, "
        f"~{final} per sample at the final stage | {len(train) // cfg.data.batch_size} steps/epoch"
        + (f" | starts at stage {curriculum.start_stage}" if curriculum.start_stage else "")
    )


def start(cfg: DictConfig) -> tuple[TrainConfig, object]:
    """The config's checks, the CPU threads (CPU runs: from the allowed cores, fewer while others use
    them) and the seed; returns the typed config and the thread governor."""
    config = validate_config(cfg)  # types and ranges of every key, old knob names read as the new
    check_accelerator("trainer.accelerator", cfg.trainer.get("accelerator"))
    devices = cfg.trainer.get("devices")
    cpu_threads = apply_cpu_threads(
        cfg.trainer.get("cpu_threads"),
        device=cfg.trainer.accelerator,
        processes=devices if isinstance(devices, int) else 1,
    )
    L.seed_everything(cfg.seed, workers=True)
    return config, cpu_threads


def check_start_stage(cfg: DictConfig, curriculum: Curriculum) -> None:
    """Skipping stage 0 from a base model that never learnt the chain of thought is a mistake; a
    baseline that continues a stage-0 run (graph_cot, graph_no_cot) says so the same way."""
    if curriculum.start_stage and not cfg.get("init_from"):
        raise ConfigError(
            f"curriculum.start_stage={curriculum.start_stage} starts after stage 0, so it needs a model that has "
            "learnt the chain of thought. Fix: give init_from=<checkpoint> of the stage-0 run the preset names (e.g. "
            "checkpoints/stage0-best.ckpt of `coconut-train experiment=gsm8k_cot`, checkpoints/last.ckpt of "
            "`experiment=graph_stage0` with the same seed), or set curriculum.start_stage=0"
        )


def resume_from(cfg: DictConfig, output_dir: Path, run_cfg: dict) -> Path | None:
    """The checkpoint this run continues from, checked to be complete, before anything is written
    into output_dir (README "Resuming interrupted runs")."""
    ckpt_path = resume_point(cfg, output_dir, run_cfg)
    if ckpt_path is not None and cfg.get("ckpt_path"):  # Lightning loads it: a damaged copy gets one message first
        require_complete(ckpt_path, "ckpt_path")
    elif ckpt_path is not None:
        require_complete(
            ckpt_path,
            label=f"resume=auto: {ckpt_path}, the last checkpoint of the unfinished run with this config,",
            fix="resume from an earlier one with ckpt_path=<file>, or start afresh with resume=false",
        )
    return ckpt_path


@dataclass
class TrainerRun:
    """The Lightning Trainer and the callbacks whose results train() reads after fitting."""

    trainer: L.Trainer
    stage_best: StageBestCheckpoint
    gate: LearningGate


def build_trainer(cfg: DictConfig, config: TrainConfig, built: Built, cpu_threads) -> TrainerRun:
    """The callbacks (the curriculum's, the best checkpoint per stage, the learning gate, the
    configured ones), the loggers and the Lightning Trainer of `cfg.trainer`."""
    curriculum, method = built.curriculum, built.method
    stage_best = StageBestCheckpoint(
        str(Path(cfg.paths.output_dir) / "checkpoints"), curriculum, method, monitor="val/acc"
    )
    gate = LearningGate(config.gate.gate(), curriculum, method)
    callbacks = [
        CurriculumCallback(
            curriculum,
            method,
            config.curriculum.reset_optimizer,
            latent_lr_scale=config.curriculum.latent_lr_scale,
        ),
        StopOnNonFiniteLoss(),
        FollowCpuLoad(cpu_threads),
        stage_best,
        gate,
        LogMetrics(),  # train/loss, validation and test metrics as log lines (console and train.log)
        *(instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None),
    ]
    logger = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    # FSDP wraps the base model's decoder blocks, a class known only now (coconut/training/strategies.py).
    strategy = build_strategy(cfg.trainer, built.lm)
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_cfg.pop("cpu_threads", None)  # applied in start(), not a Trainer argument
    try:
        trainer: L.Trainer = instantiate(
            trainer_cfg, callbacks=callbacks, logger=logger or False, **({"strategy": strategy} if strategy else {})
        )
    except InstantiationException as error:  # Lightning's own check of the trainer's settings
        if not isinstance(error.__cause__, MisconfigurationException):
            raise
        raise ConfigError(f"trainer: {str(error.__cause__).strip()} Fix: change these trainer.* keys") from None
    return TrainerRun(trainer, stage_best, gate)


def fit(cfg: DictConfig, built: Built, run: TrainerRun, ckpt_path: Path | None, run_cfg: dict, cpu_threads) -> dict:
    """Fits (and with `test=true` tests) the model, recorded in run.json; returns the final metrics."""
    trainer, module, datamodule = run.trainer, built.module, built.datamodule
    with recorded(
        Path(cfg.paths.output_dir), run_cfg, ckpt_path, enabled=trainer.is_global_zero, cpu_threads=cpu_threads.record
    ) as record:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if run.gate.failure:
            record["status"] = NOT_LEARNT
        elif cfg.get("test"):
            trainer.test(module, datamodule=datamodule, ckpt_path=None)
            metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    return metrics


def write_metrics(output_dir: Path, run: TrainerRun, metrics: dict, run_cfg: dict) -> None:
    """What scripts/aggregate.py tabulates across a sweep (metrics.json: final metrics, best val/acc
    per stage, the gate), and the HPARAMS tab of each TensorBoard logger."""
    best = {f"stage{s}": b["score"] for s, b in sorted(run.stage_best.best.items())}
    summary = {"final": metrics, "best_per_stage": {"val/acc": best}, "gate": run.gate.summary()}
    (output_dir / "metrics.json").write_text(json.dumps(summary, indent=1) + "\n")
    for tensorboard in (lg for lg in run.trainer.loggers if isinstance(lg, TensorBoardLogger)):
        write_hparams(Path(tensorboard.log_dir), flat_params(run_cfg), list(metrics))  # the HPARAMS tab


def train(cfg: DictConfig) -> dict[str, float]:
    """Trains (and optionally tests) one configuration; returns the final logged metrics."""
    config, cpu_threads = start(cfg)
    output_dir = Path(cfg.paths.output_dir)
    curriculum, method = build_curriculum(cfg), build_method(cfg)
    check_start_stage(cfg, curriculum)
    run_cfg = run_config(cfg)
    ckpt_path = resume_from(cfg, output_dir, run_cfg)
    built = build_training(cfg, method, curriculum)
    save_tokenizer(built.tokenizer, output_dir / "tokenizer")
    log.info(describe(cfg, built.datamodule, curriculum, method))
    run = build_trainer(cfg, config, built, cpu_threads)
    if ckpt_path is not None:  # another architecture or vocabulary: one message, not Lightning's size mismatch
        require_fits(ckpt_path, built.module, OmegaConf.to_container(cfg.model, resolve=True))
    metrics = fit(cfg, built, run, ckpt_path, run_cfg, cpu_threads)
    if run.trainer.is_global_zero:
        write_metrics(output_dir, run, metrics, run_cfg)
    if run.gate.failure:
        raise StageNotLearnt(run.gate.failure)
    return metrics
