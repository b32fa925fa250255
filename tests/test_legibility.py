"""Legibility metrics on hand-built cases whose answer is known, step keys on real records, and
the thought hooks that record and ablate thoughts inside the model's forward."""

import random

import pytest
import torch
from conftest import SHARED_DATA, needs_shared_data, tiny_lm

from coconut.core.model import ContinuousThoughtLM
from coconut.core.tokenizer import build_tokenizer
from coconut.data.sources import load_records
from coconut.eval import legibility as leg
from coconut.eval.evaluator import Answer, legibility_block, read_thoughts
from coconut.eval.steps import step_key, steps_match, written_steps
from coconut.eval.thought_hooks import ThoughtRecorder, ThoughtReplacement

LATENT = 61


# -- step keys ---------------------------------------------------------------------------------
@needs_shared_data
@pytest.mark.parametrize(
    "path, index, expected",
    [
        ("gsm8k_aug/valid.txt", 0, ["2", "4", "3", "300"]),  # <<4-2=2>> <<2/.5=4>> <<12/4=3>> <<100*3=300>>
        ("prosqa/prosqa_valid.json", 0, ["terpus", "brimpus", "lempus"]),
        ("prontoqa/prontoqa_valid.json", 0, ["gorpuses", "wumpuses", "sterpuses", "brimpuses", "happy", "happy"]),
        # 5632 * 7434, digits reversed: the partial product 5632*7, then running sums in brackets
        ("multiplication/4x4_valid.txt", 0, ["55561", "551111", "5560280", "00006490"]),
    ],
)
def test_step_keys_of_real_records(path, index, expected):
    record = load_records(SHARED_DATA / path)[index]
    assert [step_key(s) for s in record.steps] == expected


def test_written_steps_are_judged_by_their_key_content():
    text = "<<3*4=12>>\n<<12-5=7>>\n### 7"
    assert written_steps(text) == ["<<3*4=12>>", "<<12-5=7>>"]
    assert steps_match("<<3*4=12>>", "<<4*3=12>>") and not steps_match("<<3*4=13>>", "<<3*4=12>>")
    q = leg.QuestionReasoning(["<<3*4=12>>", "<<12-5=7>>", "<<7*2=14>>"], 1, 1, written=["<<12-5=7>>", "<<7*2=15>>"])
    assert leg.text_steps_correct([q]) == 0.5  # one of two written steps right
    assert leg.reasoning_legibility(q, lambda key: {key}) == pytest.approx(1 / 3)  # replaced step unread


# -- decoding thoughts through the LM head ----------------------------------------------------
@pytest.fixture(scope="module")
def reader():
    """A tiny GPT-2 whose LM head reads a thought equal to a number's embedding as that number."""
    tokenizer = build_tokenizer([f"<<{a}+{b}={a + b}>>" for a in range(10) for b in range(10)], vocab_size=300)
    lm = tiny_lm("gpt2", vocab_size=len(tokenizer), seed=0)
    numbers = [tokenizer.encode(str(d), add_special_tokens=False)[0] for d in range(10)]
    with torch.no_grad():  # other rows small, so W @ W[t] peaks at t
        weight = lm.get_output_embeddings().weight
        keep = weight[numbers].clone()
        weight.mul_(0.05)
        weight[numbers] = keep
    return ContinuousThoughtLM(lm, LATENT).eval(), tokenizer, numbers


def answers_with(thoughts: list[torch.Tensor]) -> list[Answer]:
    return [Answer(i, "", "", False, 1, 1, len(t), t) for i, t in enumerate(thoughts)]


def questions_for(keys: list[list[int]], thought_tokens, steps_replaced: int) -> list[leg.QuestionReasoning]:
    return [
        leg.QuestionReasoning([f"<<0+{k}={k}>>" for k in row], steps_replaced, 1, tokens)
        for row, tokens in zip(keys, thought_tokens)
    ]


