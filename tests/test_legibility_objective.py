"""The legibility objective (legibility.weight): its targets from the records, the set cross-entropy on
hand-built thoughts, the config checks, lambda = 0 against today's loss, and a whole run with
sparse_readout that logs the term and is evaluated with the causal-legibility column."""

import json

import pytest
import torch
from conftest import scalars, tiny_cfg, tiny_lm

from coconut.commands.config import validate_config
from coconut.commands.evaluate import run_evaluation
from coconut.commands.train import train
from coconut.core.curriculum import Curriculum
from coconut.core.errors import ConfigError
from coconut.core.legibility_objective import check_read, set_cross_entropy, thought_legibility
from coconut.core.methods import Method
from coconut.core.model import ContinuousThoughtLM
from coconut.core.thought_projection import build_thought_projection
from coconut.core.tokenizer import build_tokenizer
from coconut.core.tokens import SpecialIds
from coconut.data.collate import collate_training
from coconut.data.graph import generate_graph
from coconut.data.records import Record
from coconut.data.sequences import build_sequence, tokenize_records
from coconut.data.step_keys import first_token_ids, node_tokens

ARITHMETIC = Record(question="Ann has 3 boxes of 4 pens.", steps=("<<3*4=12>>", "<<12-5=7>>", "..."), answer="7")
IDS = SpecialIds(start_latent=301, latent=302, end_latent=303, pad=0, eos=0, pause=304)
COCONUT = Method.from_config({"name": "coconut"})


@pytest.fixture(scope="module")
def tokenizer():
    records = [ARITHMETIC, *generate_graph(4, seed=1)]
    return build_tokenizer((t for r in records for t in (r.question, *r.steps, "### " + r.answer)), vocab_size=300)


# -- targets ------------------------------------------------------------------------------------
def test_each_thought_targets_the_key_content_of_the_step_it_replaced(tokenizer):
    (sample,) = tokenize_records([ARITHMETIC], tokenizer, with_step_targets=True)
    twelve, seven = first_token_ids(tokenizer, "12"), first_token_ids(tokenizer, "7")
    assert sample.step_targets == (tuple(twelve), tuple(seven), ())  # "..." has no key content
    assert tokenizer.decode(twelve) == "1"  # a digit-split tokenizer: "12" starts with "1" (" 12" with a space)


def test_targets_follow_the_stage_and_the_thoughts_per_step(tokenizer):
    record = Record(question="Q.", steps=("<<3*4=12>>", "<<12-5=7>>", "<<7*2=14>>"), answer="14")
    (sample,) = tokenize_records([record], tokenizer, with_step_targets=True)
    one, seven = tuple(first_token_ids(tokenizer, "12")), tuple(first_token_ids(tokenizer, "7"))
    curriculum = Curriculum(max_latent_stage=2, c_thought=2)
    stage1 = build_sequence(sample, 1, COCONUT, curriculum, IDS)
    assert stage1.thought_targets == (one, one)  # step 0 as two thoughts
    final = build_sequence(sample, 3, COCONUT, curriculum, IDS)  # every step dropped, thoughts capped at 2 steps
    assert final.thought_targets == (one, one, seven, seven)
    assert build_sequence(sample, 0, COCONUT, curriculum, IDS).thought_targets == ()
    assert tokenize_records([record], tokenizer)[0].step_targets == ()  # only when asked for


def test_a_graph_step_targets_its_frontier_set(tokenizer):
    record = generate_graph(1, depth=3, seed=1)[0]
    (sample,) = tokenize_records([record], tokenizer, with_step_targets=True)
    from coconut.data.graph import parse_graph  # noqa: PLC0415

    graph = parse_graph(record.question)
    named = node_tokens(tokenizer, graph.nodes)
    for i, target in enumerate(sample.step_targets):
        assert {named[t] for t in target} == graph.frontiers(3)[i + 1] != set()  # " W" and "W" both name W


# -- the loss -------------------------------------------------------------------------------------
def test_set_cross_entropy_is_the_cross_entropy_of_one_token_and_minus_log_the_mass_of_a_set():
    logits = torch.randn(3, 10)
    one = torch.tensor([[4, -1], [0, -1], [9, -1]])
    torch.testing.assert_close(
        set_cross_entropy(logits, one), torch.nn.functional.cross_entropy(logits, one[:, 0], reduction="none")
    )
    pair = torch.tensor([[1, 2], [3, 5], [7, 8]])
    mass = logits.softmax(-1).gather(-1, pair).sum(-1)
    torch.testing.assert_close(set_cross_entropy(logits, pair), -mass.log())


LATENT = 61


def hand_batch(targets: list[list[list[int]]]):
    """Rows q q S L L E t, one thought per target row; the model is a tiny tied GPT-2."""
    rows = [[5, 6, 62, *[LATENT] * len(t), 63, 7] for t in targets]
    return collate_training(rows, rows, LATENT, 0, [tuple(tuple(x) for x in t) for t in targets])


@pytest.mark.parametrize("targets", [[[[10]], [[20]]], [[[10, 11, 12]], [[20, 21]]]], ids=["result", "frontier"])
def test_thoughts_equal_to_the_key_contents_embedding_score_lower_than_random_ones(targets):
    lm = tiny_lm("gpt2")
    with torch.no_grad():
        lm.get_input_embeddings().weight.mul_(20)  # tied: the head reads a token's own embedding as it
    model = ContinuousThoughtLM(lm, LATENT)
    batch = hand_batch(targets)
    table = lm.get_input_embeddings().weight.detach()
    readable = torch.zeros(2, batch["input_ids"].shape[1], 32)
    for b, row in enumerate(targets):
        column = (batch["input_ids"][b] == LATENT).nonzero()[0, 0]
        readable[b, column - 1] = table[row[0]].mean(0)  # the thought the latent is fed
    random = torch.randn_like(readable) * readable.norm(dim=-1, keepdim=True).max()
    good = thought_legibility(model, batch["input_ids"], readable, batch["thought_targets"])
    bad = thought_legibility(model, batch["input_ids"], random, batch["thought_targets"])
    assert good.thoughts_scored == bad.thoughts_scored == 2 and good.samples_unscored == 0
    assert good.loss < bad.loss
    assert good.loss < 0.5 * torch.log(torch.tensor(64.0))  # well under a uniform thought's


