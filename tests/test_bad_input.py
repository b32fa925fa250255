"""Bad data and bad configuration: one clear message naming the file, record and field (or the key)
and the fix, before any training starts; records that are right to skip are skipped with a counted
warning, and `data.strict=true` makes them errors. (Malformed files and records: test_data_sources.py.)"""

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_cfg
from hydra import compose, initialize_config_dir

from coconut.cli.checks import check_group_choices, check_thoughts_fit, validate_config
from coconut.cli.train import CONFIG_DIR, train
from coconut.core.curriculum import Curriculum
from coconut.core.errors import ConfigError
from coconut.core.methods import Method
from coconut.core.tokens import SpecialIds
from coconut.data.checks import answer_parses, keep_within_context
from coconut.data.records import DataError, Record
from coconut.data.sequences import TokenizedSample
from coconut.data.splits import load_splits

IDS = SpecialIds(start_latent=90, end_latent=91, latent=92, pause=93, eos=0, pad=0)
COCONUT = Method("coconut")
CURRICULUM = Curriculum(max_latent_stage=1, latents_per_step=2)


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
    ("curriculum.latents_per_step=-2", "curriculum.latents_per_step must be an integer >= 1, got -2"),
    ("curriculum.epochs_per_stage=0", "curriculum.epochs_per_stage must be an integer >= 1"),
    ("curriculum.max_latent_stage=-1", "curriculum.max_latent_stage must be an integer >= 0"),
    ("trainer.max_epochs=0", "trainer.max_epochs must be an integer >= 1"),
    ("data.batch_size=0", "data.batch_size must be an integer >= 1"),
    ("data.eval_batch_size=-8", "data.eval_batch_size must be an integer >= 1"),
    ("data.sizes.train=0", "data.sizes.train must be an integer >= 1"),
    ("data.max_new_tokens=0", "data.max_new_tokens must be an integer >= 1"),
    ("+data.limit.train=0", "data.limit.train must be an integer >= 1"),
    ("optimizer.lr=-1e-3", "optimizer.lr must be a number > 0"),
    ("data.answer_kind=numeric", "data.answer_kind must be one of number, statement, digits, auto"),
    ("callbacks.last_checkpoint.every_n_train_steps=0", "every_n_train_steps must be an integer >= 1"),
    ("resume=yes", "resume must be auto or false"),
]


@pytest.mark.parametrize("override, message", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_out_of_range_counts_are_named_with_their_key(override, message, tmp_path):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[override, f"paths.output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="invalid configuration: .*" + message.replace("(", r"\(")):
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
    check_thoughts_fit(COCONUT, Curriculum(max_latent_stage=3, latents_per_step=2), 256, 64)  # fits
    no_thoughts = Method("cot", thought="none", stage="zero", markers=False)
    check_thoughts_fit(no_thoughts, Curriculum(max_latent_stage=3, latents_per_step=100), 8, 4)  # writes none


@pytest.mark.parametrize(
    "overrides, problem",
    [
        (["method=xyz"], "method=xyz: no such method (no conf/method/xyz.yaml). Valid choices: coconut, cot,"),
        (["data=gsm9k"], "data=gsm9k: no such data (no conf/data/gsm9k.yaml). Valid choices: arithmetic,"),
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
    assert f"method=xyz: no such method (no conf/method/xyz.yaml). Valid choices: {choices}" in done.stderr