def test_a_thought_that_is_the_answers_embedding_decodes_to_it(reader):
    model, tokenizer, numbers = reader
    rng = random.Random(0)
    keys = [[rng.randrange(10) for _ in range(3)] for _ in range(60)]
    weight = model.lm.get_output_embeddings().weight.detach()
    thoughts = [weight[[numbers[k] for k in row]] for row in keys]  # (3, D) each
    answers = answers_with(thoughts)
    tokens = [read_thoughts(model, tokenizer, a) for a in answers]
    questions = questions_for(keys, tokens, steps_replaced=3)
    block, per_question = legibility_block(questions, answers, leg.key_tokens_for(tokenizer))
    assert block["decode_top1"] == 1.0 and block["decode_top5"] == 1.0
    assert block["decode_top1_chance"] < 0.3  # another question's digits: ~1/10
    assert block["probe"] == 1.0  # each digit has its own vector
    assert block["reasoning"] == 1.0 and block["loss"] == 0.0
    assert per_question == [1.0] * 60


def test_random_thoughts_decode_near_chance(reader):
    model, tokenizer, _ = reader
    rng = random.Random(1)
    keys = [[rng.randrange(10) for _ in range(3)] for _ in range(150)]
    generator = torch.Generator().manual_seed(0)
    thoughts = [torch.randn(3, model.config.n_embd, generator=generator) for _ in keys]
    answers = answers_with(thoughts)
    tokens = [read_thoughts(model, tokenizer, a) for a in answers]
    block, _ = legibility_block(questions_for(keys, tokens, 3), answers, leg.key_tokens_for(tokenizer))
    assert abs(block["decode_top5"] - block["decode_top5_chance"]) < 0.1
    assert abs(block["decode_top1"] - block["decode_top1_chance"]) < 0.1
    assert block["probe"] < 0.25  # nothing to learn: about one class in ten
    assert block["loss"] > 0.5


def test_legibility_loss_against_a_cot_reference():
    assert leg.legibility_loss([0.25, 0.5, None], [1.0, 0.5, 1.0]) == pytest.approx(0.75 - 0.375)
    assert leg.legibility_loss([None], [1.0]) is None


def test_probe_learns_what_is_linearly_present_and_no_more():
    generator = torch.Generator().manual_seed(0)
    labels = [str(i % 4) for i in range(200)]
    directions = torch.randn(4, 16, generator=generator)
    present = torch.stack([directions[int(y)] for y in labels]) + 0.3 * torch.randn(200, 16, generator=generator)
    probe, majority = leg.probe_accuracy(present, labels, groups=list(range(200)))
    assert probe > 0.95 and majority < 0.3
    absent, _ = leg.probe_accuracy(torch.randn(200, 16, generator=generator), labels, groups=list(range(200)))
    assert absent < 0.45


# -- hooks inside the forward ------------------------------------------------------------------
def test_recorded_and_replaced_thoughts_are_the_ones_fed():
    model = ContinuousThoughtLM(tiny_lm("gpt2", seed=2), LATENT).eval()
    ids = torch.tensor([[3, 4, 5, LATENT, LATENT, 7], [0, 3, 4, LATENT, LATENT, 9]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1]])
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    recorder = ThoughtRecorder(ids, LATENT)
    hidden, _ = model.run(ids, mask, positions, thought_hook=recorder)
    rows = recorder.per_row()
    for b in range(2):  # a thought is the hidden state one column before its latent
        torch.testing.assert_close(rows[b], hidden[b, [2, 3]])

    replacement = [torch.full((2, model.config.n_embd), 0.5), torch.zeros(1, model.config.n_embd)]
    hook = ThoughtReplacement(ids, LATENT, replacement, fallback=torch.ones(model.config.n_embd))
    replaced, _ = model.run(ids, mask, positions, thought_hook=hook)
    embeds = model.embed(ids)
    embeds[0, 3:5] = 0.5
    embeds[1, 3], embeds[1, 4] = 0.0, 1.0  # row 1 has one replacement: its second thought is the fallback
    plain = model.decoder(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).last_hidden_state
    torch.testing.assert_close(replaced, plain)
