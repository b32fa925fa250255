"""coconut-eval on one split: `run_evaluation(cfg)` (the `@hydra.main` shell is coconut/cli/evaluate.py).
Every evaluation writes into its own folder (outputs/eval/runs/<time>/), never into a training run's.
Its steps, in order:

    prepare_questions   the config's checks, the checkpoint loaded (coconut/commands/load.py) onto its
                        device, the split's answerable questions as prompt batches
    answer              generation, legibility, ablations (coconut/eval/evaluator.py), and sampling
    describe_run        what was evaluated, added to the report
    log_summary         accuracy, tokens and legibility in one line

Several benchmarks (coconut/commands/suite.py) and the per-stage curve of a run folder
(coconut/commands/stage_curve.py) run this once per benchmark or stage.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from coconut.commands.checks import check_accelerator, check_prepared
from coconut.commands.config import validate_eval_config
from coconut.commands.load import LoadedCheckpoint, load_any, resolve_checkpoint
from coconut.commands.run_folders import holds_an_evaluation
from coconut.core.base_model import max_positions
from coconut.core.errors import ConfigError, UserInputError
from coconut.core.legibility_objective import READS
from coconut.core.thought_projection import projection_config
from coconut.core.tokens import special_ids
from coconut.data.benchmarks import FORMATS
from coconut.data.checks import keep_answerable
from coconut.data.prepare import BENCHMARKS, conversion_left_out
from coconut.data.sequences import tokenize_records
from coconut.data.sources import read_converted
from coconut.data.splits import load_splits, split_source
from coconut.eval.evaluator import evaluate
from coconut.eval.report import About, thoughts_verdict, write_evaluation
from coconut.eval.sampling import SamplingConfig, add_sampling
from coconut.eval.suite import thoughts_used
from coconut.training.datamodule import prompt_loader
from coconut.training.predict import lightning_answerer, predict_trainer
from coconut.training.runs import holds_a_run
from coconut.training.threads import apply_cpu_threads

log = logging.getLogger(__name__)

# The raw files of the evaluation-only benchmarks under their published names (ASDiv.xml, SVAMP.json, ...).
PUBLISHED_NAMES = {name for b in BENCHMARKS.values() if b.eval_only for names in b.files.values() for name in names}


def reference_legibility(folder: str) -> dict[str, float]:
    """question -> legibility of the reasoning in an earlier evaluation (a CoT model's)."""
    path = Path(folder) / "samples.jsonl"
    if not path.is_file():
        raise ConfigError(f"legibility.reference={folder}: no samples.jsonl there; give a coconut-eval output folder")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["question"]: r["legibility"] for r in rows if r.get("legibility") is not None}


def thought_read(cfg: DictConfig, model, ckpt_path: str) -> str:
    """`legibility.read`, checked against the checkpoint's projection before anything is generated."""
    read = cfg.legibility.get("read") or "lm_head"
    if read not in READS:
        raise ConfigError(f"legibility.read={read}: choose one of {', '.join(READS)}")
    if read == "readout" and not hasattr(model.thought_projection, "readout_logits"):
        raise ConfigError(
            f"legibility.read=readout reads each thought through the sparse_readout projection's readout, but "
            f"{ckpt_path} was trained with {projection_config(model.thought_projection)['name']}. "
            "Fix: legibility.read=lm_head (the logit lens), or a checkpoint trained with "
            "model/thought_projection=sparse_readout"
        )
    return read


def with_checkpoint_encoding(data_cfg: DictConfig, trained: DictConfig | None) -> DictConfig:
    """A model trained on ProsQA's compact encoding reads only that encoding: any ProsQA file it is
    evaluated on (data=prosqa, data=files ...) is encoded the same way (coconut/data/prosqa.py)."""
    encoding = (trained.data.get("encoding") if trained is not None else None) or "text"
    if encoding == (data_cfg.get("encoding") or "text"):
        return data_cfg
    log.info("reading the questions in the %s encoding the checkpoint was trained on (data.encoding)", encoding)
    data_cfg = data_cfg.copy()
    with open_dict(data_cfg):
        data_cfg.encoding = encoding
    return data_cfg


