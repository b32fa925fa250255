"""The typed configs of `coconut-train`, `coconut-eval` and `coconut-export`: one dataclass per config
group and top-level block, registered with Hydra's ConfigStore as the schema of each command's
primary config (`defaults: [<command>_schema, ...]` in conf/train.yaml, eval.yaml, export.yaml).

Composition type-checks against them: a string where an integer belongs, or a key no dataclass
names, stops Hydra before anything runs. What a type cannot say (a count >= 1, a probability in
[0, 1], one of a few choices) each dataclass says in `problems()`; `validate_config`,
`validate_eval_config` and `validate_export_config` run them all once, where the command starts,
and raise one ConfigError listing every problem with its key.

One name per knob, the official code's where it has one (facebookresearch/coconut: `c_thought`,
`uniform_prob`, `max_latent_stage`, `pad_latent_to_max`). Old names (`RENAMED`) are still read, from
the command line (`renamed_overrides`), an old run folder's `.hydra/config.yaml` and an old
checkpoint's hyperparameters (`coconut.training.runs.upgraded`), each with a deprecation message.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, MissingMandatoryValue, OmegaConf, ValidationError, open_dict
from omegaconf.errors import ConfigKeyError

from coconut.core.curriculum import Curriculum
from coconut.core.errors import ConfigError
from coconut.core.legibility_objective import READS
from coconut.core.methods import Method
from coconut.core.step_supervision import LOSS_LEVELS
from coconut.core.thought_projection import ProjectionConfig
from coconut.data.checks import ANSWER_KINDS
from coconut.eval.sampling import SamplingConfig
from coconut.training.gate import GateConfig as GateSettings
from coconut.training.runs import RENAMED, deprecated, renamed_knobs

log = logging.getLogger(__name__)

RESET_OPTIMIZER = ("never", "stage_change", "every_epoch")
FIX = "Fix: give these keys valid values"


# -- problem helpers: one sentence per bad value, named with its full key ------------------------------
def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _count(problems: list[str], key: str, value, minimum: int, hint: str = "", optional: bool = False) -> None:
    if value is None and optional:
        return
    if not _is_int(value) or value < minimum:
        problems.append(f"{key} must be an integer >= {minimum}, got {value!r}{hint}")


def _positive(problems: list[str], key: str, value) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or not value > 0):
        problems.append(f"{key} must be a number > 0, got {value!r}")


def _choice(problems: list[str], key: str, value, choices: Sequence[str]) -> None:
    if value not in choices:
        problems.append(f"{key} must be one of {', '.join(choices)}, got {value!r}")


# -- groups ---------------------------------------------------------------------------------------------
@dataclass
class CurriculumConfig:
    """`curriculum` (conf/curriculum/default.yaml): which stage each epoch trains, and its thoughts."""

    epochs_per_stage: int = 1  # epochs of each latent stage
    epochs_first_stage: int | None = None  # epochs of stage 0 (chain of thought); null: epochs_per_stage
    max_latent_stage: int = 3  # the last stage that still writes thoughts for its dropped steps
    c_thought: int = 1  # thoughts per replaced step (the paper's c; official: c_thought)
    pad_latent_to_max: bool = False  # beyond max_latent_stage, always max_latent_stage * c_thought thoughts
    uniform_prob: float = 0.0  # chance a sample uses a uniformly drawn stage instead (official: uniform_prob)
    reset_optimizer: str = "stage_change"  # never | stage_change | every_epoch (the official code's behaviour)
    latent_lr_scale: float = 1.0  # multiplies the learning rate once, when the curriculum leaves stage 0
    start_stage: int = 0  # stage of the first epoch; 1 continues a chain-of-thought checkpoint (init_from)

    def problems(self, key: str = "curriculum") -> list[str]:
        problems: list[str] = []
        _count(problems, f"{key}.epochs_per_stage", self.epochs_per_stage, 1)
        _count(problems, f"{key}.c_thought", self.c_thought, 1)
        _count(problems, f"{key}.max_latent_stage", self.max_latent_stage, 0)
        _count(problems, f"{key}.epochs_first_stage", self.epochs_first_stage, 1, " (or null)", optional=True)
        if not 0.0 <= self.uniform_prob <= 1.0:
            problems.append(f"{key}.uniform_prob must be a probability in [0, 1], got {self.uniform_prob!r}")
        _choice(problems, f"{key}.reset_optimizer", self.reset_optimizer, RESET_OPTIMIZER)
        _positive(problems, f"{key}.latent_lr_scale", self.latent_lr_scale)
        if _is_int(self.max_latent_stage) and not 0 <= self.start_stage <= self.max_latent_stage + 1:
            problems.append(
                f"{key}.start_stage must be in 0..{self.max_latent_stage + 1} (max_latent_stage + 1), "
                f"got {self.start_stage!r}"
            )
        return problems

    def curriculum(self) -> Curriculum:
        return Curriculum(
            epochs_per_stage=self.epochs_per_stage,
            epochs_first_stage=self.epochs_first_stage,
            max_latent_stage=self.max_latent_stage,
            c_thought=self.c_thought,
            pad_latent_to_max=self.pad_latent_to_max,
            uniform_prob=self.uniform_prob,
            start_stage=self.start_stage,
        )


@dataclass
class MethodConfig:
    """`method` (conf/method/*.yaml): how a record becomes a training sequence (coconut.core.methods)."""

    name: str = "???"  # the method's name, as its file's
    thought: str = "continuous"  # continuous (hidden state fed back) | pause (a learned token) | none
    stage: str = "curriculum"  # curriculum (from the epoch) | zero (always CoT) | final (no steps) | tokens (iCoT)
    markers: bool = True  # <|start-latent|> ... <|end-latent|> around the thoughts
    tokens_removed_per_epoch: int | None = None  # stage: tokens only: CoT tokens removed per epoch (iCoT's Delta)
    removal_smoothing_lambda: float | None = None  # stage: tokens only: removal smoothing; null: off
    remove_all_beyond: int | None = None  # stage: tokens only: remove the whole chain from this count on
    jacobi_iterations: int | None = None  # PCCoT: thoughts by T parallel Jacobi updates; null: sequential
    num_latent: int | None = None  # a fixed thought count whatever the stage (CODI); null: the curriculum's
    self_distillation: bool | None = None  # CODI: also train the chain of thought as the teacher and distil it
    ref_loss_factor: float | None = None  # CODI: the teacher's cross-entropy weight
    distill_loss_factor: float | None = None  # CODI: the distillation term's weight
    distill_loss_type: str | None = None  # CODI: smooth_l1 | l2
    distill_loss_div_std: bool | None = None  # CODI: each layer's term divided by the teacher's std
    include_last_cot: bool | None = None  # CODI: the teacher keeps the chain's last step
    max_compression_factor: Any = None  # CoLaR: the factors c trained (an int r: 1..r; a list: those); null: not CoLaR
    compression_factor: int | None = None  # CoLaR: c at inference, told in the prompt
    ce_weight: float | None = None  # CoLaR: the next-token cross-entropy's weight
    embed_modeling_weight: float | None = None  # CoLaR: the latent head's loss weight
    embed_modeling_loss: str | None = None  # CoLaR: mse (an rsample of the head) | nll
    entropy_weight: float | None = None  # CoLaR: the latent head's mean entropy's weight
    sqrt_mean: bool | None = None  # CoLaR: compress by sum / sqrt(count); false: the mean
    max_n_latent_forward: int | None = None  # CoLaR: the most latents at inference
    # The method's own thought projection (CODI's mlp), in place of model.thought_projection's.
    thought_projection: Any = None

    def method(self) -> Method:
        """The core `Method` (whose own checks raise ConfigError); keys left null take its defaults."""
        return Method(**{k: v for k, v in vars(self).items() if v is not None and k != "thought_projection"})

    def problems(self, key: str = "method") -> list[str]:
        try:
            self.method()
            if self.thought_projection is not None:
                ProjectionConfig.parse(self.thought_projection)
        except ConfigError as error:
            return [str(error)]
        return []


@dataclass
class ModelConfig:
    """`model` (conf/model/*.yaml): the base model, pretrained or built from `architecture`."""

    pretrained: str | None = None  # a Hugging Face hub id or local folder; null: from scratch
    architecture: dict[str, Any] | None = None  # a from-scratch Hugging Face config (model_type and its counts)
    tokenizer_vocab_size: int | None = None  # from scratch: the vocabulary of the tokenizer trained on the data
    dtype: str = "float32"  # the weights' dtype
    thought_projection: Any = None  # conf/model/thought_projection/*.yaml, or a name (its defaults)

    def problems(self, key: str = "model") -> list[str]:
        problems: list[str] = []
        _count(problems, f"{key}.tokenizer_vocab_size", self.tokenizer_vocab_size, 1, " (or null)", optional=True)
        if isinstance(self.architecture, dict) and not self.pretrained:
            check_architecture(self.architecture, problems, f"{key}.architecture")
        try:
            ProjectionConfig.parse(self.thought_projection)
        except ConfigError as error:
            problems.append(str(error))
        return problems


@dataclass
class DataConfig:
    """`data` (conf/data/*.yaml): where the records come from and how they are batched."""

    # ??? (no default) where a data config must say it: a missing value in a YAML does not override a default.
    name: str = "???"  # the dataset's name, as its file's
    answer_kind: str = "auto"  # number | statement | digits | auto: how answers are read and compared
    generator: dict[str, Any] | None = None  # built-in data: a `_target_` generating records offline
    sizes: dict[str, int] | None = None  # built-in data: records per split {train, val, test}
    train_path: str | None = "???"  # a file instead of the generator's training split
    val_path: str | None = "???"  # a file instead of the generator's validation split
    test_path: str | None = "???"  # a file instead of the generator's test split
    format: str = "auto"  # the files' format (coconut/data/sources.py); auto: from their content
    encoding: str | None = None  # ProsQA only: text (as written) | compact (each name one letter)
    prepare: str | None = None  # the coconut-data command that writes the files, named when one is missing
    eval_only: bool | None = None  # an evaluation set without steps: training on it is refused
    strict: bool = False  # records that cannot be used: an error (true) or skipped with a counted warning
    limit: Any = None  # the first N records of a split, e.g. {train: 1000} (untyped: +data.limit.train=N adds one)
    seed: int = 0  # the data's seed, apart from the training seed so that seed sweeps share data
    batch_size: int = 16  # training batch size per device
    eval_batch_size: int = 64  # validation and test batch size
    val_generation_size: int | None = None  # validation questions answered by generation each epoch; null: all
    max_new_tokens: int = 64  # the generation budget of an answer
    num_workers: int = 0  # DataLoader worker processes

    def problems(self, key: str = "data") -> list[str]:
        problems: list[str] = []
        for name in ("batch_size", "eval_batch_size", "max_new_tokens"):
            _count(problems, f"{key}.{name}", getattr(self, name), 1)
        _count(problems, f"{key}.val_generation_size", self.val_generation_size, 1, optional=True)
        _count(problems, f"{key}.num_workers", self.num_workers, 0)
        if self.generator is not None:
            for split in ("train", "val", "test"):
                if not getattr(self, f"{split}_path"):
                    _count(problems, f"{key}.sizes.{split}", (self.sizes or {}).get(split), 1)
        if self.limit is not None and not isinstance(self.limit, dict):
            problems.append(f"{key}.limit must be a mapping such as {{train: 1000}}, or null, got {self.limit!r}")
        for split, value in (self.limit if isinstance(self.limit, dict) else {}).items():
            _count(problems, f"{key}.limit.{split}", value, 1, " (or null for the whole split)", optional=True)
        _choice(problems, f"{key}.answer_kind", self.answer_kind, ANSWER_KINDS)
        return problems


# -- top-level blocks ------------------------------------------------------------------------------------
@dataclass
class LegibilityConfig:
    """coconut-train's `legibility`: the legibility objective (docs/legibility.md)."""

    weight: float = 0.0  # lambda: the legibility loss's weight in the training loss; 0: the paper's method
    read: str = "lm_head"  # how a thought is read: lm_head (the logit lens) | readout (sparse_readout's R)

    def problems(self, key: str = "legibility") -> list[str]:
        problems: list[str] = []
        if isinstance(self.weight, bool) or not isinstance(self.weight, int | float) or self.weight < 0:
            problems.append(f"{key}.weight must be a number >= 0 (0: the paper's method), got {self.weight!r}")
        _choice(problems, f"{key}.read", self.read, READS)
        return problems


@dataclass
class StepSupervisionConfig:
    """coconut-train's `step_supervision`: SIM-CoT's auxiliary decoder (coconut/core/step_supervision.py)."""

    weight: float = 0.0  # the step loss's weight in the training loss (their explain_loss_factor); 0: off
    loss_level: str | None = None  # sample | token: each group's sum over rows or tokens; null: the method's
    # (token for CODI's fixed thoughts, as their CODI code; sample otherwise, as their COCONUT code)

    def problems(self, method: MethodConfig, key: str = "step_supervision") -> list[str]:
        problems: list[str] = []
        if isinstance(self.weight, bool) or not isinstance(self.weight, int | float) or self.weight < 0:
            problems.append(f"{key}.weight must be a number >= 0 (0: off), got {self.weight!r}")
        if self.loss_level is not None:
            _choice(problems, f"{key}.loss_level", self.loss_level, LOSS_LEVELS)
        if self.weight and method.thought != "continuous":
            problems.append(
                f"{key}.weight={self.weight} decodes continuous thoughts; method={method.name} has "
                f"thought={method.thought}. Fix: step_supervision.weight=0, or a method with continuous thoughts"
            )
        return problems


@dataclass
class GateConfig:
    """coconut-train's `gate`: the learning gate (coconut/training/gate.py, whose GateConfig checks it)."""

    min_val_acc: float | None = None  # the bar the last stage's best `monitor` must reach; null: no gate
    extra_epochs: int = 0  # epochs the last stage may train on below the bar
    monitor: str = "val/acc"  # the validation metric held to the bar

    def gate(self) -> GateSettings:
        return GateSettings(min_val_acc=self.min_val_acc, extra_epochs=self.extra_epochs, monitor=self.monitor)

    def problems(self, key: str = "gate") -> list[str]:
        try:
            self.gate()
        except ConfigError as error:
            return [str(error)]
        return []


def trainer_problems(trainer: dict, key: str = "trainer") -> list[str]:
    """The trainer extras: `trainer` is Lightning's Trainer arguments (checked by Lightning when it is
    built) plus `cpu_threads`; these are the counts checked before anything runs."""
    problems: list[str] = []
    _count(problems, f"{key}.max_epochs", trainer.get("max_epochs"), 1, optional=True)
    hint = " (or null for the automatic choice)"
    _count(problems, f"{key}.cpu_threads", trainer.get("cpu_threads"), 1, hint, optional=True)
    return problems


@dataclass
class TrainConfig:
    """conf/train.yaml: one coconut-train run."""

    task_name: str = "train"  # the outputs/<task_name>/ folder
    seed: int = 0  # the training seed (weights, order, sampled stages)
    resume: Any = "auto"  # auto: continue the unfinished run with this config | false: start afresh
    resume_search_dir: str | None = None  # where resume=auto looks; null: the folder holding this run's
    ckpt_path: str | None = None  # resume from this checkpoint instead
    test: bool = True  # run the test split with the final weights after training
    optimizer: dict[str, Any] = field(default_factory=dict)  # a `_partial_` torch optimizer
    scheduler: dict[str, Any] | None = None  # a `_partial_` LR scheduler; null: constant LR
    scheduler_interval: str = "step"  # step | epoch: when Lightning steps the scheduler
    legibility: LegibilityConfig = field(default_factory=LegibilityConfig)  # the legibility objective
    step_supervision: StepSupervisionConfig = field(default_factory=StepSupervisionConfig)  # SIM-CoT's decoder
    gate: GateConfig = field(default_factory=GateConfig)  # the learning gate
    init_from: str | None = None  # start from this coconut-train checkpoint's weights and tokenizer
    optimized_metric: str | None = None  # hparams_search: the metric returned to the sweeper
    data: DataConfig = field(default_factory=DataConfig)  # conf/data/
    model: ModelConfig = field(default_factory=ModelConfig)  # conf/model/
    method: MethodConfig = field(default_factory=MethodConfig)  # conf/method/
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)  # conf/curriculum/
    trainer: dict[str, Any] = field(default_factory=dict)  # conf/trainer/: Lightning's Trainer + cpu_threads
    logger: dict[str, Any] | None = None  # conf/logger/: `_target_` loggers by name
    callbacks: dict[str, Any] | None = None  # conf/callbacks/: `_target_` callbacks by name
    paths: dict[str, Any] = field(default_factory=dict)  # conf/paths/: root, data and output folders

    def problems(self) -> list[str]:
        problems = [*self.curriculum.problems(), *self.method.problems(), *self.model.problems()]
        problems += [*self.data.problems(), *self.legibility.problems(), *self.gate.problems()]
        problems += self.step_supervision.problems(self.method)
        problems += trainer_problems(self.trainer)
        every = ((self.callbacks or {}).get("last_checkpoint") or {}).get("every_n_train_steps")
        _count(problems, "callbacks.last_checkpoint.every_n_train_steps", every, 1, " (or null)", optional=True)
        _positive(problems, "optimizer.lr", self.optimizer.get("lr"))
        if self.resume not in ("auto", False, "never"):
            problems.append(f"resume must be auto or false, got {self.resume!r}")
        _choice(problems, "scheduler_interval", self.scheduler_interval, ("step", "epoch"))
        return problems


# -- coconut-eval and coconut-export ------------------------------------------------------------------
@dataclass
class ForeignModelConfig:
    """coconut-eval's `model`: only for checkpoints that do not carry their model (official ones)."""

    pretrained: str | None = None  # the official checkpoint's base model and tokenizer: a hub id or folder
    dtype: str = "float32"  # the weights' dtype


@dataclass
class ForeignCurriculumConfig:
    """coconut-eval's `curriculum`: the thought count of a checkpoint that does not record it."""

    c_thought: int = 1  # thoughts per stage (official: c_thought)
    max_latent_stage: int | None = None  # stage=k beyond it keeps max_latent_stage * c_thought thoughts

    def problems(self, key: str = "curriculum") -> list[str]:
        problems: list[str] = []
        _count(problems, f"{key}.c_thought", self.c_thought, 1)
        _count(problems, f"{key}.max_latent_stage", self.max_latent_stage, 0, " (or null)", optional=True)
        return problems


@dataclass
class EvalLegibilityConfig:
    """coconut-eval's `legibility`: what is measured about the thoughts."""

    measure: bool | None = None  # null: in a single evaluation, not in a suite; true / false: always / never
    ablations: list[str] = field(default_factory=lambda: ["zeros", "mean", "other"])  # thoughts replaced by these
    intervention: bool = True  # causal legibility: edit each replaced step's thoughts, watch the answer
    probe_folds: int = 5  # cross-validation folds of the linear probe
    read: str = "lm_head"  # lm_head (the logit lens) | readout (sparse_readout checkpoints)
    reference: str | None = None  # a CoT model's evaluation folder: legibility.loss against its reasoning

    def problems(self, key: str = "legibility") -> list[str]:
        problems: list[str] = []
        _count(problems, f"{key}.probe_folds", self.probe_folds, 2)
        _choice(problems, f"{key}.read", self.read, READS)
        return problems


@dataclass
class GenerationConfig:
    """coconut-eval's `generation`: sampled answers beside the greedy one (coconut/eval/sampling.py)."""

    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0  # nucleus sampling's mass
    num_samples: int = 1  # sampled answers per question (majority vote, pass@k)

    def problems(self, key: str = "generation") -> list[str]:
        problems: list[str] = []
        _count(problems, f"{key}.num_samples", self.num_samples, 1)
        if not self.temperature >= 0:
            problems.append(f"{key}.temperature must be >= 0 (0: greedy), got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            problems.append(f"{key}.top_p must be in (0, 1], got {self.top_p!r}")
        return problems

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(temperature=self.temperature, top_p=self.top_p, num_samples=self.num_samples)


def _checkpoint_problems(cfg: EvalConfig | ExportConfig) -> list[str]:
    problems: list[str] = []
    _count(problems, "n_thoughts", cfg.n_thoughts, 0, " (or null: the stage's)", optional=True)
    _count(problems, "stage", cfg.stage, 0, " (or null: the stage the checkpoint was saved at)", optional=True)
    problems += cfg.curriculum.problems()
    if cfg.method is not None:
        problems += cfg.method.problems()
    return problems


@dataclass
class EvalConfig:
    """conf/eval.yaml: one coconut-eval evaluation (or a suite of them)."""

    task_name: str = "eval"  # the outputs/<task_name>/ folder
    ckpt_path: str = "???"  # a .ckpt, latest, best, a run folder, hf:<folder or id>, or an official checkpoint
    split: str = "test"  # train | val | test
    benchmarks: list[str] | None = None  # several benchmarks (conf/data/<name>.yaml), one folder
    limit: int | None = None  # only the first N questions
    stage: int | None = None  # the curriculum stage whose prompts are used; null: the checkpoint's
    n_thoughts: int | None = None  # thoughts per question at inference; null: the stage's
    batch_size: int = 32  # questions per generation batch
    max_new_tokens: int | None = None  # null: the data config's
    device: str = "auto"  # auto | cpu | cuda
    cpu_threads: int | None = None  # torch's CPU threads on a CPU run; null: automatic
    seed: int = 0  # the sampling seed
    legibility: EvalLegibilityConfig = field(default_factory=EvalLegibilityConfig)  # what is measured
    generation: GenerationConfig = field(default_factory=GenerationConfig)  # sampled answers
    model: ForeignModelConfig = field(default_factory=ForeignModelConfig)  # official checkpoints only
    curriculum: ForeignCurriculumConfig = field(default_factory=ForeignCurriculumConfig)  # foreign checkpoints
    data: DataConfig | None = None  # null: the checkpoint's own data config
    method: MethodConfig | None = None  # null: the method the checkpoint was trained with
    paths: dict[str, Any] = field(default_factory=dict)  # conf/paths/
    trainer: dict[str, Any] = field(default_factory=dict)  # Lightning's Trainer for trainer.devices > 1

    def problems(self) -> list[str]:
        problems = _checkpoint_problems(self)
        _count(problems, "trainer.devices", self.trainer.get("devices"), 1, optional=True)
        _count(problems, "limit", self.limit, 1, " (or null: every question)", optional=True)
        _count(problems, "max_new_tokens", self.max_new_tokens, 1, " (or null: the data config's)", optional=True)
        _count(problems, "cpu_threads", self.cpu_threads, 1, " (or null for the automatic choice)", optional=True)
        _count(problems, "batch_size", self.batch_size, 1)
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            problems.append(f"device must be auto, cpu or cuda, got {self.device!r}")
        _choice(problems, "split", self.split, ("train", "val", "test"))
        problems += self.legibility.problems() + self.generation.problems()
        if self.data is not None:
            problems += self.data.problems()
        return problems


@dataclass
class ExportConfig:
    """conf/export.yaml: one coconut-export."""

    task_name: str = "export"  # the outputs/<task_name>/ folder
    ckpt_path: str = "???"  # a .ckpt, latest, hf:<folder or id>, or an official checkpoint
    out: str = "???"  # the folder to write (new, or empty)
    stage: int | None = None  # the stage whose thought count is exported; null: the checkpoint's
    n_thoughts: int | None = None  # the thought count exported; null: the stage's
    model: ForeignModelConfig = field(default_factory=ForeignModelConfig)  # official checkpoints only
    curriculum: ForeignCurriculumConfig = field(default_factory=ForeignCurriculumConfig)  # foreign checkpoints
    method: MethodConfig | None = None  # null: the checkpoint's method
    paths: dict[str, Any] = field(default_factory=dict)  # conf/paths/

    def problems(self) -> list[str]:
        return _checkpoint_problems(self)


SCHEMAS = {"train_schema": TrainConfig, "eval_schema": EvalConfig, "export_schema": ExportConfig}
for _name, _node in SCHEMAS.items():
    ConfigStore.instance().store(name=_name, node=_node)


# -- one validation, where the command starts -------------------------------------------------------------
def renamed_overrides(overrides: Sequence[str]) -> list[str]:
    """Command-line overrides with the old names of renamed knobs (`curriculum.latents_per_step=2`)
    replaced by the new ones, each with a deprecation message."""
    out = []
    for override in overrides:
        prefix = override[: len(override) - len(override.lstrip("+~"))]
        key, sep, value = override[len(prefix) :].partition("=")
        if key in RENAMED:
            deprecated(key, f"{RENAMED[key]}{sep}{value}")
            key = RENAMED[key]
            prefix = "" if prefix == "+" else prefix  # the new key exists: `+` would refuse it
        out.append(f"{prefix}{key}{sep}{value}")
    return out


def _upgrade_in_place(cfg: DictConfig) -> None:
    """Old knob names in a composed config (an old run folder's .hydra/config.yaml) read as the new."""
    curriculum = cfg.get("curriculum")
    if not isinstance(curriculum, DictConfig) or not any(k.split(".")[1] in curriculum for k in RENAMED):
        return
    plain = OmegaConf.to_container(curriculum, resolve=False)
    with open_dict(cfg):
        cfg.curriculum = renamed_knobs({"curriculum": plain})["curriculum"]


def typed(cfg: DictConfig, schema: type):
    """`cfg` (composed by Hydra, or an old record) as the `schema` dataclass: old knob names renamed
    (in `cfg` too, so that what reads it later sees the new names), values checked against the
    dataclass's types, unknown keys refused. One ConfigError naming the key on failure."""
    _upgrade_in_place(cfg)
    try:
        plain = OmegaConf.to_container(cfg, resolve=False)  # without the flags of Hydra's nodes
        merged = OmegaConf.merge(OmegaConf.structured(schema), {k: v for k, v in plain.items() if k != "hydra"})
        return OmegaConf.to_object(merged)
    except MissingMandatoryValue as error:
        key = getattr(error, "full_key", "") or "a key"
        raise ConfigError(f"{key} has no value (??? in the config). Fix: give {key}=<value>") from None
    except (ValidationError, ConfigKeyError) as error:
        key = getattr(error, "full_key", "") or "a key"
        raise ConfigError(f"invalid configuration: {key}: {str(error).splitlines()[0]}. {FIX}") from None


def _unused_paths_left_out(cfg: DictConfig) -> DictConfig:
    """A copy of an eval config whose data paths of the splits not evaluated are null where missing."""
    data = cfg.get("data")
    if not isinstance(data, DictConfig):
        return cfg
    copy = cfg.copy()
    with open_dict(copy):
        for split in ("train", "val", "test"):
            key = f"{split}_path"
            if split != cfg.get("split") and key in data.keys() and OmegaConf.is_missing(data, key):
                copy.data[key] = None
    return copy


def _raise(problems: list[str]) -> None:
    if problems:
        raise ConfigError(f"invalid configuration: {'; '.join(problems)}. {FIX}")


def validate_config(cfg: DictConfig) -> TrainConfig:
    """A composed coconut-train config as a TrainConfig; one ConfigError listing every problem."""
    config = typed(cfg, TrainConfig)
    _raise(config.problems())
    return config


def validate_eval_config(cfg: DictConfig) -> EvalConfig:
    """A composed coconut-eval config as an EvalConfig; one ConfigError listing every problem. Only
    the evaluated split's file must be given (`data=files data.test_path=...`): the others may stay ???."""
    _upgrade_in_place(cfg)
    config = typed(_unused_paths_left_out(cfg), EvalConfig)
    _raise(config.problems())
    return config


def validate_export_config(cfg: DictConfig) -> ExportConfig:
    """A composed coconut-export config as an ExportConfig; one ConfigError listing every problem."""
    config = typed(cfg, ExportConfig)
    _raise(config.problems())
    return config


# -- a from-scratch model's numbers ---------------------------------------------------------------------
# Counts that every architecture needs at least one of, under the names Hugging Face configs use
# (GPT-2's, Llama's and most others'); None means the model's default (GPT-2's n_inner, head_dim).
ARCHITECTURE_COUNTS = (
    "n_layer", "num_hidden_layers", "num_layers",
    "n_embd", "hidden_size", "d_model",
    "n_head", "num_attention_heads", "num_heads", "num_key_value_heads",
    "n_positions", "max_position_embeddings", "n_ctx",
    "n_inner", "intermediate_size", "head_dim",
)  # fmt: skip
# (width, heads): the width splits evenly into heads unless head_dim sets the head size itself.
WIDTH_PER_HEAD = (("n_embd", "n_head"), ("hidden_size", "num_attention_heads"), ("d_model", "num_heads"))


def check_architecture(architecture: dict, problems: list[str], key: str = "model.architecture") -> None:
    """Impossible numbers in `model.architecture` (a from-scratch Hugging Face config): counts below
    1, a width that does not split into its heads, query heads not a multiple of key/value heads,
    dropout outside [0, 1]. Caught here, before a model is built or a batch is cut."""
    _check_model_type(architecture.get("model_type"), problems, key)
    bad = set()
    for name in ARCHITECTURE_COUNTS:
        value = architecture.get(name)
        if value is not None and not (_is_int(value) and value >= 1):
            problems.append(f"{key}.{name} must be an integer >= 1, got {value!r}")
            bad.add(name)
    if architecture.get("head_dim") is None:
        for width, heads in WIDTH_PER_HEAD:
            w, h = architecture.get(width), architecture.get(heads)
            if isinstance(w, int) and isinstance(h, int) and not {width, heads} & bad and w % h:
                problems.append(f"{key}.{width}={w} does not split into {key}.{heads}={h} heads (not a multiple of it)")
    q, kv = architecture.get("num_attention_heads"), architecture.get("num_key_value_heads")
    if isinstance(q, int) and isinstance(kv, int) and not {"num_attention_heads", "num_key_value_heads"} & bad:
        if q % kv:
            problems.append(f"{key}.num_attention_heads={q} is not a multiple of {key}.num_key_value_heads={kv}")
    for name, value in architecture.items():
        if str(name).endswith(("pdrop", "dropout")) and value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                problems.append(f"{key}.{name} must be a probability in [0, 1], got {value!r}")


def _check_model_type(model_type, problems: list[str], key: str) -> None:
    """A from-scratch model's `model_type` must be one Hugging Face knows; the closest ones are named
    rather than the several hundred it knows."""
    import difflib  # noqa: PLC0415

    from transformers import CONFIG_MAPPING  # noqa: PLC0415 (slow to import; only for from-scratch models)

    if model_type is None or model_type in CONFIG_MAPPING:
        return
    known = list(CONFIG_MAPPING.keys())
    close = difflib.get_close_matches(str(model_type), known, n=3, cutoff=0.5) or ["gpt2", "llama"]
    problems.append(
        f"{key}.model_type={model_type} is not a Hugging Face model type (the closest: "
        f"{', '.join(close)}; transformers knows {len(known)})"
    )
