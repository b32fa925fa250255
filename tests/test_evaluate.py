"""coconut-eval end to end on a tiny trained checkpoint: the report, its fields and their ranges,
inference-time thought counts, the CoT reference for legibility loss, and the CLI."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import eval_cfg, scalars, tiny_cfg

from coconut.commands.checks import CheckpointError
from coconut.commands.evaluate import run_evaluation
from coconut.commands.train import train
from coconut.core.errors import ConfigError, UserInputError
from coconut.eval.report import thoughts_verdict

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    train(tiny_cfg(run, "trainer.max_epochs=2", "test=false"))
    return run


def in_unit_range(value) -> bool:
    return value is None or 0.0 <= value <= 1.0


def test_report_fields_are_present_and_in_range(trained, tmp_path):
    before = sorted(p.name for p in (trained / "checkpoints").iterdir())
    report = run_evaluation(eval_cfg(tmp_path, f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}"))
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["accuracy"] == report["accuracy"]
    assert report["n"] == 16 and report["split"] == "test" and report["method"] == "coconut"
    assert report["stage"] == 1  # last.ckpt was saved in the second epoch: stage 1
    assert 0.0 <= report["accuracy"] <= 1.0
    tokens = report["tokens"]
    assert 1 <= tokens["generated_mean"] <= 24 and tokens["thoughts_mean"] == 1.0  # one step, one thought
    assert tokens["forward_passes_mean"] >= 3  # prompt, thought, the pass after it
    assert report["latency"]["questions_per_second"] > 0
    legibility = report["legibility"]
    for name in ("decode_top1", "decode_top5", "decode_top1_chance", "decode_top5_chance", "probe", "reasoning"):
        assert in_unit_range(legibility[name]), name
    assert legibility["decode_top1"] is not None and legibility["decode_top5"] >= legibility["decode_top1"]
    assert -1.0 <= legibility["loss"] <= 1.0 and legibility["loss_reference"] == "reference_steps"
    assert set(legibility["ablation_drop"]) == {"zeros", "mean", "other"}
    assert all(-1.0 <= d <= 1.0 for d in legibility["ablation_drop"].values())
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and all(len(r["decoded_thoughts"]) == 1 and len(r["decoded_thoughts"][0]) == 5 for r in rows)
    assert {"question", "reference_steps", "generated", "correct", "legibility"} <= set(rows[0])
    assert "| accuracy |" in (tmp_path / "report.md").read_text()
    assert "eval/accuracy" in scalars(tmp_path)
    assert sorted(p.name for p in (trained / "checkpoints").iterdir()) == before  # nothing written there


def test_without_legibility_the_answers_are_the_same_and_nothing_else_is_measured(trained, tmp_path):
    ckpt = f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}"
    full = run_evaluation(eval_cfg(tmp_path / "full", ckpt))
    bare = run_evaluation(eval_cfg(tmp_path / "bare", ckpt, "legibility.measure=false"))
    assert full["legibility"]["measured"] is True and bare["legibility"]["measured"] is False
    assert bare["accuracy"] == full["accuracy"] and bare["tokens"] == full["tokens"]
    assert bare["legibility"] == {"measured": False, "ablation": {}, "ablation_drop": {}}  # no ablation either
    rows = {name: (tmp_path / name / "samples.jsonl").read_text().splitlines() for name in ("full", "bare")}
    full_rows, bare_rows = ([json.loads(line) for line in rows[name]] for name in ("full", "bare"))
    assert [r["generated"] for r in bare_rows] == [r["generated"] for r in full_rows]
    assert all(r["decoded_thoughts"] is None and r["legibility"] is None for r in bare_rows)
    assert "legibility: not measured" in (tmp_path / "bare" / "report.md").read_text()
    assert (
        thoughts_verdict(bare)
        == "thoughts carried the answer: not measured (legibility.measure=false; true measures it)"
    )


def test_thought_count_can_be_set_at_inference(trained, tmp_path):
    ckpt = f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}"
    none = run_evaluation(eval_cfg(tmp_path / "zero", ckpt, "n_thoughts=0", "legibility.ablations=[]"))
    three = run_evaluation(eval_cfg(tmp_path / "three", ckpt, "n_thoughts=3", "legibility.ablations=[]"))
    assert none["tokens"]["thoughts_mean"] == 0 and three["tokens"]["thoughts_mean"] == 3
    assert none["legibility"]["decode_top1"] is None  # no thought to read
    assert none["legibility"]["ablation"] == {}

    # scripts/compare.py puts them side by side, with the accuracy-vs-tokens plot
    compare = [sys.executable, str(ROOT / "scripts" / "compare.py"), str(tmp_path / "zero"), str(tmp_path / "three")]
    shown = subprocess.run([*compare, "--out", str(tmp_path / "cmp")], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr[-2000:]
    rows = [line for line in (tmp_path / "cmp" / "compare.md").read_text().splitlines() if line.startswith("| zero")]
    assert len(rows) == 1 and " 0.0 |" in rows[0] and "| identity |" in rows[0]  # zero thoughts, the projection
    assert (tmp_path / "cmp" / "accuracy_vs_tokens.png").stat().st_size > 1000


def test_legibility_loss_against_a_cot_evaluation(trained, tmp_path):
    checkpoints = trained / "checkpoints"
    cot = run_evaluation(eval_cfg(tmp_path / "cot", f"ckpt_path={checkpoints / 'stage0-best.ckpt'}"))
    assert cot["stage"] == 0 and cot["tokens"]["thoughts_mean"] == 0
    latent = run_evaluation(
        eval_cfg(
            tmp_path / "latent", f"ckpt_path={checkpoints / 'last.ckpt'}", f"legibility.reference={tmp_path / 'cot'}"
        )
    )
    assert latent["legibility"]["loss_reference"] == "cot_model"
    assert latent["legibility"]["loss"] == pytest.approx(
        cot["legibility"]["reasoning"] - latent["legibility"]["reasoning"]
    )


def test_cli_sweeps_thought_counts_and_rejects_a_missing_checkpoint(trained, tmp_path):
    ckpt = trained / "checkpoints" / "last.ckpt"
    overrides = [
        f"ckpt_path={ckpt}",
        "legibility.ablations=[]",
        "n_thoughts=0,2",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    sweep = subprocess.run(
        [sys.executable, "-m", "coconut.cli.evaluate", "-m", *overrides], capture_output=True, text=True
    )
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    reports = [json.loads((tmp_path / "sweep" / str(i) / "report.json").read_text()) for i in (0, 1)]
    assert [r["tokens"]["thoughts_mean"] for r in reports] == [0, 2]

    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "coconut.cli.evaluate",
            f"ckpt_path={tmp_path / 'nope.ckpt'}",
            f"hydra.run.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2
    assert "no such file" in missing.stderr + missing.stdout and "Traceback" not in missing.stderr


def test_latest_and_best_are_the_newest_training_runs_checkpoints(trained, tmp_path, monkeypatch):
    import coconut.commands.load as load_module

    monkeypatch.setattr(load_module, "TRAIN_RUNS", tmp_path / "runs")
    with pytest.raises(load_module.ConfigError, match="no .* here"):
        load_module.resolve_checkpoint("latest")
    for name in ("older", "newer"):
        (tmp_path / "runs" / name / "checkpoints").mkdir(parents=True)
        shutil.copy(trained / "checkpoints" / "last.ckpt", tmp_path / "runs" / name / "checkpoints" / "last.ckpt")
    assert load_module.resolve_checkpoint("latest") == str(tmp_path / "runs" / "newer" / "checkpoints" / "last.ckpt")
    # best: the newest run's best checkpoint of its last stage, stage 10 after stage 9 (not by name).
    with pytest.raises(load_module.ConfigError, match="holds no stage"):
        load_module.resolve_checkpoint("best")
    for stage in (0, 9, 10):
        (tmp_path / "runs" / "newer" / "checkpoints" / f"stage{stage}-best.ckpt").write_bytes(b"")
    assert load_module.resolve_checkpoint("best") == str(
        tmp_path / "runs" / "newer" / "checkpoints" / "stage10-best.ckpt"
    )


def test_an_incompatible_method_is_refused_before_evaluating(trained, tmp_path):
    ckpt = f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}"
    with pytest.raises(CheckpointError, match="method=coconut"):
        run_evaluation(eval_cfg(tmp_path / "cot", ckpt, "method=cot"))
    final = run_evaluation(eval_cfg(tmp_path / "final", ckpt, "method=no_curriculum", "legibility.ablations=[]"))
    assert final["method"] == "no_curriculum" and final["stage"] == 2  # the final stage (max_latent_stage 1 + 1)


def test_reading_thoughts_by_a_readout_needs_a_sparse_readout_checkpoint(trained, tmp_path):
    ckpt = f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}"
    refused = "legibility.read=readout .* trained with identity. Fix: legibility.read=lm_head"
    with pytest.raises(ConfigError, match=refused):
        run_evaluation(eval_cfg(tmp_path / "readout", ckpt, "legibility.read=readout"))
    with pytest.raises(ConfigError, match="legibility.read must be one of lm_head, readout, got .probe."):
        run_evaluation(eval_cfg(tmp_path / "probe", ckpt, "legibility.read=probe"))
    assert not (tmp_path / "readout").exists() and not (tmp_path / "probe").exists()


def test_questions_without_room_to_answer_are_skipped_or_refused(trained, tmp_path):
    # gpt2_tiny has 256 positions: no prompt leaves room for 250 new tokens, some (of 16) leave room for 170
    ckpt = f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}"
    with pytest.raises(UserInputError, match="every record .* positions"):
        run_evaluation(eval_cfg(tmp_path / "none", ckpt, "max_new_tokens=250"))
    report = run_evaluation(eval_cfg(tmp_path / "some", ckpt, "max_new_tokens=170", "legibility.ablations=[]"))
    assert 0 < report["n"] < 16


def test_skipped_questions_are_in_the_denominator(trained, tmp_path):
    """Honest denominators: n_total counts every question, skipped ones (with the reason) are wrong
    in `accuracy`, and `accuracy_answered` is over those answered."""
    ckpt = f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}"
    report = run_evaluation(eval_cfg(tmp_path, ckpt, "max_new_tokens=170", "legibility.ablations=[]"))
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    correct = sum(r["correct"] for r in rows)
    assert report["n_total"] == 16 and report["n"] == len(rows) and report["n_skipped"] == 16 - len(rows) > 0
    (reason,) = report["skipped"]
    assert "max_new_tokens=170" in reason and "256 positions" in reason
    assert report["skipped"][reason] == report["n_skipped"]
    assert report["accuracy"] == correct / 16 and report["accuracy_answered"] == correct / len(rows)
    assert f"skipped {report['n_skipped']}" in (tmp_path / "report.md").read_text()
    full = run_evaluation(eval_cfg(tmp_path / "all", ckpt, "legibility.ablations=[]"))
    assert full["n_total"] == full["n"] == 16 and full["n_skipped"] == 0 and full["skipped"] == {}
    assert full["accuracy"] == full["accuracy_answered"]


def test_thoughts_at_evaluation_never_depend_on_the_reference_steps(trained, tmp_path):
    """The same questions with their steps, with none and with eight: the same thoughts in every
    prompt (the final stage's max_latent_stage x c = 1), the same answers, and the count in the report."""
    import torch
    from omegaconf import OmegaConf

    from coconut.data.sources import write_records
    from coconut.data.splits import load_splits

    ckpt = trained / "checkpoints" / "last.ckpt"
    config = torch.load(ckpt, map_location="cpu", weights_only=False)["hyper_parameters"]["config"]
    records = load_splits(OmegaConf.create(config["data"]), ("test",))["test"]
    variants = {
        "steps": records,
        "none": [type(r)(r.question, (), r.answer) for r in records],
        "eight": [type(r)(r.question, ("<<1+1=2>>",) * 8, r.answer) for r in records],
    }
    reports, answers = {}, {}
    for name, recs in variants.items():
        write_records(recs, tmp_path / f"{name}.json")
        reports[name] = run_evaluation(
            eval_cfg(
                tmp_path / name,
                f"ckpt_path={ckpt}",
                "method=no_curriculum",  # the final stage: where the old rule capped at the step count
                "data=files",
                f"data.train_path={tmp_path / name}.json",
                f"data.val_path={tmp_path / name}.json",
                f"data.test_path={tmp_path / name}.json",
                "legibility.ablations=[]",
            )
        )
        answers[name] = [json.loads(line)["generated"] for line in (tmp_path / name / "samples.jsonl").open()]
    for name, report in reports.items():
        assert report["stage"] == 2 and report["thoughts_per_question"] == 1, name
        assert "never the reference steps" in report["thoughts_from"]
        assert report["tokens"]["thoughts_mean"] == 1.0, name
    assert answers["none"] == answers["steps"] == answers["eight"]


def test_a_checkpoint_saved_before_the_layers_moved_still_evaluates(trained, tmp_path):
    """Checkpoints of coconut 0.1 (flat modules) name `coconut.callbacks.LastCheckpoint` and
    `coconut.diagnostics.ThoughtDiagnostics` in their config and pickle no coconut class: they load,
    and evaluate to the same numbers as today's."""
    import pickletools
    import zipfile

    import torch

    path = trained / "checkpoints" / "last.ckpt"
    with zipfile.ZipFile(path) as archive:
        pickled = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    modules, strings = [], []  # the module of every class or function the pickle refers to
    for op, arg, _ in pickletools.genops(pickled):
        if op.name == "GLOBAL":
            modules.append(arg.split(" ")[0])
        elif op.name == "STACK_GLOBAL":  # module and name were pushed as the last two strings
            modules.append(strings[-2])
        elif isinstance(arg, str):
            strings.append(arg)
    assert "torch._utils" in modules  # the scan sees the tensors' rebuild function
    globals_ = [m for m in modules if m.startswith("coconut")]
    assert not globals_, f"the checkpoint pickles coconut classes, which a module move would break: {globals_}"
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    callbacks = checkpoint["hyper_parameters"]["config"]["callbacks"]
    callbacks["last_checkpoint"]["_target_"] = "coconut.callbacks.LastCheckpoint"
    callbacks["thought_diagnostics"]["_target_"] = "coconut.diagnostics.ThoughtDiagnostics"
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    today = run_evaluation(eval_cfg(tmp_path / "new", f"ckpt_path={path}", "legibility.ablations=[]"))
    before = run_evaluation(eval_cfg(tmp_path / "old", f"ckpt_path={old}", "legibility.ablations=[]"))
    assert before["accuracy"] == today["accuracy"] and before["tokens"] == today["tokens"]
