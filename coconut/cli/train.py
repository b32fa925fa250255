"""`coconut-train`: the Hydra entry point. `train(cfg)` is a plain function tests call directly.

coconut-train                                    # CPU quickstart on the built-in arithmetic data
coconut-train experiment=<name> key=value ...    # any configuration
coconut-train -m curriculum.c_thought=1,2 seed=0,1,2   # a sweep, one output folder per run
"""

from __future__ import annotations

import errno
import json
import logging
import signal
import sys
from pathlib import Path

import hydra
import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from coconut import CONFIG_DIR
from coconut.cli.checks import check_accelerator, check_thoughts_fit, checked_command
from coconut.cli.checks import check_prepared as check_files_prepared
from coconut.commands.config import CurriculumConfig, MethodConfig, validate_config
from coconut.core.base_model import load_base_model, max_positions, save_tokenizer
from coconut.core.curriculum import Curriculum
from coconut.core.errors import DISK_FULL, ConfigError, UserInputError
from coconut.core.methods import Method
from coconut.core.model import ContinuousThoughtLM
from coconut.core.thought_projection import build_thought_projection
from coconut.core.threads import apply_cpu_threads
from coconut.core.tokens import special_ids
from coconut.data.checks import keep_within_context
from coconut.data.splits import load_splits, split_source
from coconut.eval.report import flat_params, write_hparams
from coconut.training.callbacks import CurriculumCallback, StageBestCheckpoint
from coconut.training.checkpoints import load_checkpoint, require_complete, require_fits
from coconut.training.cpu_load import FollowCpuLoad
from coconut.training.datamodule import CoconutDataModule
from coconut.training.gate import NOT_LEARNT, LearningGate, StageNotLearnt
from coconut.training.health import StopOnNonFiniteLoss
from coconut.training.lit_module import CoconutLitModule, rebuild_from_checkpoint
from coconut.training.progress_log import LogMetrics, lightning_logs_to_root
from coconut.training.runs import read_run, recorded, resume_point, run_config
from coconut.training.strategies import build_strategy

log = logging.getLogger(__name__)


def build_curriculum(cfg: DictConfig) -> Curriculum:
    """The curriculum of a (checked) config: its `curriculum` block typed, the schema's defaults filled."""
    curriculum = OmegaConf.merge(OmegaConf.structured(CurriculumConfig), cfg.curriculum)
    return OmegaConf.to_object(curriculum).curriculum()


def build_method(cfg: DictConfig) -> Method:
    method = OmegaConf.merge(OmegaConf.structured(MethodConfig), cfg.method)
    return OmegaConf.to_object(method).method()


def init_from_checkpoint(path: str):
    """`init_from=<.ckpt>`: the weights and tokenizer of an earlier coconut-train run (e.g. the
    chain-of-thought run a COCONUT run starts from), with a fresh optimizer and epoch 0; the
    `model` group is not used. Unlike ckpt_path (resume), the new run's config decides the rest."""
    written_by = read_run(Path(path).resolve().parent.parent) or {}
    if written_by.get("status") == NOT_LEARNT:
        raise ConfigError(
            f"init_from={path}: the run that wrote it stopped at its learning gate (run.json status "
            f"{NOT_LEARNT}: its last stage never reached gate.min_val_acc), so its weights have not learnt what "
            "this run builds on. Fix: rerun that stage with another seed or more gate.extra_epochs, or give "
            "another checkpoint"
        )
    checkpoint = load_checkpoint(path, "init_from")
    if "coconut" not in checkpoint:
        raise ConfigError(f"init_from={path}: not a coconut-train checkpoint (it has no 'coconut' entry)")
    model, tokenizer = rebuild_from_checkpoint(checkpoint)
    log.info("init_from %s: weights and tokenizer loaded (model=%s not used)", path, model.lm.config.model_type)
    return tokenizer, model.lm, special_ids(tokenizer)