def left_out_of(data_cfg: DictConfig, split: str) -> Counter:
    """The published file's problems that the split's file lacks, by reason: what coconut-data left
    out (its manifest.json), or what reading a raw benchmark file (ASDiv.xml as published) leaves out."""
    path = data_cfg.get(f"{split}_path")
    if not path:
        return Counter()
    left_out = conversion_left_out(path)
    data_format = data_cfg.get("format", "auto")
    if not left_out and (data_format in FORMATS or data_format == "auto" and Path(path).name in PUBLISHED_NAMES):
        try:
            converted = read_converted(path, data_format)
        except UserInputError:
            return Counter()
        left_out = Counter({f"left out at reading: {r}": len(i) for r, i in converted.left_out.items()})
    return left_out


@dataclass
class Questions:
    """What an evaluation answers, from `prepare_questions`: the loaded checkpoint, the split's
    answerable records and their prompt batches, and what the report says about them."""

    loaded: LoadedCheckpoint  # model, tokenizer, method, curriculum, stage, ...
    ckpt_path: str
    data_cfg: DictConfig
    split: str
    records: list
    skipped: Counter  # reason -> count of the split's questions not answered
    loader: object  # prompt batches (torch DataLoader), the thoughts of the stage or n_thoughts
    ids: object  # the special token ids
    max_new_tokens: int
    read: str
    cpu_threads: object  # the thread governor of a CPU run
    output_dir: Path


def check_output_dir(output_dir: Path) -> None:
    """An evaluation never writes over an earlier evaluation's or a training run's outputs."""
    if holds_an_evaluation(output_dir) or holds_a_run(output_dir):  # before anything is written there
        raise ConfigError(
            f"paths.output_dir={output_dir} already holds an earlier evaluation's or a training run's outputs; "
            "an evaluation never writes over them. Fix: leave paths.output_dir to its default (a new folder) "
            "or give a new folder"
        )


def eval_data_config(cfg: DictConfig, loaded: LoadedCheckpoint, ckpt_path: str) -> DictConfig:
    """`data=` if given, else the checkpoint's own data config (the very test split of its training
    run), read in the encoding the checkpoint was trained on; its files checked to exist."""
    trained = loaded.trained
    if not cfg.get("data") and trained is None:
        raise ConfigError(
            f"ckpt_path={ckpt_path}: a {loaded.kind} checkpoint carries no data config. Fix: give data=<name> "
            "(and its keys, e.g. data=files data.test_path=...)"
        )
    data_cfg = cfg.data if cfg.get("data") else trained.data
    data_cfg = with_checkpoint_encoding(data_cfg, trained)
    if cfg.split not in ("train", "val", "test"):
        raise ConfigError(f"split={cfg.split}: choose train, val or test")
    check_prepared(data_cfg, (cfg.split,))  # a benchmark coconut-data writes: the command, the absolute path
    return data_cfg


def load_questions(cfg: DictConfig, data_cfg: DictConfig, split: str) -> tuple[list, Counter]:
    """The split's records and, by reason, the questions not answered. Honest denominators: every
    question of the split is counted; skipped ones, by reason, as wrong, and so are the published
    file's problems that coconut-data left out (ASDiv's non-numeric answers). A question without
    reference steps is no fault here: nothing trains on it."""
    skipped_by_split: dict[str, Counter] = {}
    records = load_splits(data_cfg, (split,), skipped=skipped_by_split, expect_steps=False)[split]
    skipped = skipped_by_split.get(split, Counter()) + left_out_of(data_cfg, split)
    if cfg.get("limit"):
        records = records[: cfg.limit]
        skipped.clear()  # the answer check saw the whole file; with limit, only the first N count
    return records, skipped


