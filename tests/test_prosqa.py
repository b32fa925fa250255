"""ProsQA: the generator against the published records, the compact encoding, coconut-data
prosqa --generate, and an evaluation that reads the published file unchanged."""

import json
import subprocess
import sys
from collections import deque

import pytest
from conftest import ROOT, SHARED_DATA, needs_shared_data, tiny_cfg

from coconut.data.graph import parse_graph
from coconut.data.prosqa import compact_record, decode_answer, encode_records, generate_prosqa, generate_records
from coconut.data.prosqa_stats import compare
from coconut.data.records import DataError, Record
from coconut.data.sources import load_records

PUBLISHED_VALID = SHARED_DATA / "prosqa" / "prosqa_valid.json"


def distances(edges, start) -> dict:
    """Hops from `start` to every node it reaches: written here again, apart from prosqa_stats', so
    that the generator is checked by code other than the statistics it is calibrated with."""
    children: dict = {}
    for a, b in edges:
        children.setdefault(a, []).append(b)
    found, queue = {start: 0}, deque([start])
    while queue:
        node = queue.popleft()
        for child in children.get(node, ()):
            if child not in found:
                found[child] = found[node] + 1
                queue.append(child)
    return found


@needs_shared_data
def test_generated_records_have_the_published_distribution():
    """Every statistic of scripts/prosqa_stats.py within its tolerance (3 standard errors of the
    published mean; 0.08 total variation for a distribution), against the 300 published records."""
    published = load_records(PUBLISHED_VALID, "prosqa")
    differences = compare(generate_records(2000, seed=0), published)
    assert len(differences) >= 15
    out = [
        f"{d.name}: generated {d.generated}, published {d.published} ({d.distance:.2f})"
        for d in differences
        if not d.ok
    ]
    assert not out, "\n".join(out)


