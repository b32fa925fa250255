"""What the commands refuse, end to end through the command line: each case is one message naming the
problem and the fix (exit code 2, no traceback), no file that existed before is changed, and nothing
half-written is left behind (docs/runs.md, "What the commands refuse"). Checkpoints from elsewhere:
test_foreign_checkpoints.py; config values out of range: test_bad_input.py."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import SHARED_DATA, needs_shared_data, tiny_cfg

from coconut.commands.train import train
from coconut.training.runs import resume_point, run_config, write_run

ROOT = Path(__file__).resolve().parent.parent
# A coconut-train run of seconds: the tiny model of debug=fast, one epoch.
TINY = ["debug=fast", "curriculum.max_latent_stage=1", "trainer.max_epochs=1"]


def cli(command: str, *args: str, cwd: Path = ROOT, env: dict | None = None, timeout: int = 300):
    """`coconut-<command> args` as a user runs it (stdout a pipe, as under nohup or CI)."""
    module = {"data": "coconut.data.prepare", "eval": "coconut.cli.evaluate"}.get(command, f"coconut.cli.{command}")
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def refused(done: subprocess.CompletedProcess, *parts: str) -> str:
    """The one line of a refusal: exit code 2, no traceback, one line holding every part."""
    output = done.stdout + done.stderr
    assert done.returncode == 2, output[-3000:]
    assert "Traceback" not in output and "HYDRA_FULL_ERROR" not in output, output[-3000:]
    lines = [line for line in output.splitlines() if all(part in line for part in parts)]
    assert len(lines) == 1, output[-3000:]
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def partials(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.partial"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished debug=fast run: stage0-best.ckpt, stage1-best.ckpt and last.ckpt."""
    run = tmp_path_factory.mktemp("run")
    train(tiny_cfg(run, "trainer.max_epochs=2", "test=false"))
    return run


@pytest.fixture(scope="module")
def ckpt(trained) -> Path:
    return trained / "checkpoints" / "last.ckpt"


