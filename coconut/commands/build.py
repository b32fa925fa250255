"""Config -> the objects a run is made of: tokenizer, model, method, curriculum and data.

    build_method, build_curriculum     the prompt rule and the stage schedule (conf/method, conf/curriculum)
    build_language_model               the base model and tokenizer (conf/model), or `init_from=<.ckpt>`'s
    build_datamodule                   the splits, tokenized, the records that do not fit handled
    build_training                     all of the above plus the LightningModule, for coconut-train

A checkpoint becomes the same objects through coconut.commands.load, which builds the method and
curriculum here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from coconut.commands.checks import check_prepared as check_files_prepared
from coconut.commands.checks import check_thoughts_fit
from coconut.commands.config import CurriculumConfig, MethodConfig
from coconut.core.base_model import load_base_model, max_positions
from coconut.core.curriculum import Curriculum
from coconut.core.errors import ConfigError
from coconut.core.methods import Method
from coconut.core.model import ContinuousThoughtLM
from coconut.core.step_supervision import StepSupervision
from coconut.core.thought_projection import ProjectionConfig, build_thought_projection
from coconut.core.tokens import SpecialIds, special_ids
from coconut.data.checks import keep_within_context
from coconut.data.splits import load_splits, split_source
from coconut.training.checkpoints import load_checkpoint
from coconut.training.datamodule import CoconutDataModule
from coconut.training.gate import NOT_LEARNT
from coconut.training.lit_module import CoconutLitModule, rebuild_from_checkpoint
from coconut.training.runs import read_run

log = logging.getLogger(__name__)


def build_curriculum(cfg: DictConfig) -> Curriculum:
    """The curriculum of a (checked) config: its `curriculum` block typed, the schema's defaults filled."""
    curriculum = OmegaConf.merge(OmegaConf.structured(CurriculumConfig), cfg.curriculum)
    return OmegaConf.to_object(curriculum).curriculum()


def thought_projection_of(cfg: DictConfig):
    """The thought projection a run trains: the method's own (CODI's `mlp`, conf/method/codi.yaml)
    where it has one, else `model.thought_projection`; both set is refused."""
    own = (cfg.method or {}).get("thought_projection")
    chosen = cfg.model.get("thought_projection")
    if own is None:
        return chosen
    if ProjectionConfig.parse(chosen).name != "identity":
        raise ConfigError(
            f"method={cfg.method.name} brings its own thought projection (method.thought_projection="
            f"{ProjectionConfig.parse(own).name}), and model.thought_projection={ProjectionConfig.parse(chosen).name} "
            "asks for another. Fix: set one of them (the method's: method.thought_projection.<key>=...)"
        )
    return own


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


def step_supervision_of(cfg: DictConfig, method: Method) -> StepSupervision | None:
    """SIM-CoT step supervision (conf/train.yaml `step_supervision`) as the training step reads it;
    None when off (weight 0, or a config written before it existed)."""
    block = cfg.get("step_supervision") or {}
    if not block.get("weight"):
        return None
    level = block.get("loss_level") or ("token" if method.num_latent is not None else "sample")
    codi = method.num_latent is not None
    c_thought = 1 if codi else int(cfg.curriculum.c_thought)
    return StepSupervision(float(block["weight"]), c_thought, level, codi)


def check_prepared(data_cfg: DictConfig) -> None:
    """Datasets that a prepare command writes (`data.prepare`) say so when a file is missing; an
    evaluation set is refused with the message saying so."""
    if data_cfg.get("eval_only"):
        load_splits(data_cfg)  # refuses an evaluation set with the message saying so
    check_files_prepared(data_cfg)


def build_language_model(cfg: DictConfig, splits: dict) -> tuple[PreTrainedTokenizerBase, PreTrainedModel, SpecialIds]:
    """`init_from`'s weights and tokenizer, else the base model of `cfg.model` with a tokenizer that
    covers the training texts (a from-scratch model's vocabulary is built from them)."""
    if cfg.get("init_from"):
        return init_from_checkpoint(cfg.init_from)
    texts = (t for r in splits["train"] for t in (r.question, *r.steps, "### " + r.answer))
    return load_base_model(cfg.model, texts)


def build_datamodule(
    cfg: DictConfig, splits: dict, tokenizer, ids: SpecialIds, method: Method, curriculum: Curriculum, positions
) -> CoconutDataModule:
    """The splits tokenized and batched by the stage rule; records longer than the model's
    positions are skipped, or an error with data.strict=true."""
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
        step_texts=step_supervision_of(cfg, method) is not None,
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
    return datamodule


def build_module(
    cfg: DictConfig, model: ContinuousThoughtLM, tokenizer, method: Method | None = None
) -> CoconutLitModule:
    """The LightningModule: the model, its optimizer and schedule, the legibility objective, step
    supervision (its decoder a copy of the LM as it starts), and CODI's loss for a `method` with
    self_distillation."""
    return CoconutLitModule(
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
        codi=method,
        step_supervision=step_supervision_of(cfg, method) if method is not None else None,
    )


@dataclass
class Built:
    """What `build_training` makes of a coconut-train config."""

    tokenizer: PreTrainedTokenizerBase
    ids: SpecialIds  # the thought tokens' ids
    method: Method
    curriculum: Curriculum
    lm: PreTrainedModel  # the base causal LM inside `model`
    model: ContinuousThoughtLM
    datamodule: CoconutDataModule
    module: CoconutLitModule


def build_training(cfg: DictConfig, method: Method, curriculum: Curriculum) -> Built:
    """The data, tokenizer, model and LightningModule of a coconut-train run (after the data files
    are checked to exist and the final stage's thoughts to fit the model's positions)."""
    check_prepared(cfg.data)
    splits = load_splits(cfg.data)
    tokenizer, lm, ids = build_language_model(cfg, splits)
    positions = max_positions(lm.config)
    check_thoughts_fit(method, curriculum, positions, cfg.data.max_new_tokens)
    projection = build_thought_projection(thought_projection_of(cfg), lm)
    model = ContinuousThoughtLM(lm, ids.latent, projection, jacobi_iterations=method.jacobi_iterations)
    datamodule = build_datamodule(cfg, splits, tokenizer, ids, method, curriculum, positions)
    module = build_module(cfg, model, tokenizer, method)
    return Built(tokenizer, ids, method, curriculum, lm, model, datamodule, module)