@needs_shared_data
def test_the_statistics_script_prints_the_table_and_passes():
    """scripts/prosqa_stats.py end to end: generated against published, every row within tolerance."""
    done = subprocess.run(
        [sys.executable, "scripts/prosqa_stats.py", str(PUBLISHED_VALID), "--n", "2000"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| answer depth (hops root -> answer) |" in done.stdout


@needs_shared_data
def test_the_statistics_tell_a_different_distribution_apart():
    """The comparison can fail: graphs with one parent per node (a forest) are told apart."""
    published = load_records(PUBLISHED_VALID, "prosqa")
    import coconut.data.prosqa as prosqa

    original = prosqa.PARENTS_MEAN
    try:
        prosqa.PARENTS_MEAN = 0.8
        differences = compare(generate_records(500, seed=0), published)
    finally:
        prosqa.PARENTS_MEAN = original
    assert {"sentences (edges)", "in-degree (not people)"} <= {d.name for d in differences if not d.ok}


def test_generated_records_are_in_the_published_format_and_consistent():
    for raw in generate_prosqa(200, seed=3):
        assert list(raw) == ["question", "answer", "steps", "idx_to_symbol", "edges", "root", "target", "neg_target"]
        names, edges = raw["idx_to_symbol"], [tuple(e) for e in raw["edges"]]
        assert all(a < b for a, b in edges)  # numbered parents first, as published
        reach = distances(edges, raw["root"])
        assert 3 <= reach[raw["target"]] <= 6 and raw["neg_target"] not in reach
        assert len(raw["steps"]) == reach[raw["target"]]
        # The question states every edge once, then asks about the root and both candidates.
        assert raw["question"].count(".") == len(edges)
        for a, b in edges:
            assert f"{names[a]} is a {names[b]}." in raw["question"]
        assert raw["question"].endswith(
            f"Is {names[raw['root']]} a {names[raw['target']]} or {names[raw['neg_target']]}?"
        ) or raw["question"].endswith(
            f"Is {names[raw['root']]} a {names[raw['neg_target']]} or {names[raw['target']]}?"
        )
        assert raw["answer"] == f"{names[raw['root']]} is a {names[raw['target']]}."
        json.dumps(raw)


def test_generation_is_seeded():
    assert generate_prosqa(5, seed=1) == generate_prosqa(5, seed=1) != generate_prosqa(5, seed=2)


def published_or_generated() -> list[Record]:
    if PUBLISHED_VALID.exists():
        return load_records(PUBLISHED_VALID, "prosqa")
    return generate_records(300, seed=5)


def test_the_compact_encoding_loses_nothing():
    """Each name becomes one letter: the encoded graph is the same graph, the steps its hops, and the
    answer maps back to the published statement."""
    for record in published_or_generated():
        compact = compact_record(record)
        graph = parse_graph(compact.question)
        assert graph is not None
        from coconut.data.prosqa import read_question

        original = read_question(record.question)
        assert len(graph.edges) == len(original.edges) and len(set(graph.nodes)) == len(
            {n for e in original.edges for n in e} | {original.root, *original.candidates}
        )
        hops = [tuple(step.split()) for step in compact.steps]
        assert all(hop in graph.edges for hop in hops) and hops[0][0] == graph.root and hops[-1][1] == compact.answer
        assert compact.answer in graph.candidates and compact.answer in graph.frontiers(len(hops))[len(hops)]
        assert decode_answer(record.question, compact.answer) == record.answer
        assert compact_record(record) == compact  # the same question always encodes the same way
        assert all(len(name) == 1 for name in graph.nodes)


def test_compact_encoding_of_a_record_that_is_not_prosqa_names_it():
    records = [generate_records(1, seed=0)[0], Record("What is 2 + 3?", ("<<2+3=5>>",), "5")]
    with pytest.raises(DataError, match=r"train.json, record 1 \(0-based\), field 'question'.*data.encoding=text"):
        encode_records(records, "compact", source="train.json")
    with pytest.raises(DataError, match="unknown data.encoding 'zip'"):
        encode_records(records, "zip", source="train.json")


def test_coconut_data_prosqa_generate_writes_the_published_format(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "coconut.data", "prosqa", "--generate", "7", "--seed", "2", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    written = json.loads((tmp_path / "prosqa_generated" / "train.json").read_text())
    assert written == generate_prosqa(7, seed=2)
    assert len(load_records(tmp_path / "prosqa_generated" / "train.json", "prosqa")) == 7


@needs_shared_data
def test_coconut_eval_scores_the_published_file_unchanged(tmp_path):
    """A model trained on generated compact records is evaluated on prosqa_valid.json as published
    (read in the checkpoint's encoding): every question counted, accuracy by the answer's statement,
    and the frontier read from the record's own graph with its chance level."""
    from hydra import compose, initialize_config_dir

    from coconut import CONFIG_DIR
    from coconut.commands.evaluate import run_evaluation
    from coconut.commands.train import train

    run = tmp_path / "run"
    train(
        tiny_cfg(
            run,
            "data=prosqa_generated",
            f"data.val_path={PUBLISHED_VALID}",
            "data.sizes.train=64",
            "data.sizes.test=8",
            "curriculum.max_latent_stage=6",
            "test=false",
        )
    )
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            config_name="eval",
            overrides=[
                f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
                f"paths.output_dir={tmp_path / 'eval'}",
                "data=files",  # any file in the published format, read as published
                f"data.test_path={PUBLISHED_VALID}",
                "limit=20",
                "max_new_tokens=24",  # data=files allows 64, more than a compact answer needs
                "legibility.intervention=false",
            ],
        )
    report = run_evaluation(cfg)
    assert report["n_total"] == 20 and report["dataset"] == "files" and report["n_thoughts"] is None
    block = report["legibility"]
    assert 0 < block["frontier_topk_chance"] < 1 and block["frontier_thoughts"] > 0
    samples = [json.loads(line) for line in (tmp_path / "eval" / "samples.jsonl").read_text().splitlines()]
    published = load_records(PUBLISHED_VALID, "prosqa")[:20]
    assert [s["reference_answer"] for s in samples] == [compact_record(r).answer for r in published]
    # ... and each answer as the published file writes it: the paper's rule scores these statements.
    assert [s["reference_as_published"] for s in samples] == [r.answer for r in published]
    assert all(s["correct"] == (s["prediction_as_published"] == s["reference_as_published"]) for s in samples)
