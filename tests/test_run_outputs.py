"""What a run leaves for its user, through the command line: an earlier run's or evaluation's folder
is refused before Hydra writes anything into it; a run whose stdout is not a terminal logs its
training loss and metrics to stdout and train.log; TensorBoard gets one hparams summary per run and
no configuration as scalars."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import scalars, tiny_cfg
from hydra import compose, initialize_config_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from coconut import CONFIG_DIR
from coconut.commands.evaluate import run_evaluation
from coconut.commands.run_folders import RefuseEarlierOutputs, continues_in_place
from coconut.commands.train import train
from coconut.core.errors import ConfigError
from coconut.training.runs import run_config, write_run

ROOT = Path(__file__).resolve().parent.parent


def cli(module: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"coconut.cli.{module}", *args],
        capture_output=True,  # stdout is a pipe, not a terminal: as under nohup, SLURM or CI
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A finished coconut-train run and a coconut-eval of its last checkpoint, both from the CLI."""
    root = tmp_path_factory.mktemp("outputs")
    train = cli("train", "debug=fast", f"hydra.run.dir={root / 'train'}")
    assert train.returncode == 0, train.stderr[-3000:]
    (root / "train.stdout").write_text(train.stdout)
    ckpt = root / "train" / "checkpoints" / "last.ckpt"
    evaluation = cli(
        "evaluate", f"ckpt_path={ckpt}", "limit=4", "legibility.ablations=[]", f"hydra.run.dir={root / 'eval'}"
    )
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    return {"train": root / "train", "eval": root / "eval", "stdout": root / "train.stdout"}


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow  # a coconut-train and a coconut-eval from the command line (~1 min on 2 busy cores)
def test_train_refuses_a_finished_runs_folder_before_anything_is_written(runs):
    before = snapshot(runs["train"])
    assert {".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", "train.log"} <= set(before)
    again = cli("train", "debug=fast", "trainer.max_epochs=1", f"hydra.run.dir={runs['train']}")
    assert again.returncode == 2
    assert "already holds a training run (status: finished)" in again.stderr and "Traceback" not in again.stderr
    assert snapshot(runs["train"]) == before  # .hydra/*.yaml and train.log byte for byte


@pytest.mark.slow  # a coconut-train and a coconut-eval from the command line (~1 min on 2 busy cores)
def test_eval_refuses_an_earlier_evaluations_folder_before_anything_is_written(runs, tmp_path):
    before = snapshot(runs["eval"])
    assert {"report.json", "samples.jsonl", ".hydra/config.yaml"} <= set(before)
    ckpt = runs["train"] / "checkpoints" / "last.ckpt"
    again = cli("evaluate", f"ckpt_path={ckpt}", "limit=2", f"hydra.run.dir={runs['eval']}")
    assert again.returncode == 2 and "already holds an evaluation (report.json, samples.jsonl)" in again.stderr
    # The same folder as paths.output_dir, with Hydra's own files going elsewhere.
    other = cli("evaluate", f"ckpt_path={ckpt}", f"paths.output_dir={runs['eval']}", f"hydra.run.dir={tmp_path}")
    assert other.returncode == 2 and "already holds an earlier evaluation" in other.stdout + other.stderr
    assert snapshot(runs["eval"]) == before


