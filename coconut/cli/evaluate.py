"""`coconut-eval`: evaluate a saved checkpoint. A Hydra entry point like training; every evaluation
writes into its own folder (outputs/eval/runs/<time>/), never into the training run's.

coconut-eval ckpt_path=outputs/train/runs/<time>/checkpoints/last.ckpt          # its own test split
coconut-eval ckpt_path=latest                                  # the newest training run's last.ckpt
coconut-eval ckpt_path=... data=files data.test_path=../shared/data/prosqa/prosqa_valid.json
coconut-eval -m ckpt_path=... n_thoughts=0,1,2,3,4,6                          # inference-time scaling
coconut-eval ckpt_path=<coconut ckpt> legibility.reference=<folder of a CoT model's evaluation>
coconut-eval ckpt_path=... suite=math            # gsm8k, gsm_hard, svamp, multiarith, asdiv: coconut/cli/suite.py
coconut-eval ckpt_path=hf:<folder or hub id> data=gsm8k                       # a Hugging Face CoT / No-CoT model
coconut-eval ckpt_path=<official checkpoint_N> model.pretrained=gpt2 n_thoughts=6 data=gsm8k  # official code's
coconut-eval ckpt_path=outputs/train/runs/<time>                 # every stage{k}-best.ckpt: a per-stage curve
coconut-eval ckpt_path=... generation.temperature=0.7 generation.num_samples=8   # majority vote, pass@k
"""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from coconut.cli.checkpoints import is_run_folder, load_any, load_checkpoint  # noqa: F401 (load_checkpoint: its old home)
from coconut.cli.checks import check_accelerator, check_prepared, checked_command
from coconut.cli.run_folders import holds_an_evaluation
from coconut.cli.stage_curve import run_stage_curve
from coconut.cli.train import CONFIG_DIR
from coconut.commands.config import validate_eval_config
from coconut.core.base_model import max_positions
from coconut.core.errors import ConfigError, UserInputError
from coconut.core.legibility_objective import READS
from coconut.core.thought_projection import projection_config
from coconut.core.threads import apply_cpu_threads
from coconut.core.tokens import special_ids
from coconut.data.benchmarks import FORMATS
from coconut.data.checks import keep_answerable
from coconut.data.prepare import BENCHMARKS, conversion_left_out
from coconut.data.sequences import tokenize_records
from coconut.data.sources import read_converted
from coconut.data.splits import load_splits, split_source
from coconut.eval.evaluator import evaluate
from coconut.eval.report import thoughts_verdict, write_evaluation
from coconut.eval.sampling import SamplingConfig, add_sampling
from coconut.eval.suite import thoughts_used
from coconut.training.datamodule import prompt_loader
from coconut.training.runs import holds_a_run

log = logging.getLogger(__name__)


TRAIN_RUNS = Path("outputs") / "train" / "runs"
# The raw files of the evaluation-only benchmarks under their published names (ASDiv.xml, SVAMP.json, ...).
PUBLISHED_NAMES = {name for b in BENCHMARKS.values() if b.eval_only for names in b.files.values() for name in names}


