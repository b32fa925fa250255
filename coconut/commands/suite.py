"""`coconut-eval benchmarks=[...]` (or `suite=math`): one checkpoint on several benchmarks, one folder.

    coconut-eval ckpt_path=... suite=math     # gsm8k (test), gsm_hard, svamp, multiarith, asdiv
    coconut-eval ckpt_path=... benchmarks=[gsm8k,svamp] limit=100

Each benchmark is a `conf/data/<name>.yaml` evaluated exactly as `coconut-eval data=<name>` would,
into `<output_dir>/<name>/`; the summary (coconut.eval.suite) goes beside them. Every benchmark's file
is checked before the model is loaded: a missing one stops the run with one message naming its
absolute path and the `coconut-data` command that writes it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from coconut import CONFIG_DIR
from coconut.commands.checks import prepare_command
from coconut.commands.config import DataConfig
from coconut.commands.evaluate import run_evaluation
from coconut.core.errors import ConfigError
from coconut.eval.suite import summarize, write_summary

log = logging.getLogger(__name__)

DATA_DIR = Path(CONFIG_DIR) / "data"
SPLIT_KEYS = {"train": "train_path", "val": "val_path", "test": "test_path"}


def benchmark_config(cfg: DictConfig, name: str) -> DictConfig:
    """`cfg` with data=<name> and the output folder <output_dir>/<name>."""
    path = DATA_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in DATA_DIR.glob("*.yaml")))
        raise ConfigError(f"benchmarks: no data config {name!r} (conf/data/{name}.yaml); choose from {known}")
    bench = cfg.copy()
    with open_dict(bench):
        bench.data = OmegaConf.merge(OmegaConf.structured(DataConfig), OmegaConf.load(path))  # typed as data=<name>
        bench.paths.output_dir = str(Path(cfg.paths.output_dir) / name)
        bench.benchmarks = None
    return bench


def check_prepared(configs: dict[str, DictConfig], split: str) -> None:
    """Every benchmark's file for `split` exists; else one message listing each missing one (its
    absolute path) and the command that writes it, and the benchmarks that are ready, if any."""
    missing = []
    for name, bench in configs.items():
        key = SPLIT_KEYS.get(split)
        path = bench.data.get(key) if key else None
        if path and not Path(path).exists():
            folder = Path(path).absolute().parent
            command = prepare_command(bench.data, path)
            missing.append(
                f"  data={name}: {Path(path).absolute()} does not exist; run `{command}` (it writes {folder})"
            )
    if missing:
        present = [name for name in configs if all(f"data={name}:" not in m for m in missing)]
        ready = f"; or leave them out: benchmarks=[{','.join(present)}]" if present else ""
        raise ConfigError("benchmarks not prepared: " + "; ".join(missing) + ". Fix: prepare them" + ready)


def run_suite(cfg: DictConfig) -> dict:
    """Evaluates `cfg.ckpt_path` on every benchmark of `cfg.benchmarks`; writes the reports and the
    summary into `cfg.paths.output_dir`; returns the summary."""
    names = list(cfg.benchmarks)
    if not names:
        raise ConfigError("benchmarks=[] names no benchmark; e.g. benchmarks=[gsm8k,svamp] or suite=math")
    if cfg.get("data"):
        raise ConfigError("give benchmarks=[...] or data=<name>, not both")
    if cfg.legibility.get("measure") is None:  # the user asked for accuracy across benchmarks
        log.info(
            "legibility not measured in a suite, which reports accuracy, tokens and speed (legibility.measure=true "
            "adds decode, probe, frontier, causal legibility and the ablations: more generation passes per benchmark)"
        )
        cfg = cfg.copy()
        with open_dict(cfg):
            cfg.legibility.measure = False
    configs = {name: benchmark_config(cfg, name) for name in names}
    check_prepared(configs, cfg.split)
    reports = {}
    for name, bench in configs.items():
        log.info("benchmark %s (%d of %d)", name, len(reports) + 1, len(names))
        reports[name] = run_evaluation(bench)
    summary = summarize(reports)
    output_dir = Path(cfg.paths.output_dir)
    write_summary(output_dir, summary)
    log.info(
        "summary of %d benchmarks written to %s\n%s", len(names), output_dir, (output_dir / "summary.md").read_text()
    )
    return summary