def test_thoughts_without_key_content_add_nothing_and_are_counted():
    model = ContinuousThoughtLM(tiny_lm("gpt2"), LATENT)
    batch = hand_batch([[[10]], [[]]])  # the second row's thought has no target
    hidden = torch.randn(2, batch["input_ids"].shape[1], 32, requires_grad=True)
    term = thought_legibility(model, batch["input_ids"], hidden, batch["thought_targets"])
    assert term.thoughts_scored == 1 and term.samples_unscored == 1
    term.loss.backward()
    assert hidden.grad[1].abs().sum() == 0 and hidden.grad[0].abs().sum() > 0


def test_the_readout_objective_trains_r_and_needs_sparse_readout():
    lm = tiny_lm("gpt2")
    model = ContinuousThoughtLM(lm, LATENT, build_thought_projection({"name": "sparse_readout", "k": 2}, lm))
    batch = hand_batch([[[10, 11]], [[20]]])
    hidden = torch.randn(2, batch["input_ids"].shape[1], 32)
    thought_legibility(model, batch["input_ids"], hidden, batch["thought_targets"], read="readout").loss.backward()
    assert model.thought_projection.readout.grad.abs().sum() > 0
    assert lm.get_output_embeddings().weight.grad is None  # R read apart from the LM head
    with pytest.raises(ConfigError, match="legibility.read=readout"):
        check_read("readout", torch.nn.Identity())


@pytest.mark.parametrize(
    "override,field", [("legibility.weight=-0.1", "legibility.weight"), ("legibility.read=probe", "legibility.read")]
)
def test_bad_legibility_settings_name_the_field(tmp_path, override, field):
    with pytest.raises(ConfigError, match=field):
        validate_config(tiny_cfg(tmp_path, override))


# -- whole runs -----------------------------------------------------------------------------------
def test_weight_zero_reproduces_the_loss_of_a_config_without_the_objective(tmp_path):
    off = scalars_of(tmp_path / "off", "legibility.weight=0")
    before = scalars_of(tmp_path / "before", "~legibility")  # a config written before the key existed
    assert off["train/loss"] == before["train/loss"] and len(off["train/loss"]) == 4
    assert "train/legibility_loss" not in off


def scalars_of(folder, *overrides):
    train(tiny_cfg(folder, "trainer.max_epochs=2", "test=false", "callbacks.thought_diagnostics=null", *overrides))
    return scalars(folder)


def test_a_sparse_readout_run_with_the_objective_logs_it_and_evaluates_causal_legibility(tmp_path):
    from test_evaluate import eval_cfg  # noqa: PLC0415

    run = tmp_path / "run"
    # llama_tiny: an untied LM head, where reading by the readout and by the LM head part (on this run
    # the validation questions decode at 0.375 by R and 0.0 by the LM head).
    cfg = (
        "model=llama_tiny",
        "legibility.weight=0.1",
        "model/thought_projection=sparse_readout",
        "legibility.read=readout",
    )
    logged = scalars_of(run, *cfg)
    legibility = [value for _, value in logged["train/legibility_loss"]]
    assert len(legibility) == 2 and all(v > 0 for v in legibility)  # stage 1's two batches; stage 0 has no thoughts
    lm_loss = dict(logged["train/lm_loss"])
    for step, value in logged["train/legibility_loss"]:  # train/loss = LM loss + lambda x legibility loss
        assert dict(logged["train/loss"])[step] == pytest.approx(lm_loss[step] + 0.1 * value, rel=1e-5)
    assert [v for _, v in logged["train/legibility_thoughts"]] == [0.0, 0.0, 8.0, 8.0]
    report = run_evaluation(eval_cfg(tmp_path / "eval", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"))
    legibility = report["legibility"]
    assert legibility["causal_edits"] > 0
    for name in ("causal", "causal_baseline", "causal_changed"):
        assert 0.0 <= legibility[name] <= 1.0
    assert "legibility.causal" in (tmp_path / "eval" / "report.md").read_text()
    assert json.loads((tmp_path / "eval" / "report.json").read_text())["legibility"]["causal_edits"] > 0
    assert legibility["read"] == "lm_head"  # the logit lens unless asked
    readout = run_evaluation(
        eval_cfg(
            tmp_path / "eval_readout",
            f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
            "legibility.read=readout",
            "legibility.ablations=[]",
            "legibility.intervention=false",
        )
    )
    assert readout["legibility"]["read"] == "readout" and readout["accuracy"] == report["accuracy"]
    assert 0.0 <= readout["legibility"]["decode_top1"] <= readout["legibility"]["decode_top5"] <= 1.0
    # Training's val/legibility/* reads the thoughts as the objective does: the last validation (of the
    # weights last.ckpt holds) agrees with coconut-eval reading the same questions by the readout.
    val = run_evaluation(
        eval_cfg(
            tmp_path / "eval_val",
            f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
            "split=val",
            "limit=8",  # debug=fast answers 8 validation questions per epoch
            "legibility.read=readout",
            "legibility.ablations=[]",
            "legibility.intervention=false",
        )
    )
    for name in ("decode_top1", "decode_top5"):
        assert logged[f"val/legibility/{name}"][-1][1] == pytest.approx(val["legibility"][name])
