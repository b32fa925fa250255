"""Bad data and bad configuration: one clear message naming the file, record and field (or the key)
and the fix, before any training starts; records that are right to skip are skipped with a counted
warning, and `data.strict=true` makes them errors. (Malformed files and records: test_data_sources.py.)"""

import json
import logging
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_cfg
from hydra import compose, initialize_config_dir

from coconut import CONFIG_DIR
from coconut.commands.checks import check_group_choices, check_thoughts_fit
from coconut.commands.config import validate_config
from coconut.commands.evaluate import run_evaluation
from coconut.commands.train import train
from coconut.core.curriculum import Curriculum
from coconut.core.errors import CheckpointError, ConfigError
from coconut.core.methods import Method
from coconut.core.tokens import SpecialIds
from coconut.data.checks import answer_parses, keep_within_context
from coconut.data.records import DataError, Record
from coconut.data.sequences import TokenizedSample
from coconut.data.splits import load_splits
from coconut.training.checkpoints import incomplete_reason, load_checkpoint
from coconut.training.runs import run_config

IDS = SpecialIds(start_latent=90, end_latent=91, latent=92, pause=93, eos=0, pad=0)
COCONUT = Method("coconut")
CURRICULUM = Curriculum(max_latent_stage=1, c_thought=2)


def write(path: Path, records: list[dict]) -> Path:
    path.write_text(json.dumps(records))
    return path


def files_cfg(tmp_path: Path, train_file: Path, *overrides: str):
    good = write(tmp_path / "good.json", [{"question": "q", "steps": ["s"], "answer": "1"}])
    paths = [f"data.train_path={train_file}", f"data.val_path={good}", f"data.test_path={good}"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=["data=files", *paths, f"paths.output_dir={tmp_path / 'run'}", *overrides])


# -- data --------------------------------------------------------------------------------------------
def test_records_without_steps_are_kept_with_a_counted_warning_or_an_error_when_strict(tmp_path, caplog):
    path = write(
        tmp_path / "train.json",
        [{"question": "q", "steps": [], "answer": "1"}, {"question": "r", "steps": ["s"], "answer": "2"}],
    )
    cfg = files_cfg(tmp_path, path)
    with caplog.at_level(logging.WARNING):
        assert len(load_splits(cfg.data)["train"]) == 2
    assert "train.json: 1 of 2 records have no reasoning steps (records 0, 0-based)" in caplog.text
    assert "data.strict=true" in caplog.text
    with pytest.raises(DataError) as error:
        load_splits(files_cfg(tmp_path, path, "data.strict=true").data)
    assert str(error.value).startswith(f"{path}, record 0 (0-based), field 'steps': is an empty list")
    assert "Fix:" in str(error.value)


def test_an_answer_that_does_not_parse_is_skipped_with_a_warning_or_an_error_when_strict(tmp_path, caplog):
    records = [{"question": f"q{i}", "steps": ["s"], "answer": a} for i, a in enumerate(["72", "seventy", "1,000"])]
    path = write(tmp_path / "train.json", records)
    with caplog.at_level(logging.WARNING):
        loaded = load_splits(files_cfg(tmp_path, path, "data.answer_kind=number").data)["train"]
    assert [r.answer for r in loaded] == ["72", "1,000"]
    assert "train.json: skipped 1 of 3 records whose answer is not a number answer (records 1, 0-based)" in caplog.text
    with pytest.raises(DataError) as error:
        load_splits(files_cfg(tmp_path, path, "data.answer_kind=number", "data.strict=true").data)
    message = str(error.value)
    assert message.startswith(f"{path}, record 1 (0-based), field 'answer': 'seventy' is not a number answer")
    assert "data.answer_kind to statement or auto" in message
    # Nothing scorable at all is an error even without strict: the kind is what is wrong.
    words = write(tmp_path / "words.json", [{"question": "q", "steps": ["s"], "answer": a} for a in ("one", "two")])
    with pytest.raises(DataError, match="words.json, field 'answer': no answer is a number answer.*data.answer_kind"):
        load_splits(files_cfg(tmp_path, words, "data.answer_kind=number").data)