def resolve_checkpoint(path: str) -> str:
    """`latest`: the last.ckpt of the newest training run under outputs/train/runs/. `best`: that run's
    best-validation checkpoint of its last stage (the stage{k}-best.ckpt of the highest k), so that
    what is evaluated does not depend on which epoch of the stage happened to come last."""
    if path not in ("latest", "best"):
        return path
    lasts = sorted(TRAIN_RUNS.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not lasts:
        raise ConfigError(f"ckpt_path={path}: no {TRAIN_RUNS}/*/checkpoints/last.ckpt here; give a checkpoint path")
    if path == "latest":
        return str(lasts[-1])
    folder = lasts[-1].parent
    stages = sorted(folder.glob("stage*-best.ckpt"), key=lambda p: int(p.name.removeprefix("stage").split("-")[0]))
    if not stages:
        raise ConfigError(
            f"ckpt_path=best: the newest run's {folder} holds no stage{{k}}-best.ckpt (it never validated); "
            "give ckpt_path=latest or a checkpoint path"
        )
    return str(stages[-1])


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

    loaded: object  # coconut.cli.checkpoints.Loaded: model, tokenizer, method, curriculum, stage, ...
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


def prepare_questions(cfg: DictConfig) -> Questions:
    """Checks `cfg`, loads `cfg.ckpt_path` onto its device and builds the prompt batches of its split,
    the answerable questions only (the others counted in `skipped`)."""
    validate_eval_config(cfg)  # types and ranges of every key, before the model loads
    check_accelerator("device", cfg.device)
    output_dir = Path(cfg.paths.output_dir)
    if holds_an_evaluation(output_dir) or holds_a_run(output_dir):  # before anything is written there
        raise ConfigError(
            f"paths.output_dir={output_dir} already holds an earlier evaluation's or a training run's outputs; "
            "an evaluation never writes over them. Fix: leave paths.output_dir to its default (a new folder) "
            "or give a new folder"
        )
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    cpu_threads = apply_cpu_threads(cfg.get("cpu_threads"), device=device)  # fewer while other processes use them
    ckpt_path = resolve_checkpoint(cfg.ckpt_path)
    # Any kind of checkpoint (coconut/cli/checkpoints.py): its model, tokenizer and prompt rule.
    loaded = load_any(ckpt_path, cfg)
    model, tokenizer, method, curriculum, trained = (
        loaded.model,
        loaded.tokenizer,
        loaded.method,
        loaded.curriculum,
        loaded.trained,
    )
    n_thoughts = loaded.n_thoughts
    read = thought_read(cfg, model, ckpt_path)
    # The checkpoint's own data config by default: the very test split of its training run.
    if not cfg.get("data") and trained is None:
        raise ConfigError(
            f"ckpt_path={ckpt_path}: a {loaded.kind} checkpoint carries no data config. Fix: give data=<name> "
            "(and its keys, e.g. data=files data.test_path=...)"
        )
    data_cfg = cfg.data if cfg.get("data") else trained.data
    data_cfg = with_checkpoint_encoding(data_cfg, trained)
    split = cfg.split
    if split not in ("train", "val", "test"):
        raise ConfigError(f"split={split}: choose train, val or test")
    check_prepared(data_cfg, (split,))  # a benchmark coconut-data writes: the command, the absolute path
    # Honest denominators: every question of the split is counted; skipped ones, by reason, as wrong,
    # and so are the published file's problems that coconut-data left out (ASDiv's non-numeric answers).
    # A question without reference steps is no fault here: nothing trains on it.
    skipped_by_split: dict[str, Counter] = {}
    records = load_splits(data_cfg, (split,), skipped=skipped_by_split, expect_steps=False)[split]
    skipped = skipped_by_split.get(split, Counter()) + left_out_of(data_cfg, split)
    if cfg.get("limit"):
        records = records[: cfg.limit]
        skipped.clear()  # the answer check saw the whole file; with limit, only the first N count

    model.to(device)
    ids = special_ids(tokenizer)
    stage = loaded.stage
    max_new_tokens = cfg.get("max_new_tokens") or data_cfg.max_new_tokens
    # A question whose prompt (as evaluated: this stage, or n_thoughts) leaves fewer positions than
    # max_new_tokens is skipped with a counted warning (an error with data.strict=true), rather than
    # generating past the model's last position; it counts as wrong in `accuracy`.
    records, samples = keep_answerable(
        records,
        tokenize_records(records, tokenizer),
        source=split_source(data_cfg, split),
        stage=stage,
        method=method,
        curriculum=curriculum,
        ids=ids,
        positions=max_positions(model.lm.config),
        generation_budget=max_new_tokens,
        n_thoughts=n_thoughts,
        strict=data_cfg.get("strict", False),
        skipped=skipped,
    )
    loader = prompt_loader(
        records,
        samples,
        stage=stage,
        method=method,
        curriculum=curriculum,
        ids=ids,
        batch_size=cfg.batch_size,
        n_thoughts=n_thoughts,
    )
    return Questions(
        loaded, ckpt_path, data_cfg, split, records, skipped, loader, ids, max_new_tokens, read, cpu_threads, output_dir
    )


def run_evaluation(cfg: DictConfig) -> dict:
    """Evaluates `cfg.ckpt_path` on one split; writes the report into `cfg.paths.output_dir`."""
    questions = prepare_questions(cfg)
    loaded, ckpt_path, data_cfg, split = questions.loaded, questions.ckpt_path, questions.data_cfg, questions.split
    model, tokenizer, method, curriculum = loaded.model, loaded.tokenizer, loaded.method, loaded.curriculum
    records, loader, skipped, output_dir = questions.records, questions.loader, questions.skipped, questions.output_dir
    stage, n_thoughts, trained, ids = loaded.stage, loaded.n_thoughts, loaded.trained, questions.ids
    max_new_tokens, read, cpu_threads = questions.max_new_tokens, questions.read, questions.cpu_threads
    sampling = SamplingConfig(**cfg.get("generation", {}))  # checked by validate_eval_config

    measure = cfg.legibility.get("measure")
    measure = True if measure is None else bool(measure)  # (a suite sets false when left null)
    if not measure:
        log.info("legibility not measured (legibility.measure=false): accuracy, tokens and speed only")
    log.info(
        f"evaluating {ckpt_path} ({method.name}, stage {stage}, "
        f"{'n_thoughts=' + str(n_thoughts) if n_thoughts is not None else 'thoughts of the stage'}) "
        f"on {len(records)} {data_cfg.name} {split} questions"
    )
    evaluation = evaluate(
        model,
        tokenizer,
        cpu_threads.governed(loader),
        records,
        method=method,
        curriculum=curriculum,
        stage=stage,
        answer_kind=data_cfg.answer_kind,
        max_new_tokens=max_new_tokens,
        thought_ids=(ids.latent, ids.pause),
        ablations=list(cfg.legibility.ablations),
        legibility=measure,
        intervention=cfg.legibility.get("intervention", True),
        probe_folds=cfg.legibility.probe_folds,
        reference_legibility=reference_legibility(cfg.legibility.reference) if cfg.legibility.reference else None,
        skipped=skipped,
        read=read,
    )
    if sampling.active:  # majority vote and pass@k beside the greedy accuracy (coconut/eval/sampling.py)
        add_sampling(
            evaluation,
            model,
            tokenizer,
            loader,
            records,
            sampling,
            answer_kind=data_cfg.answer_kind,
            max_new_tokens=max_new_tokens,
            seed=cfg.seed,
        )
    evaluation.report.update(
        {
            "checkpoint": ckpt_path if loaded.kind in ("hf", "coconut-export") else str(Path(ckpt_path).resolve()),
            "checkpoint_kind": loaded.kind,
            "method": method.name,
            "dataset": data_cfg.name,
            "split": split,
            "n_thoughts": n_thoughts,
            **thoughts_used(method, curriculum, stage, n_thoughts),
            "config": {
                "eval": OmegaConf.to_container(cfg, resolve=True),
                "train": OmegaConf.to_container(trained, resolve=True) if trained is not None else None,
            },
        }
    )
    write_evaluation(output_dir, evaluation)
    report = evaluation.report
    loss = report["legibility"].get("loss")
    log.info(
        f"accuracy {report['accuracy']:.4f} on all {report['n_total']} questions ({report['accuracy_answered']:.4f} "
        f"on the {report['n']} answered, {report['n_skipped']} skipped) | "
        f"{report['tokens']['generated_mean']:.1f} tokens + "
        f"{report['tokens']['thoughts_mean']:.1f} thoughts per answer | legibility loss "
        f"{'not measured' if not measure else 'n/a' if loss is None else format(loss, '.3f')} | written to {output_dir}"
    )
    log.info(thoughts_verdict(report))
    return report


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def run(cfg: DictConfig) -> float:
    try:
        validate_eval_config(cfg)  # before a suite or a curve evaluates anything
        check_accelerator("device", cfg.device)
        if cfg.get("benchmarks") is not None:  # several benchmarks, one folder and a summary
            from coconut.cli.suite import run_suite  # noqa: PLC0415 (it imports this module)

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
