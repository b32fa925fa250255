"""`coconut-eval`: evaluate a saved checkpoint. A Hydra entry point like training; every evaluation
writes into its own folder (outputs/eval/runs/<time>/), never into the training run's.

coconut-eval ckpt_path=outputs/train/runs/<time>/checkpoints/last.ckpt          # its own test split
coconut-eval ckpt_path=latest                                  # the newest training run's last.ckpt
coconut-eval ckpt_path=... data=files data.test_path=../shared/data/prosqa/prosqa_valid.json
coconut-eval -m ckpt_path=... n_thoughts=0,1,2,3,4,6                          # inference-time scaling
coconut-eval ckpt_path=<coconut ckpt> legibility.reference=<folder of a CoT model's evaluation>
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from coconut.cli.checks import CheckpointError, check_checkpoint_compatible, check_group_choices
from coconut.cli.train import CONFIG_DIR, build_curriculum, build_method
from coconut.core.base_model import max_positions
from coconut.core.errors import ConfigError, UserInputError
from coconut.core.threads import apply_cpu_threads
from coconut.core.tokens import special_ids
from coconut.data.checks import keep_within_context
from coconut.data.sequences import tokenize_records
from coconut.data.splits import load_splits, split_source
from coconut.eval.evaluator import evaluate
from coconut.eval.report import write_evaluation
from coconut.training.checkpoints import load_checkpoint as read_checkpoint
from coconut.training.datamodule import prompt_loader
from coconut.training.lit_module import rebuild_from_checkpoint
from coconut.training.runs import upgraded

log = logging.getLogger(__name__)


TRAIN_RUNS = Path("outputs") / "train" / "runs"


def resolve_checkpoint(path: str) -> str:
    """`latest`: the last.ckpt of the newest training run under outputs/train/runs/."""
    if path != "latest":
        return path
    candidates = sorted(TRAIN_RUNS.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise ConfigError(f"ckpt_path=latest: no {TRAIN_RUNS}/*/checkpoints/last.ckpt here; give a checkpoint path")
    return str(candidates[-1])


def load_checkpoint(path: str) -> dict:
    checkpoint = read_checkpoint(path, "ckpt_path")  # a missing or incomplete file: one message
    try:
        check_checkpoint_compatible(checkpoint)
    except CheckpointError as error:
        raise CheckpointError(f"ckpt_path={path}: {error}") from None
    return checkpoint


def reference_legibility(folder: str) -> dict[str, float]:
    """question -> legibility of the reasoning in an earlier evaluation (a CoT model's)."""
    path = Path(folder) / "samples.jsonl"
    if not path.is_file():
        raise ConfigError(f"legibility.reference={folder}: no samples.jsonl there; give a coconut-eval output folder")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["question"]: r["legibility"] for r in rows if r.get("legibility") is not None}


def run_evaluation(cfg: DictConfig) -> dict:
    """Evaluates `cfg.ckpt_path` on one split; writes the report into `cfg.paths.output_dir`."""
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    cpu_threads = apply_cpu_threads(cfg.get("cpu_threads"), device=device)  # fewer while other processes use them
    ckpt_path = resolve_checkpoint(cfg.ckpt_path)
    checkpoint = load_checkpoint(ckpt_path)
    trained = OmegaConf.create(upgraded(checkpoint["hyper_parameters"]["config"]))
    # The trained method unless method=<name> asks for another compatible one (its stage rule).
    method = build_method(cfg if cfg.get("method") else trained)
    curriculum = build_curriculum(trained)
    # The checkpoint's own data config by default: the very test split of its training run.
    data_cfg = cfg.data if cfg.get("data") else trained.data
    split = cfg.split
    if split not in ("train", "val", "test"):
        raise ConfigError(f"split={split}: choose train, val or test")
    records = load_splits(data_cfg, (split,))[split]
    if cfg.get("limit"):
        records = records[: cfg.limit]

    model, tokenizer = rebuild_from_checkpoint(checkpoint)
    check_checkpoint_compatible(checkpoint, method, tokenizer)
    model.to(device)
    ids = special_ids(tokenizer)
    # The stage the checkpoint was saved at, unless asked: stage{k}-best.ckpt is evaluated at stage k.
    stage = cfg.stage if cfg.get("stage") is not None else method.stage_at_epoch(curriculum, checkpoint["epoch"])
    max_new_tokens = cfg.get("max_new_tokens") or data_cfg.max_new_tokens
    # Training's rule for its val/test splits: a question whose prompt leaves fewer positions than
    # max_new_tokens is skipped with a counted warning (an error with data.strict=true), rather than
    # generating past the model's last position. n_thoughts may lengthen every prompt by that many.
    records, samples = keep_within_context(
        records,
        tokenize_records(records, tokenizer),
        source=split_source(data_cfg, split),
        method=method,
        curriculum=curriculum,
        ids=ids,
        positions=max_positions(model.lm.config),
        generation_budget=max_new_tokens + (cfg.get("n_thoughts") or 0),
        strict=data_cfg.get("strict", False),
    )
    loader = prompt_loader(
        records,
        samples,
        stage=stage,
        method=method,
        curriculum=curriculum,
        ids=ids,
        batch_size=cfg.batch_size,
        n_thoughts=cfg.get("n_thoughts"),
    )
    log.info(
        f"evaluating {ckpt_path} ({method.name}, stage {stage}, "
        f"{'n_thoughts=' + str(cfg.n_thoughts) if cfg.get('n_thoughts') is not None else 'thoughts of the stage'}) "
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
        probe_folds=cfg.legibility.probe_folds,
        reference_legibility=reference_legibility(cfg.legibility.reference) if cfg.legibility.reference else None,
    )
    evaluation.report.update(
        {
            "checkpoint": str(Path(ckpt_path).resolve()),
            "method": method.name,
            "dataset": data_cfg.name,
            "split": split,
            "n_thoughts": cfg.get("n_thoughts"),
            "config": {
                "eval": OmegaConf.to_container(cfg, resolve=True),
                "train": OmegaConf.to_container(trained, resolve=True),
            },
        }
    )
    output_dir = Path(cfg.paths.output_dir)
    write_evaluation(output_dir, evaluation)
    report = evaluation.report
    log.info(
        f"accuracy {report['accuracy']:.4f} on {report['n']} | {report['tokens']['generated_mean']:.1f} tokens + "
        f"{report['tokens']['thoughts_mean']:.1f} thoughts per answer | legibility loss "
        f"{report['legibility']['loss']} | written to {output_dir}"
    )
    return report


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def run(cfg: DictConfig) -> float:
    try:
        return run_evaluation(cfg)["accuracy"]
    except UserInputError as error:
        log.error("%s", error)
        sys.exit(2)


def main() -> float | None:
    """The `coconut-eval` command: an unknown group choice (`method=xyz`, `data=xyz`) gets coconut-train's
    one line listing the valid ones, before Hydra composes anything."""
    try:
        check_group_choices(sys.argv[1:], CONFIG_DIR)
    except ConfigError as error:
        print(f"coconut-eval: {error}", file=sys.stderr)
        sys.exit(2)
    return run()


if __name__ == "__main__":
    main()