@pytest.mark.parametrize(
    "answer, kind, parses",
    [
        ("72", "number", True),
        ("$1,000.", "number", True),
        ("-0.5", "number", True),
        ("seventy", "number", False),
        ("nan", "number", False),
        ("5 5 6 0 8", "digits", True),
        ("5 5 x", "digits", False),
        ("Tom is a wumpus.", "statement", True),
        ("anything", "auto", True),
    ],
)
def test_answer_parses_under_each_kind(answer, kind, parses):
    assert answer_parses(answer, kind) is parses


def sample(question: int, steps: list[int], answer: int = 2) -> TokenizedSample:
    return TokenizedSample([5] * question, [[6] * n for n in steps], [7] * (answer - 1) + [0])


def test_a_sequence_longer_than_the_context_is_skipped_with_a_warning_or_an_error_when_strict(caplog):
    # Stage 0 is the longest here: question 4 + markers 2 + steps 6 + 5 + answer 2 = 19 tokens.
    samples = [sample(4, [3, 3]), sample(4, [6, 5]), sample(3, [1])]
    records = [Record(f"q{i}", ("s",), "1") for i in range(3)]
    kwargs = dict(source="train.json", method=COCONUT, curriculum=CURRICULUM, ids=IDS, positions=16)
    with caplog.at_level(logging.WARNING):
        kept, kept_samples = keep_within_context(records, samples, **kwargs)
    assert kept == [records[0], records[2]] and kept_samples == [samples[0], samples[2]]
    assert "train.json: skipped 1 of 3 records that do not fit the model's 16 positions (records 1, 0-based)" in (
        caplog.text
    )
    with pytest.raises(DataError) as error:
        keep_within_context(records, samples, strict=True, **kwargs)
    message = str(error.value)
    assert message.startswith("train.json, record 1 (0-based), field 'steps': is 19 tokens long")
    assert "(question 4, steps 11, answer 2), more than the model's 16 positions" in message
    assert "data.strict=false" in message
    with pytest.raises(DataError, match="every record \\(1\\) is longer than the model's 16 positions"):
        keep_within_context(records[1:2], samples[1:2], **kwargs)


def test_an_evaluation_prompt_must_leave_room_for_the_answer():
    # The prompt of the final stage: question 8 + 2 markers + 2 thoughts = 12; 12 + 6 > 16.
    samples = [sample(8, [1]), sample(2, [1])]
    records = [Record("q", ("s",), "1"), Record("r", ("s",), "2")]
    kwargs = dict(source="val.json", method=COCONUT, curriculum=CURRICULUM, ids=IDS, positions=16)
    assert keep_within_context(records, samples, generation_budget=4, **kwargs)[0] == records
    assert keep_within_context(records, samples, generation_budget=6, **kwargs)[0] == records[1:]
    with pytest.raises(DataError, match=r"record 0 .*field 'question'.*fewer than data\.max_new_tokens=6"):
        keep_within_context(records, samples, generation_budget=6, strict=True, **kwargs)


def test_train_with_strict_data_stops_before_training(tmp_path):
    path = write(tmp_path / "train.json", [{"question": "q " * 300, "steps": ["s"], "answer": "1"}] * 2)
    with pytest.raises(DataError, match=r"train\.json, record 0 \(0-based\), field 'steps': is \d+ tokens long"):
        train(files_cfg(tmp_path, path, "debug=fast", "data.strict=true"))
    assert not (tmp_path / "run" / "checkpoints").exists()


