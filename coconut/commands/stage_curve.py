"""The per-stage curve of a training run: `coconut-eval ckpt_path=<run folder>` evaluates every
`stage{k}-best.ckpt` of the run (each at the stage it was saved at) on the chosen data, then writes
accuracy, tokens and legibility per stage:

    <output_dir>/stage{k}/          each stage's full evaluation (report.json, samples.jsonl, ...)
    <output_dir>/curve.md|csv|json  one row per stage
    <output_dir>/curve.png          accuracy and legibility against the stage, tokens on a second axis
    <output_dir>/tensorboard/       curve/* scalars with the stage as the step
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from coconut.core.errors import ConfigError
from coconut.eval.suite import lookup
from coconut.training.runs import read_run

log = logging.getLogger(__name__)

STAGE_FILE = re.compile(r"stage(\d+)-best\.ckpt$")
# (column, dotted key in report.json)
COLUMNS = (
    ("stage", "stage"),
    ("accuracy", "accuracy"),
    ("n", "n"),
    ("tokens", "tokens.generated_mean"),
    ("thoughts", "tokens.thoughts_mean"),
    ("forward_passes", "tokens.forward_passes_mean"),
    ("decode_top1", "legibility.decode_top1"),
    ("decode_top1_chance", "legibility.decode_top1_chance"),
    ("probe", "legibility.probe"),
    ("text_steps_correct", "legibility.text_steps_correct"),
    ("reasoning", "legibility.reasoning"),
    ("legibility_loss", "legibility.loss"),
    ("drop_other_thoughts", "legibility.ablation_drop.other"),
)


def _stage_files(folder: Path) -> dict[int, Path]:
    found = {}
    for path in [*folder.glob("stage*-best.ckpt"), *folder.glob("checkpoints/stage*-best.ckpt")]:
        match = STAGE_FILE.search(path.name)
        if match:
            found[int(match.group(1))] = path
    return found


def stage_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """(stage, path) of every stage{k}-best.ckpt in a run folder or its checkpoints/ folder, by stage.
    A run resumed from another run's checkpoint (run.json's `resumed_from`) left the stages trained
    before the interruption in that run's folder: they are taken from there, and the log says so."""
    folder = Path(folder)
    found = _stage_files(folder)
    if not found:
        raise ConfigError(
            f"ckpt_path={folder}: no stage{{k}}-best.ckpt in it or in its checkpoints/; give a coconut-train run folder"
        )
    run, seen = (folder.parent if folder.name == "checkpoints" else folder).resolve(), set()
    while run not in seen:
        seen.add(run)
        resumed_from = (read_run(run) or {}).get("resumed_from")
        if not resumed_from:
            break
        earlier = Path(resumed_from).resolve().parent.parent
        if not earlier.is_dir():
            log.warning(
                "%s resumed from %s, whose folder is gone: the stages trained before that are missing from the curve",
                run,
                resumed_from,
            )
            break
        for stage, path in sorted(_stage_files(earlier).items()):
            if stage not in found:
                found[stage] = path
                log.info("stage %d: %s, from %s, the run this one resumed", stage, path, earlier)
        run = earlier
    return sorted(found.items())


def curve_rows(reports: list[dict]) -> list[dict]:
    return [{name: lookup(report, key) for name, key in COLUMNS} for report in reports]


def _cell(value) -> str:
    return "n/a" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def write_curve(folder: Path, rows: list[dict], title: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "curve.json").write_text(json.dumps(rows, indent=2) + "\n")
    with open(folder / "curve.csv", "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=[name for name, _ in COLUMNS])
        writer.writeheader()
        writer.writerows(rows)
    names = [name for name, _ in COLUMNS]
    lines = [f"# Per-stage curve: {title}", "", "| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    lines += ["| " + " | ".join(_cell(row[n]) for n in names) + " |" for row in rows]
    (folder / "curve.md").write_text("\n".join(lines) + "\n")

    import matplotlib  # noqa: PLC0415 (slow imports, only here)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415

    stages = [row["stage"] for row in rows]
    figure, left = plt.subplots(figsize=(6, 4))
    for name, style in (("accuracy", "o-"), ("reasoning", "s--"), ("decode_top1", "^:")):
        points = [(s, row[name]) for s, row in zip(stages, rows) if row[name] is not None]
        if points:
            left.plot(*zip(*points), style, label=name)
    left.set_xlabel("curriculum stage")
    left.set_ylabel("accuracy / legibility")
    left.set_ylim(-0.02, 1.02)
    left.set_xticks(stages)
    right = left.twinx()
    right.plot(stages, [row["tokens"] for row in rows], "kx-.", alpha=0.5, label="tokens per answer")
    right.set_ylabel("generated tokens per answer")
    handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    left.legend(handles, [h.get_label() for h in handles], loc="best", fontsize=8)
    left.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(folder / "curve.png", dpi=120)
    plt.close(figure)
    with SummaryWriter(str(folder / "tensorboard")) as writer:
        for row in rows:
            for name, value in row.items():
                if name != "stage" and isinstance(value, int | float):
                    writer.add_scalar(f"curve/{name}", value, row["stage"])


def run_stage_curve(cfg: DictConfig, run_evaluation: Callable[[DictConfig], dict]) -> list[dict]:
    """Evaluates each stage{k}-best.ckpt of the run at `cfg.ckpt_path` into `<output_dir>/stage{k}/`
    and writes the curve; returns its rows, by stage."""
    output_dir = Path(cfg.paths.output_dir)
    checkpoints = stage_checkpoints(cfg.ckpt_path)
    log.info("per-stage curve of %s: stages %s", cfg.ckpt_path, [k for k, _ in checkpoints])
    reports = []
    for stage, path in checkpoints:
        stage_cfg = OmegaConf.merge(
            cfg, {"ckpt_path": str(path), "paths": {"output_dir": str(output_dir / f"stage{stage}")}}
        )
        reports.append(run_evaluation(stage_cfg))
    rows = curve_rows(reports)
    for row, (stage, _) in zip(rows, checkpoints):
        row["stage"] = stage  # the checkpoint's stage (the stage evaluated at, unless stage= was given)
    write_curve(output_dir, rows, f"{cfg.ckpt_path} ({reports[0].get('dataset')} {reports[0].get('split')})")
    log.info("per-stage curve written to %s:\n%s", output_dir, (output_dir / "curve.md").read_text())
    return rows