def legibility_weight(cfg: DictConfig) -> float:
    """lambda of the legibility objective (conf/train.yaml `legibility.weight`); 0 for configs
    written before it existed (a resumed run's)."""
    return float((cfg.get("legibility") or {}).get("weight", 0.0))


def check_prepared(data_cfg: DictConfig) -> None:
    """Datasets that a prepare command writes (`data.prepare`) say so when a file is missing; an
    evaluation set is refused with the message saying so."""
    if data_cfg.get("eval_only"):
        load_splits(data_cfg)  # refuses an evaluation set with the message saying so
    check_files_prepared(data_cfg)


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


def train(cfg: DictConfig) -> dict[str, float]:
    """Trains (and optionally tests) one configuration; returns the final logged metrics."""
    config = validate_config(cfg)  # types and ranges of every key, old knob names read as the new
    check_accelerator("trainer.accelerator", cfg.trainer.get("accelerator"))
    devices = cfg.trainer.get("devices")
    cpu_threads = apply_cpu_threads(  # CPU runs: threads from the allowed cores, fewer while others use them
        cfg.trainer.get("cpu_threads"),
        device=cfg.trainer.accelerator,
        processes=devices if isinstance(devices, int) else 1,
    )
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    curriculum, method = build_curriculum(cfg), build_method(cfg)
    if curriculum.start_stage and not cfg.get("init_from"):
        # Skipping stage 0 from a base model that never learnt the chain of thought is a mistake; a
        # baseline that continues a stage-0 run (graph_cot, graph_no_cot) says so the same way.
        raise ConfigError(
            f"curriculum.start_stage={curriculum.start_stage} starts after stage 0, so it needs a model that has "
            "learnt the chain of thought. Fix: give init_from=<checkpoint> of the stage-0 run the preset names (e.g. "
            "checkpoints/stage0-best.ckpt of `coconut-train experiment=gsm8k_cot`, checkpoints/last.ckpt of "
            "`experiment=graph_stage0` with the same seed), or set curriculum.start_stage=0"
        )

    # Before anything is written into output_dir (README "Resuming interrupted runs").
    run_cfg = run_config(cfg)
    ckpt_path = resume_point(cfg, output_dir, run_cfg)
    if ckpt_path is not None and cfg.get("ckpt_path"):  # Lightning loads it: a damaged copy gets one message first
        require_complete(ckpt_path, "ckpt_path")
    elif ckpt_path is not None:
        require_complete(
            ckpt_path,
            label=f"resume=auto: {ckpt_path}, the last checkpoint of the unfinished run with this config,",
            fix="resume from an earlier one with ckpt_path=<file>, or start afresh with resume=false",
        )

    check_prepared(cfg.data)
    splits = load_splits(cfg.data)
    if cfg.get("init_from"):
        tokenizer, lm, ids = init_from_checkpoint(cfg.init_from)
    else:
        texts = (t for r in splits["train"] for t in (r.question, *r.steps, "### " + r.answer))
        tokenizer, lm, ids = load_base_model(cfg.model, texts)
    positions = max_positions(lm.config)
    check_thoughts_fit(method, curriculum, positions, cfg.data.max_new_tokens)
    save_tokenizer(tokenizer, output_dir / "tokenizer")
    model = ContinuousThoughtLM(lm, ids.latent, build_thought_projection(cfg.model.get("thought_projection"), lm))

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
        legibility_targets=legibility_weight(cfg) > 0,
    )
    for split in datamodule.samples:  # records longer than the model's positions: skipped or an error
        datamodule.records[split], datamodule.samples[split] = keep_within_context(
            datamodule.records[split],
            datamodule.samples[split],
            source=split_source(cfg.data, split),
            method=method,
            curriculum=curriculum,
            ids=ids,
            positions=positions,
            generation_budget=0 if split == "train" else cfg.data.max_new_tokens,
            strict=cfg.data.get("strict", False),
        )
    module = CoconutLitModule(
        model,
        tokenizer,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        scheduler_interval=cfg.get("scheduler_interval", "step"),
        answer_kind=cfg.data.answer_kind,
        max_new_tokens=cfg.data.max_new_tokens,
        config=OmegaConf.to_container(cfg, resolve=True),
        legibility_weight=legibility_weight(cfg),
        legibility_read=cfg.get("legibility", {}).get("read", "lm_head"),
    )
    log.info(describe(cfg, datamodule, curriculum, method))

    checkpoint_dir = output_dir / "checkpoints"
    stage_best = StageBestCheckpoint(str(checkpoint_dir), curriculum, method, monitor="val/acc")
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
    strategy = build_strategy(cfg.trainer, lm)
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_cfg.pop("cpu_threads", None)  # applied above, not a Trainer argument
    try:
        trainer: L.Trainer = instantiate(
            trainer_cfg, callbacks=callbacks, logger=logger or False, **({"strategy": strategy} if strategy else {})
        )
    except InstantiationException as error:  # Lightning's own check of the trainer's settings
        if not isinstance(error.__cause__, MisconfigurationException):
            raise
        raise ConfigError(f"trainer: {str(error.__cause__).strip()} Fix: change these trainer.* keys") from None
    if ckpt_path is not None:  # another architecture or vocabulary: one message, not Lightning's size mismatch
        require_fits(ckpt_path, module, OmegaConf.to_container(cfg.model, resolve=True))
    with recorded(
        output_dir, run_cfg, ckpt_path, enabled=trainer.is_global_zero, cpu_threads=cpu_threads.record
    ) as run:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if gate.failure:
            run["status"] = NOT_LEARNT
        elif cfg.get("test"):
            trainer.test(module, datamodule=datamodule, ckpt_path=None)
            metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    if trainer.is_global_zero:
        # What scripts/aggregate.py tabulates across a sweep: final metrics, best val/acc per stage.
        best = {f"stage{s}": b["score"] for s, b in sorted(stage_best.best.items())}
        summary = {"final": metrics, "best_per_stage": {"val/acc": best}, "gate": gate.summary()}
        (output_dir / "metrics.json").write_text(json.dumps(summary, indent=1) + "\n")
        for tensorboard in (lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)):
            write_hparams(Path(tensorboard.log_dir), flat_params(run_cfg), list(metrics))  # the HPARAMS tab
    if gate.failure:
        raise StageNotLearnt(gate.failure)
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def run(cfg: DictConfig) -> float | None:
    lightning_logs_to_root()  # Lightning's messages into Hydra's console and train.log
    try:
        metrics = train(cfg)
    except UserInputError as error:
        # The user's input is wrong: say what and how to fix it, without a traceback.
        log.error("%s", error)
        sys.exit(2)
    except OSError as error:  # the run's folder, outside the training loop (tokenizer/, metrics.json)
        if error.errno not in (*DISK_FULL, errno.EACCES, errno.EROFS, errno.EPERM):
            raise
        log.error(
            "could not write %s (%s). Fix: free space there, or give a folder you can write to (hydra.run.dir=...)",
            error.filename or cfg.paths.output_dir,
            error.strerror,
        )
        sys.exit(2)
    except SIGTERMException:
        last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        log.error("stopped by SIGTERM; %s holds the run so far: run the same command again to resume", last)
        sys.exit(128 + signal.SIGTERM)  # what a shell reports for a process ended by SIGTERM
    # A sweeper (hparams_search=...) optimises the value returned here.
    name = cfg.get("optimized_metric")
    if name and name not in metrics:
        log.error("optimized_metric=%s was not logged; logged: %s", name, ", ".join(sorted(metrics)))
        sys.exit(2)
    return metrics[name] if name else None


def main() -> float | None:
    """The `coconut-train` command: a config group choice that does not exist (`method=xyz`) gets
    one line listing the valid ones, before Hydra composes anything."""
    return checked_command("coconut-train", run, CONFIG_DIR)


if __name__ == "__main__":
    main()