# -- configuration --------------------------------------------------------------------------------------
BAD_VALUES = [
    ("curriculum.c_thought=0", "curriculum.c_thought must be an integer >= 1, got 0"),
    ("curriculum.uniform_prob=1.5", "curriculum.uniform_prob must be a probability in [0, 1], got 1.5"),
    ("curriculum.reset_optimizer=always", "curriculum.reset_optimizer must be one of never, stage_change, every_epoch"),
    ("curriculum.start_stage=9", "curriculum.start_stage must be in 0..4 (max_latent_stage + 1), got 9"),
    ("curriculum.epochs_per_stage=0", "curriculum.epochs_per_stage must be an integer >= 1"),
    ("curriculum.max_latent_stage=-1", "curriculum.max_latent_stage must be an integer >= 0"),
    ("trainer.max_epochs=0", "trainer.max_epochs must be an integer >= 1"),
    ("data.batch_size=0", "data.batch_size must be an integer >= 1"),
    ("data.eval_batch_size=-8", "data.eval_batch_size must be an integer >= 1"),
    ("data.sizes.train=0", "data.sizes.train must be an integer >= 1"),
    ("data.max_new_tokens=0", "data.max_new_tokens must be an integer >= 1"),
    ("+data.limit.train=0", "data.limit.train must be an integer >= 1"),
    ("optimizer.lr=-1e-3", "optimizer.lr must be a number > 0"),
    ("curriculum.latent_lr_scale=0", "curriculum.latent_lr_scale must be a number > 0"),
    ("data.answer_kind=numeric", "data.answer_kind must be one of number, statement, digits, auto"),
    ("callbacks.last_checkpoint.every_n_train_steps=0", "every_n_train_steps must be an integer >= 1"),
    ("resume=yes", "resume must be auto or false"),
]