def hydra_cfg(config_name: str, *overrides: str):
    """The config Hydra hands its callbacks: the `hydra` node included."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)


def finished_run(folder: Path) -> Path:
    write_run(folder, {"status": "finished", "started": 0, "config": {}})
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (folder / "train.log").write_text("earlier\n")
    return folder


def test_the_hydra_callback_refuses_earlier_outputs_and_nothing_else(tmp_path, capsys, monkeypatch):
    refuse = RefuseEarlierOutputs()
    with pytest.raises(SystemExit) as stopped:
        refuse.on_run_start(hydra_cfg("train", f"hydra.run.dir={finished_run(tmp_path / 'run')}"))
    assert stopped.value.code == 2 and "already holds a training run (status: finished)" in capsys.readouterr().err
    with monkeypatch.context() as env:  # DDP: Lightning starts rank 1 into rank 0's folder, as it should
        env.setenv("LOCAL_RANK", "1")
        refuse.on_run_start(hydra_cfg("train", f"hydra.run.dir={tmp_path / 'run'}"))
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "report.json").write_text("{}")
    with pytest.raises(SystemExit):
        refuse.on_run_start(hydra_cfg("eval", "ckpt_path=x.ckpt", f"hydra.run.dir={tmp_path / 'eval'}"))
    assert "coconut-eval: hydra.run.dir=" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a sweep whose job 0 would land on an earlier job's outputs
        refuse.on_multirun_start(hydra_cfg("train", f"hydra.sweep.dir={tmp_path}"))
    assert "already holds earlier jobs' outputs (in eval/)" in capsys.readouterr().err
    refuse.on_run_start(hydra_cfg("train", f"hydra.run.dir={tmp_path / 'new'}"))  # a new folder: no objection
    (tmp_path / "started").mkdir()  # a folder with nothing of a run in it
    refuse.on_run_start(hydra_cfg("train", f"hydra.run.dir={tmp_path / 'started'}"))


def test_only_the_unfinished_run_it_continues_may_be_reused(tmp_path):
    cfg = tiny_cfg(tmp_path)
    write_run(tmp_path, {"status": "interrupted", "started": 0, "pid": -1, "config": run_config(cfg)})
    assert continues_in_place(cfg, tmp_path)  # resume=auto, same config, not running
    assert not continues_in_place(tiny_cfg(tmp_path, "seed=7"), tmp_path)  # another config
    assert not continues_in_place(tiny_cfg(tmp_path, "resume=false"), tmp_path)
    assert continues_in_place(tiny_cfg(tmp_path, f"ckpt_path={tmp_path / 'checkpoints' / 'last.ckpt'}"), tmp_path)
    write_run(tmp_path, {"status": "finished", "started": 0, "config": run_config(cfg)})
    assert not continues_in_place(cfg, tmp_path)


@pytest.mark.slow  # a coconut-train and a coconut-eval from the command line (~1 min on 2 busy cores)
def test_a_piped_run_logs_loss_and_metrics_to_stdout_and_train_log(runs):
    stdout, logged = runs["stdout"].read_text(), (runs["train"] / "train.log").read_text()
    for text in (stdout, logged):
        # debug=fast: 2 epochs of 2 steps, trainer.log_every_n_steps=1
        assert [f"step {s}: train/loss=" in text for s in (1, 2, 3, 4)] == [True] * 4
        assert text.count("validation: val/acc=") == 2 and "val/loss=" in text
        assert "best val/acc per stage" in text and "test: test/acc=" in text


def hparams(log_dir: Path) -> tuple[dict, list[str]]:
    """The hparams summary of a TensorBoard folder: {name: value}, and the metric names."""
    events = EventAccumulator(str(log_dir))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    values = {k: v.number_value if v.HasField("number_value") else v.string_value for k, v in start.hparams.items()}
    return values, [m.name.tag for m in experiment.metric_infos]


@pytest.fixture(scope="module")
def in_process(tmp_path_factory) -> dict[str, Path]:
    """A tiny training run and an evaluation of its last checkpoint, called as functions."""
    root = tmp_path_factory.mktemp("in_process")
    train(tiny_cfg(root / "train"))
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            config_name="eval",
            overrides=[
                f"paths.output_dir={root / 'eval'}",
                f"ckpt_path={root / 'train' / 'checkpoints' / 'last.ckpt'}",
                "limit=4",
                "legibility.ablations=[]",
            ],
        )
    run_evaluation(cfg)
    with pytest.raises(ConfigError, match="already holds an earlier evaluation"):  # not over itself
        run_evaluation(cfg)
    return {"train": root / "train", "eval": root / "eval"}


def test_train_writes_its_config_and_final_metrics_as_one_hparams_summary(in_process):
    values, metrics = hparams(in_process["train"] / "tensorboard")
    assert values["curriculum.c_thought"] == 1 and values["model.architecture.n_embd"] == 32
    assert values["method.name"] == "coconut" and values["data.sizes.train"] == 64
    assert not any(k.startswith("paths.") for k in values)  # where it wrote is not what it trained
    final = json.loads((in_process["train"] / "metrics.json").read_text())["final"]
    assert set(metrics) == set(final) and {"val/acc", "test/acc", "train/loss"} <= set(metrics)
    assert set(metrics) <= set(scalars(in_process["train"]))  # values the HPARAMS tab reads


def test_what_later_runs_read_back_names_no_command_module(in_process):
    """run.json, the checkpoints (their pickles) and report.json name classes of training/ and data/
    (renamed on reading by coconut.training.runs.upgraded when they move), never one of cli/ or
    commands/, which may move freely: only Hydra's own .hydra/hydra.yaml names the run-folder callback,
    and nothing reads it back (Hydra rewrites it when a run continues in its folder)."""
    recorded = [in_process["train"] / "run.json", in_process["eval"] / "report.json"]
    recorded += sorted((in_process["train"] / "checkpoints").glob("*.ckpt"))
    assert len(recorded) > 2
    for path in recorded:
        content = path.read_bytes()
        if path.suffix == ".ckpt":
            with zipfile.ZipFile(path) as archive:
                content = b"".join(archive.read(n) for n in archive.namelist() if n.endswith(".pkl"))
        assert b"coconut.cli" not in content and b"coconut.commands" not in content, path


def test_eval_writes_no_config_as_scalars_but_one_hparams_summary(in_process):
    logged = scalars(in_process["eval"])
    assert "eval/accuracy" in logged and not [t for t in logged if t.startswith("eval/config")]
    assert "eval/stage" not in logged and "eval/n_thoughts" not in logged
    values, metrics = hparams(in_process["eval"] / "tensorboard")
    assert values["stage"] == 1 and values["method"] == "coconut" and values["eval.limit"] == 4
    assert values["train.curriculum.c_thought"] == 1 and values["n_thoughts"] == "null"
    assert "eval/accuracy" in metrics and set(metrics) <= set(logged)


def test_loss_and_metrics_are_logged_as_lines_outside_a_terminal(tmp_path, caplog):
    caplog.set_level("INFO", logger="coconut")
    train(tiny_cfg(tmp_path, "trainer.max_epochs=1", "test=false"))  # pytest's stdout is not a terminal
    lines = [r.getMessage() for r in caplog.records if r.name == "coconut.training.progress_log"]
    assert [line.split(":")[0] for line in lines] == [
        "epoch 0 batch 1 step 1",
        "epoch 0 batch 2 step 2",
        "epoch 0 step 2 validation",
    ]
    assert "train/loss=" in lines[0] and "val/acc=" in lines[2] and "val/loss=" in lines[2]


def test_in_a_terminal_the_progress_bar_shows_the_loss_and_only_metrics_are_logged(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    caplog.set_level("INFO", logger="coconut")
    train(tiny_cfg(tmp_path, "trainer.max_epochs=1", "test=false"))
    lines = [r.getMessage() for r in caplog.records if r.name == "coconut.training.progress_log"]
    assert len(lines) == 1 and "validation: val/acc=" in lines[0]