# -- 1. a folder of the user's own files -----------------------------------------------------------
def test_train_refuses_a_folder_of_the_users_own_files(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.json").write_text('{"mine": 1}\n')
    (mine / "train.log").write_text("my own log\n")
    (mine / "notes.txt").write_text("notes\n")
    before = snapshot(mine)
    line = refused(cli("train", *TINY, f"hydra.run.dir={mine}"), f"hydra.run.dir={mine}", "metrics.json, train.log")
    assert "Fix:" in line and "a new or empty one" in line
    assert snapshot(mine) == before and not (mine / ".hydra").exists()


# -- 2. coconut-data: no usable answer ------------------------------------------------------------
def svamp(path: Path, answers: list) -> Path:
    problems = [{"Body": f"Tom has {i} apples.", "Question": "How many?", "Answer": a} for i, a in enumerate(answers)]
    path.write_text(json.dumps(problems))
    return path


def test_data_refuses_a_file_with_no_usable_answer_and_keeps_the_earlier_one(tmp_path):
    good = cli("data", "svamp", "--source", svamp(tmp_path / "SVAMP.json", [3.0, 4.0]), "--out", tmp_path / "out")
    assert good.returncode == 0, good.stderr
    before = snapshot(tmp_path / "out")
    (tmp_path / "bad").mkdir()
    bad = svamp(tmp_path / "bad" / "SVAMP.json", ["three", "a few"])
    line = refused(cli("data", "svamp", "--source", bad, "--out", tmp_path / "out"), "no problem", "usable")
    assert "Fix:" in line and "2 left out" in line
    assert snapshot(tmp_path / "out") == before and partials(tmp_path / "out") == []


# -- 3. disk full during training -------------------------------------------------------------------
def small_disk(tmp_path: Path) -> list[str] | None:
    """A command prefix that runs a shell in a private mount namespace (nothing leaks out of it),
    where a tmpfs can be mounted; None where this machine allows neither (no `unshare`, no user
    namespaces)."""
    if shutil.which("unshare") is None:
        return None
    prefix = ["unshare", "--mount", "--propagation", "private"] if os.geteuid() == 0 else ["unshare", "-rm"]
    probe = tmp_path / "probe"
    probe.mkdir()
    done = subprocess.run([*prefix, "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {probe}"], capture_output=True)
    return prefix if done.returncode == 0 else None


def test_a_full_disk_during_training_is_one_message_and_leaves_a_resumable_run(tmp_path):
    prefix = small_disk(tmp_path)
    if prefix is None:
        pytest.skip("no private mount namespace here (unshare missing or user namespaces off) to mount a small disk")
    disk, copy = tmp_path / "disk", tmp_path / "copy"
    disk.mkdir()
    copy.mkdir()
    # 200 kB: the config, tokenizer and logs fit, the first checkpoint (~400 kB) does not.
    command = " ".join([sys.executable, "-m", "coconut.cli.train", *TINY, f"hydra.run.dir={disk / 'run'}"])
    script = f"mount -t tmpfs -o size=200k tmpfs {disk} && {command}; rc=$?; cp -r {disk}/. {copy}/; exit $rc"
    done = subprocess.run([*prefix, "sh", "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT)
    line = refused(done, "no space left", str(disk / "run"))
    assert "Fix:" in line and "run the same command again" in line
    assert partials(copy) == []
    record = json.loads((copy / "run" / "run.json").read_text())
    assert record["status"] == "interrupted" and "no space left" in record["stopped_by"]


def test_a_later_run_names_the_half_written_files_an_interrupted_run_left(tmp_path, ckpt, caplog):
    """A run killed while writing (SIGKILL, power cut) leaves `*.partial`: the run that resumes it says so."""
    cfg = tiny_cfg(tmp_path / "runs" / "new", "seed=4343")
    old = tmp_path / "runs" / "old"
    (old / "checkpoints").mkdir(parents=True)
    shutil.copy(ckpt, old / "checkpoints" / "last.ckpt")
    (old / "checkpoints" / "last.ckpt.partial").write_bytes(b"half")
    write_run(old, {"status": "interrupted", "started": 1.0, "host": "", "pid": -1, "config": run_config(cfg)})
    (old / "run.json.partial").write_bytes(b"")
    with caplog.at_level("WARNING"):
        assert resume_point(cfg, tmp_path / "runs" / "new", run_config(cfg)) == old / "checkpoints" / "last.ckpt"
    assert "checkpoints/last.ckpt.partial, run.json.partial" in caplog.text and "half-written" in caplog.text


# -- 5. a misspelt key ------------------------------------------------------------------------------
@pytest.mark.parametrize("override", ["+curriculum.c_thougth=2", "curriculum.c_thougth=2"])
def test_a_misspelt_key_is_refused_with_the_key_it_resembles(override, tmp_path):
    line = refused(cli("train", *TINY, override, f"hydra.run.dir={tmp_path / 'run'}"), "curriculum.c_thougth")
    assert "did you mean curriculum.c_thought" in line and "Fix: curriculum.c_thought=2" in line
    assert not (tmp_path / "run").exists()


# -- 6, 13. evaluation counts out of range ------------------------------------------------------------
def test_eval_refuses_counts_out_of_range_naming_each_key(ckpt, tmp_path):
    overrides = ("n_thoughts=-1", "limit=0", "batch_size=0")
    done = cli("eval", f"ckpt_path={ckpt}", *overrides, f"hydra.run.dir={tmp_path}")
    line = refused(done, "n_thoughts must be an integer >= 0, got -1")
    assert "limit must be an integer >= 1, got 0" in line and "batch_size must be an integer >= 1, got 0" in line
    assert not (tmp_path / "report.json").exists()
    # A value of the wrong type stops composition (coconut/commands/config.py), named with its key.
    done = cli("eval", f"ckpt_path={ckpt}", "legibility.measure=sometimes", f"hydra.run.dir={tmp_path}")
    line = refused(done, "legibility.measure=sometimes: Value 'sometimes' is not a valid bool")
    assert "Fix: give legibility.measure a value of that type" in line
    assert not (tmp_path / "report.json").exists()


# -- 7. resume=auto and a damaged run.json ---------------------------------------------------------------
def test_resume_auto_refuses_to_guess_past_a_damaged_run_json(trained, tmp_path):
    old = tmp_path / "runs" / "old"
    shutil.copytree(trained, old)
    (old / "run.json").write_text('{"status": "running", "star')  # cut off mid-write
    before = snapshot(old)
    line = refused(cli("train", *TINY, f"hydra.run.dir={tmp_path / 'runs' / 'new'}"), f"{old / 'run.json'}")
    assert "damaged" in line and f"ckpt_path={old / 'checkpoints' / 'last.ckpt'}" in line and "resume=false" in line
    assert snapshot(old) == before


# -- 8. the per-stage curve of a resumed run -----------------------------------------------------------
def test_the_curve_of_a_resumed_run_takes_the_stages_of_the_run_it_resumed(trained, tmp_path):
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copy(trained / "checkpoints" / "stage1-best.ckpt", resumed / "checkpoints")
    write_run(resumed, {"status": "finished", "resumed_from": str(trained / "checkpoints" / "last.ckpt"), "config": {}})
    out = tmp_path / "curve"
    done = cli("eval", f"ckpt_path={resumed}", "limit=4", "legibility.ablations=[]", f"hydra.run.dir={out}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert [row["stage"] for row in json.loads((out / "curve.json").read_text())] == [0, 1]
    said = [line for line in (done.stdout + done.stderr).splitlines() if "stage 0" in line and str(trained) in line]
    assert said, done.stdout[-3000:]


# -- 9. ASDiv's problems left out at conversion ---------------------------------------------------------
def asdiv(path: Path, answers: list[str]) -> Path:
    problems = "".join(
        f"<Problem ID='{i}'><Body>Tom has {i}.</Body><Question>How many?</Question><Answer>{a}</Answer></Problem>"
        for i, a in enumerate(answers)
    )
    path.write_text(f"<Machine-Reading-Corpus-File><ProblemSet>{problems}</ProblemSet></Machine-Reading-Corpus-File>")
    return path


def test_asdiv_problems_left_out_at_conversion_count_in_the_report(ckpt, tmp_path):
    source = asdiv(tmp_path / "ASDiv.xml", ["3 (apples)", "4", "3:30 p.m.", "5 (years); 15 (years)", "7"])
    assert cli("data", "asdiv", "--source", source, "--out", tmp_path / "data").returncode == 0
    out = tmp_path / "eval"
    args = [f"ckpt_path={ckpt}", "data=asdiv", f"paths.data_dir={tmp_path / 'data'}", "legibility.ablations=[]"]
    done = cli("eval", *args, f"hydra.run.dir={out}")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["n_total"] == 5 and report["n_skipped"] == 2 and report["n"] == 3
    assert "left out at conversion" in next(iter(report["skipped"]))
    assert "- questions: 5, answered 3, skipped 2" in (out / "report.md").read_text()


@needs_shared_data
def test_the_published_asdiv_counts_its_2305_problems(tmp_path):
    from coconut.data.prepare import conversion_left_out, prepare  # noqa: PLC0415

    folder = prepare("asdiv", out=tmp_path, source=SHARED_DATA / "asdiv" / "ASDiv.xml")
    assert len(json.loads((folder / "test.json").read_text())) == 2084
    assert sum(conversion_left_out(folder / "test.json").values()) == 2305 - 2084


# -- 10. no training messages on an evaluation -------------------------------------------------------------
def test_eval_does_not_warn_that_records_without_steps_train_only_the_answer(ckpt, tmp_path):
    steps = [[], ["<<1+1=2>>"], [], ["<<3+1=4>>"]]
    records = [{"question": f"{i} + 1 = ?", "steps": s, "answer": str(i + 1)} for i, s in enumerate(steps)]
    (tmp_path / "test.json").write_text(json.dumps(records))
    data = ["data=files", f"data.test_path={tmp_path / 'test.json'}", "data.train_path=null", "data.val_path=null"]
    done = cli("eval", f"ckpt_path={ckpt}", *data, "legibility.ablations=[]", f"hydra.run.dir={tmp_path / 'e'}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "no reasoning steps" not in done.stdout + done.stderr and "train only the answer" not in done.stdout


# -- 11, 12, 14. configurations that cannot build or load ------------------------------------------------
def test_an_unknown_model_type_names_the_closest_ones(tmp_path):
    line = refused(cli("train", *TINY, "model.architecture.model_type=gpt9", f"hydra.run.dir={tmp_path}"), "gpt9")
    assert "model.architecture.model_type" in line and "gpt2" in line and "Fix:" in line
    assert len(line) < 600  # not several hundred model names


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: trainer.accelerator=gpu is valid here")
def test_a_gpu_accelerator_on_a_machine_without_one(tmp_path):
    done = cli("train", *TINY, "trainer.accelerator=gpu", f"hydra.run.dir={tmp_path}")
    line = refused(done, "trainer.accelerator=gpu")
    assert "no GPU" in line and "trainer=cpu" in line


def test_resuming_a_checkpoint_of_another_architecture_names_its_config_and_init_from(ckpt, tmp_path):
    done = cli("train", *TINY, f"ckpt_path={ckpt}", "model.architecture.n_embd=64", f"hydra.run.dir={tmp_path}")
    line = refused(done, f"ckpt_path={ckpt}", "n_embd")
    assert f"init_from={ckpt}" in line and "n_embd: 32" in line and "Fix:" in line


# -- 15. a folder that cannot be written -----------------------------------------------------------------
@pytest.fixture
def read_only(tmp_path):
    """A folder nothing can be written into, also for root (which ignores permissions): the
    immutable attribute there, a mode of 0o555 for everyone else."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    if os.geteuid() == 0:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", folder]).returncode != 0:
            pytest.skip("running as root, and this file system has no immutable attribute (chattr +i)")
        yield folder
        subprocess.run(["chattr", "-i", folder], check=True)
    else:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)


def test_a_read_only_output_folder_is_one_message_for_every_command(read_only, ckpt, tmp_path):
    svamp_file = svamp(tmp_path / "SVAMP.json", [3.0])
    runs = [
        (cli("train", *TINY, f"hydra.run.dir={read_only / 'run'}"), f"hydra.run.dir={read_only / 'run'}"),
        (cli("eval", f"ckpt_path={ckpt}", f"hydra.run.dir={read_only / 'e'}"), f"hydra.run.dir={read_only / 'e'}"),
        (
            cli("export", f"ckpt_path={ckpt}", f"out={read_only / 'x'}", f"hydra.run.dir={tmp_path / 'export'}"),
            f"out={read_only / 'x'}",
        ),
        (cli("data", "svamp", "--source", svamp_file, "--out", read_only), f"--out {read_only}"),
    ]
    for done, named in runs:
        line = refused(done, named, "cannot be written")
        assert "Fix:" in line
    assert list(read_only.iterdir()) == []


# -- 16. hf: paths and ids that cannot load --------------------------------------------------------------
def test_hf_a_missing_local_folder_is_said_at_once(tmp_path):
    done = cli("eval", "ckpt_path=hf:/nonexistent/model", "data=arithmetic", f"hydra.run.dir={tmp_path}")
    line = refused(done, "hf:/nonexistent/model")
    assert "no such folder" in line and "Repo id" not in line


def test_hf_an_id_offline_fails_fast_naming_the_cache(tmp_path):
    offline = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0"}
    started = time.monotonic()
    args = ["ckpt_path=hf:someone/tiny-model", "data=arithmetic", f"hydra.run.dir={tmp_path / 'e'}"]
    done = cli("eval", *args, env=offline)
    line = refused(done, "hf:someone/tiny-model")
    assert str(tmp_path / "hf") in line and "Fix:" in line
    assert time.monotonic() - started < 30


# -- 17. one data root --------------------------------------------------------------------------------
def test_one_data_root_for_every_command_from_any_folder(ckpt, tmp_path):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PROJECT_ROOT": str(project)}
    prepared = cli("data", "svamp", "--source", svamp(tmp_path / "SVAMP.json", [3.0, 4.0]), cwd=elsewhere, env=env)
    assert prepared.returncode == 0 and (project / "data" / "svamp" / "test.json").is_file(), prepared.stderr
    args = [f"ckpt_path={ckpt}", "data=svamp", "legibility.ablations=[]", f"hydra.run.dir={tmp_path / 'e'}"]
    done = cli("eval", *args, cwd=elsewhere, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "e" / "report.json").read_text())["n_total"] == 2
    # A benchmark not prepared: its absolute path, and a command that writes it, from any folder.
    missing = project / "data" / "multiarith" / "test.json"
    line = refused(cli("eval", f"ckpt_path={ckpt}", "data=multiarith", cwd=elsewhere, env=env), str(missing))
    assert "coconut-data multiarith" in line
    suite = cli("eval", f"ckpt_path={ckpt}", "benchmarks=[multiarith]", cwd=elsewhere, env=env)
    assert suite.returncode == 2 and "benchmarks=[]" not in suite.stdout + suite.stderr
    assert str(missing) in suite.stdout + suite.stderr


def test_generated_prosqa_names_the_command_for_its_published_validation_file(tmp_path):
    """data=prosqa_generated generates its training records but validates on the published file:
    where that is missing, the command that writes it."""
    project = tmp_path / "project"
    missing = project / "data" / "prosqa" / "valid.json"
    args = [*TINY, "data=prosqa_generated", f"hydra.run.dir={tmp_path / 'r'}"]
    line = refused(cli("train", *args, env={"PROJECT_ROOT": str(project)}), str(missing))
    assert "coconut-data prosqa" in line