def prompt_batches(cfg: DictConfig, loaded: LoadedCheckpoint, data_cfg, split, records, skipped, ids, max_new_tokens):
    """(the answerable records, their prompt batches). A question whose prompt (as evaluated: this
    stage, or n_thoughts) leaves fewer positions than max_new_tokens is skipped with a counted warning
    (an error with data.strict=true), rather than generating past the model's last position; it
    counts as wrong in `accuracy`."""
    model, tokenizer, method, curriculum = loaded.model, loaded.tokenizer, loaded.method, loaded.curriculum
    records, samples = keep_answerable(
        records,
        tokenize_records(records, tokenizer, speeds=(method.compression_factor,) if method.colar else ()),
        source=split_source(data_cfg, split),
        stage=loaded.stage,
        method=method,
        curriculum=curriculum,
        ids=ids,
        positions=max_positions(model.lm.config),
        generation_budget=max_new_tokens,
        n_thoughts=loaded.n_thoughts,
        strict=data_cfg.get("strict", False),
        skipped=skipped,
    )
    loader = prompt_loader(
        records,
        samples,
        stage=loaded.stage,
        method=method,
        curriculum=curriculum,
        ids=ids,
        batch_size=cfg.batch_size,
        n_thoughts=loaded.n_thoughts,
    )
    return records, loader


def prepare_questions(cfg: DictConfig) -> Questions:
    """Checks `cfg`, loads `cfg.ckpt_path` onto its device and builds the prompt batches of its split,
    the answerable questions only (the others counted in `skipped`)."""
    validate_eval_config(cfg)  # types and ranges of every key, before the model loads
    check_accelerator("device", cfg.device)
    output_dir = Path(cfg.paths.output_dir)
    check_output_dir(output_dir)
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    cpu_threads = apply_cpu_threads(cfg.get("cpu_threads"), device=device)  # fewer while other processes use them
    ckpt_path = resolve_checkpoint(cfg.ckpt_path)
    # Any kind of checkpoint (coconut/commands/load.py): its model, tokenizer and prompt rule.
    loaded = load_any(ckpt_path, cfg)
    read = thought_read(cfg, loaded.model, ckpt_path)
    data_cfg = eval_data_config(cfg, loaded, ckpt_path)
    split = cfg.split
    records, skipped = load_questions(cfg, data_cfg, split)
    loaded.model.to(device)
    ids = special_ids(loaded.tokenizer)
    max_new_tokens = cfg.get("max_new_tokens") or data_cfg.max_new_tokens
    records, loader = prompt_batches(cfg, loaded, data_cfg, split, records, skipped, ids, max_new_tokens)
    return Questions(
        loaded, ckpt_path, data_cfg, split, records, skipped, loader, ids, max_new_tokens, read, cpu_threads, output_dir
    )


def legibility_measured(cfg: DictConfig) -> bool:
    """`legibility.measure`, true when left null (a suite sets false when left null)."""
    measure = cfg.legibility.get("measure")
    measure = True if measure is None else bool(measure)
    if not measure:
        log.info("legibility not measured (legibility.measure=false): accuracy, tokens and speed only")
    return measure