@pytest.mark.parametrize("override, message", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_out_of_range_counts_are_named_with_their_key(override, message, tmp_path):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[override, f"paths.output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="invalid configuration: .*" + re.escape(message)):
        validate_config(cfg)


def test_the_shipped_defaults_are_valid(tmp_path):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        validate_config(compose("train", overrides=[f"paths.output_dir={tmp_path}"]))


def test_bad_counts_stop_train_before_it_writes_anything(tmp_path):
    with pytest.raises(ConfigError, match="data.batch_size must be an integer >= 1, got 0"):
        train(tiny_cfg(tmp_path, "data.batch_size=0"))
    assert not any(tmp_path.iterdir())


def test_more_thoughts_than_positions_stops_before_training(tmp_path):
    # 3 stages x 100 thoughts do not fit gpt2_tiny's 256 positions.
    with pytest.raises(ConfigError) as error:
        train(tiny_cfg(tmp_path, "curriculum.c_thought=100", "curriculum.max_latent_stage=3"))
    message = str(error.value)
    assert "3 * 100 = 300 thoughts (+2 markers)" in message and "more than the model's 256" in message
    assert "lower curriculum.c_thought" in message and "curriculum.max_latent_stage" in message
    assert not (tmp_path / "checkpoints").exists()
    check_thoughts_fit(COCONUT, Curriculum(max_latent_stage=3, c_thought=2), 256, 64)  # fits
    no_thoughts = Method("cot", thought="none", stage="zero", markers=False)
    check_thoughts_fit(no_thoughts, Curriculum(max_latent_stage=3, c_thought=100), 8, 4)  # writes none


@pytest.mark.parametrize(
    "overrides, problem",
    [
        (
            ["method=xyz"],
            "method=xyz: no such method (no coconut/conf/method/xyz.yaml). Valid choices: coconut, codi, colar, cot,",
        ),
        (["data=gsm9k"], "data=gsm9k: no such data (no coconut/conf/data/gsm9k.yaml). Valid choices: arithmetic,"),
        (["-m", "method=cot,bogus"], "method=bogus: no such method"),
        (["+experiment=nope"], "experiment=nope: no such experiment"),
    ],
)
def test_unknown_group_choice_lists_the_valid_ones(overrides, problem):
    with pytest.raises(ConfigError) as error:
        check_group_choices(overrides, CONFIG_DIR)
    assert str(error.value).startswith(problem)


def test_valid_group_choices_and_other_overrides_pass():
    check_group_choices(
        ["-m", "method=cot,no_cot", "debug=null", "data.batch_size=4", "hydra/launcher=basic", "seed=choice(1,2)"],
        CONFIG_DIR,
    )


def test_cli_unknown_method_is_one_line_with_choices_and_exit_2():
    done = subprocess.run(
        [sys.executable, "-m", "coconut.cli.train", "method=xyz"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1  # no traceback, no config search path
    choices = ", ".join(sorted(p.stem for p in (Path(CONFIG_DIR) / "method").glob("*.yaml")))
    assert f"method=xyz: no such method (no coconut/conf/method/xyz.yaml). Valid choices: {choices}" in done.stderr


# -- impossible architecture numbers ------------------------------------------------------------------
BAD_ARCHITECTURES = [
    ("model.architecture.n_layer=-1", "model.architecture.n_layer must be an integer >= 1, got -1"),
    ("model.architecture.n_head=0", "model.architecture.n_head must be an integer >= 1, got 0"),
    ("model.architecture.n_positions=0", "model.architecture.n_positions must be an integer >= 1, got 0"),
    ("model.architecture.n_embd=130", "model.architecture.n_embd=130 does not split into model.architecture.n_head=4"),
    ("model.architecture.attn_pdrop=1.5", "model.architecture.attn_pdrop must be a probability in [0, 1], got 1.5"),
    ("+model.architecture.n_inner=0", "model.architecture.n_inner must be an integer >= 1, got 0"),
    ("trainer.cpu_threads=0", "trainer.cpu_threads must be an integer >= 1, got 0 (or null"),
]


@pytest.mark.parametrize("override, message", BAD_ARCHITECTURES, ids=[b[0] for b in BAD_ARCHITECTURES])
def test_impossible_architecture_numbers_are_named_with_their_key(override, message, tmp_path):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[override, f"paths.output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="invalid configuration: .*" + re.escape(message)):
        validate_config(cfg)


def test_llama_heads_must_split_the_width_and_share_key_value_heads(tmp_path):
    overrides = ["model=llama_tiny", "model.architecture.hidden_size=130", "model.architecture.num_key_value_heads=3"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"paths.output_dir={tmp_path}"])
    with pytest.raises(ConfigError) as error:
        validate_config(cfg)
    assert "model.architecture.hidden_size=130 does not split into model.architecture.num_attention_heads=4" in str(
        error.value
    )
    assert "num_attention_heads=4 is not a multiple of model.architecture.num_key_value_heads=3" in str(error.value)
    for model in ("llama_tiny", "gpt2_tiny", "gpt2"):  # the shipped models pass
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            validate_config(compose("train", overrides=[f"model={model}", f"paths.output_dir={tmp_path}"]))


def test_a_negative_layer_count_stops_train_before_it_builds_or_writes_anything(tmp_path):
    with pytest.raises(ConfigError, match="model.architecture.n_layer must be an integer >= 1, got -1"):
        train(tiny_cfg(tmp_path, "model.architecture.n_layer=-1"))
    assert not any(tmp_path.iterdir())


# -- truncated or damaged checkpoints -------------------------------------------------------------------
@pytest.fixture
def checkpoints(tmp_path) -> dict[str, Path]:
    """A run's checkpoints folder: a complete stage0-best.ckpt, then last.ckpt cut off mid-copy; beside
    it (elsewhere) random bytes and a copy with one damaged byte in its tensor data."""
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save({"coconut": {}, "weights": torch.zeros(4096)}, folder / "stage0-best.ckpt")
    whole = (folder / "stage0-best.ckpt").read_bytes()
    (folder / "last.ckpt").write_bytes(whole[: len(whole) // 2])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "random.ckpt").write_bytes(random.Random(0).randbytes(20_000))
    at = whole.index(bytes(4096 * 4)) + 1000  # inside the zeros of the tensor
    (elsewhere / "damaged.ckpt").write_bytes(whole[:at] + b"\x01" + whole[at + 1 :])
    return {
        "good": folder / "stage0-best.ckpt",
        "truncated": folder / "last.ckpt",
        "random": elsewhere / "random.ckpt",
        "damaged": elsewhere / "damaged.ckpt",
    }


def test_incomplete_checkpoints_are_told_apart_from_complete_ones(checkpoints):
    assert incomplete_reason(checkpoints["good"]) is None
    assert "cut off" in incomplete_reason(checkpoints["truncated"])
    assert "cut off or is not a checkpoint" in incomplete_reason(checkpoints["random"])
    assert "damaged" in incomplete_reason(checkpoints["damaged"])
    for name in ("truncated", "random", "damaged"):
        with pytest.raises(CheckpointError, match=f"init_from={re.escape(str(checkpoints[name]))} is not a complete"):
            load_checkpoint(checkpoints[name], "init_from")


def test_eval_and_train_name_the_incomplete_checkpoint_and_the_complete_one_beside_it(checkpoints, tmp_path):
    truncated, good = checkpoints["truncated"], checkpoints["good"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        eval_cfg = compose("eval", overrides=[f"ckpt_path={truncated}", f"paths.output_dir={tmp_path / 'eval'}"])
    runs = [
        (run_evaluation, eval_cfg, f"ckpt_path={truncated}"),
        (train, tiny_cfg(tmp_path / "resumed", f"ckpt_path={truncated}"), f"ckpt_path={truncated}"),
        (train, tiny_cfg(tmp_path / "initialised", f"init_from={truncated}"), f"init_from={truncated}"),
    ]
    for run, cfg, named in runs:
        with pytest.raises(CheckpointError) as error:
            run(cfg)
        message = str(error.value)
        assert message.startswith(f"{named} is not a complete checkpoint: it is cut off"), message
        assert f"Complete checkpoints beside it: {good} (saved " in message and "\n" not in message
    assert not (tmp_path / "eval").exists() and not (tmp_path / "resumed").exists()
    with pytest.raises(CheckpointError, match="No complete checkpoint lies beside it. Fix: copy or download it again"):
        train(tiny_cfg(tmp_path / "other", f"ckpt_path={checkpoints['random']}"))


def test_resume_auto_names_the_unfinished_runs_incomplete_checkpoint_and_an_earlier_one(checkpoints, tmp_path):
    earlier = checkpoints["truncated"].parent.parent  # tmp_path/run: killed while its last.ckpt was copied
    record = {"status": "interrupted", "started": 1.0, "host": "", "pid": -1, "resumed_from": None}
    # A seed of its own: other tests' runs (whose search reaches this folder) must not take it for theirs.
    (earlier / "run.json").write_text(json.dumps(record | {"config": run_config(tiny_cfg(earlier, "seed=4242"))}))
    with pytest.raises(CheckpointError) as error:
        train(tiny_cfg(tmp_path / "new", "seed=4242"))
    message = str(error.value)
    assert message.startswith(
        f"resume=auto: {checkpoints['truncated']}, the last checkpoint of the unfinished run with this config, "
        "is not a complete checkpoint"
    )
    assert f"Complete checkpoints beside it: {checkpoints['good']}" in message
    assert message.endswith("Fix: resume from an earlier one with ckpt_path=<file>, or start afresh with resume=false")
    assert not (tmp_path / "new").exists()


def run_cli(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=300)


# The train cases are covered in-process above; their command-line runs (exit 2, one line) are slow.
@pytest.mark.parametrize(
    "module, arg, problem",
    [
        ("coconut.cli.evaluate", "ckpt_path={truncated}", "ckpt_path={truncated} is not a complete checkpoint"),
        pytest.param(
            "coconut.cli.train",
            "ckpt_path={truncated}",
            "ckpt_path={truncated} is not a complete checkpoint",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            "coconut.cli.train",
            "model.architecture.n_layer=-1",
            "model.architecture.n_layer must be an integer >= 1, got -1",
            marks=pytest.mark.slow,
        ),
    ],
    ids=["eval-truncated", "train-truncated", "train-n_layer"],
)
def test_cli_incomplete_checkpoint_and_impossible_architecture_are_one_line_and_exit_2(
    module, arg, problem, checkpoints, tmp_path
):
    truncated = checkpoints["truncated"]
    done = run_cli(module, arg.format(truncated=truncated), f"hydra.run.dir={tmp_path / 'out'}")
    output = done.stdout + done.stderr
    assert done.returncode == 2, output[-2000:]
    assert "Traceback" not in output
    assert len([line for line in output.splitlines() if problem.format(truncated=truncated) in line]) == 1, output


def test_cli_eval_unknown_group_choice_is_coconut_trains_one_line():
    done = run_cli("coconut.cli.evaluate", "method=nonexistent", "ckpt_path=x.ckpt")
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1  # no traceback, no config search path
    choices = ", ".join(sorted(p.stem for p in (Path(CONFIG_DIR) / "method").glob("*.yaml")))
    assert done.stderr.strip() == (
        "coconut-eval: method=nonexistent: no such method (no coconut/conf/method/nonexistent.yaml). "
        f"Valid choices: {choices}"
    )