def answer(cfg: DictConfig, questions: Questions, measure: bool, trainer=None):
    """The evaluation of `questions` (coconut/eval/evaluator.py), with majority vote and pass@k beside
    the greedy accuracy when `generation` samples (coconut/eval/sampling.py). With a `trainer`
    (trainer.devices > 1) the generation passes split over its processes (coconut/training/predict.py)."""
    loaded, data_cfg, records, loader = questions.loaded, questions.data_cfg, questions.records, questions.loader
    model, tokenizer = loaded.model, loaded.tokenizer
    options = {
        "answer_kind": data_cfg.answer_kind,
        "max_new_tokens": questions.max_new_tokens,
        "thought_ids": (questions.ids.latent, questions.ids.pause),
    }
    evaluation = evaluate(
        model,
        tokenizer,
        questions.cpu_threads.governed(loader),
        records,
        method=loaded.method,
        curriculum=loaded.curriculum,
        stage=loaded.stage,
        **options,
        answerer=lightning_answerer(trainer, model, tokenizer, loader, records, **options) if trainer else None,
        ablations=list(cfg.legibility.ablations),
        legibility=measure,
        intervention=cfg.legibility.get("intervention", True),
        probe_folds=cfg.legibility.probe_folds,
        reference_legibility=reference_legibility(cfg.legibility.reference) if cfg.legibility.reference else None,
        skipped=questions.skipped,
        read=questions.read,
    )
    sampling = SamplingConfig(**cfg.get("generation", {}))
    if sampling.active:
        add_sampling(
            evaluation,
            model,
            tokenizer,
            loader,
            records,
            sampling,
            answer_kind=data_cfg.answer_kind,
            max_new_tokens=questions.max_new_tokens,
            seed=cfg.seed,
        )
    return evaluation


def describe_run(cfg: DictConfig, questions: Questions) -> About:
    """What was evaluated, for the report: the checkpoint, method, data, thoughts and both configs."""
    loaded, ckpt_path, trained = questions.loaded, questions.ckpt_path, questions.loaded.trained
    return About(
        checkpoint=ckpt_path if loaded.kind in ("hf", "coconut-export") else str(Path(ckpt_path).resolve()),
        checkpoint_kind=loaded.kind,
        method=loaded.method.name,
        dataset=questions.data_cfg.name,
        split=questions.split,
        n_thoughts=loaded.n_thoughts,
        **thoughts_used(loaded.method, loaded.curriculum, loaded.stage, loaded.n_thoughts),
        config={
            "eval": OmegaConf.to_container(cfg, resolve=True),
            "train": OmegaConf.to_container(trained, resolve=True) if trained is not None else None,
        },
    )


def log_summary(report, measure: bool, output_dir: Path) -> None:
    result, legibility = report.generation, report.legibility
    loss = legibility.loss if legibility else None
    log.info(
        f"accuracy {result.accuracy:.4f} on all {result.n_total} questions ({result.accuracy_answered:.4f} "
        f"on the {result.n} answered, {result.n_skipped} skipped) | "
        f"{result.tokens.generated_mean:.1f} tokens + "
        f"{result.tokens.thoughts_mean:.1f} thoughts per answer | legibility loss "
        f"{'not measured' if not measure else 'n/a' if loss is None else format(loss, '.3f')} | written to {output_dir}"
    )


def run_evaluation(cfg: DictConfig) -> dict:
    """Evaluates `cfg.ckpt_path` on one split; writes the report into `cfg.paths.output_dir` and
    returns it as report.json's layout (which the suite and the stage curve read)."""
    questions = prepare_questions(cfg)
    loaded, n_thoughts = questions.loaded, questions.loaded.n_thoughts
    measure = legibility_measured(cfg)
    log.info(
        f"evaluating {questions.ckpt_path} ({loaded.method.name}, stage {loaded.stage}, "
        f"{'n_thoughts=' + str(n_thoughts) if n_thoughts is not None else 'thoughts of the stage'}) "
        f"on {len(questions.records)} {questions.data_cfg.name} {questions.split} questions"
    )
    # trainer.devices > 1: the passes split over processes by Lightning (coconut/training/predict.py).
    trainer = predict_trainer(cfg.get("trainer"), next(loaded.model.parameters()).device.type)
    evaluation = answer(cfg, questions, measure, trainer)
    evaluation.report.about = describe_run(cfg, questions)
    if trainer is not None and trainer.global_rank != 0:  # rank 0 writes the report
        return evaluation.report.to_dict()
    write_evaluation(questions.output_dir, evaluation)
    log_summary(evaluation.report, measure, questions.output_dir)
    report = evaluation.report.to_dict()
    log.info(thoughts_verdict(report))
    return report
