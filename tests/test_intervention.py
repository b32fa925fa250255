"""Causal legibility: the answer an edited chain implies, the graph edit, and the metric on hand-built
models whose answer is a known function of the thought (or ignores it)."""

import pytest
import torch
from torch import nn

from coconut.core.curriculum import Curriculum
from coconut.core.methods import Method
from coconut.core.tokenizer import build_tokenizer
from coconut.core.tokens import add_special_tokens, special_ids
from coconut.data.graph import generate_graph, parse_graph
from coconut.data.records import Record
from coconut.data.sequences import tokenize_records
from coconut.data.step_keys import node_tokens
from coconut.eval.evaluator import evaluate
from coconut.eval.intervention import implied_answer, plan_edits
from coconut.training.datamodule import prompt_loader


def test_the_implied_answer_recomputes_the_chain_from_the_edited_step():
    steps = ["<<3*4=12>>", "<<12-5=7>>", "<<7*2=14>>"]
    assert implied_answer(steps, "14", 0, "9") == "8"  # 9-5=4, 4*2=8
    assert implied_answer(steps, "14", 1, "3") == "6"
    assert implied_answer(steps, "14", 2, "5") == "5"
    assert implied_answer(["<<10/4=2.5>>", "<<2.5*2=5>>"], "5", 0, "3") == "6"
    assert implied_answer(["<<1+1=2>>", "<<2*2=4>>"], "4", 0, "3") == "6"  # the result, not the literal 2 too
    assert implied_answer(steps, "15", 0, "9") is None  # the chain does not end in the answer
    assert implied_answer(["Every wumpus is a yumpus."], "yumpus", 0, "x") is None  # no calculation


def test_a_graph_edit_feeds_the_other_trees_frontier_and_implies_the_other_candidate():
    record = generate_graph(1, depth=3, seed=4)[0]
    graph = parse_graph(record.question)
    tokenizer = build_tokenizer([record.question, *record.steps], vocab_size=300)
    table = torch.randn(len(tokenizer), 8)
    edits = plan_edits([record], [0], [3], tokenizer, lambda ids: table[ids])
    other = next(c for c in graph.candidates if c != record.answer)
    assert [e.step for e in edits] == [0, 1, 2] and {e.implied for e in edits} == {other}
    children = {child for _, child in graph.edges}
    (decoy,) = [n for n in graph.nodes if n not in children and n != graph.root]  # the other tree's root
    named = node_tokens(tokenizer, graph.nodes)
    for edit in edits:
        frontier = type(graph)(graph.edges, decoy, graph.candidates).frontiers(3)[edit.step + 1]
        assert frontier.isdisjoint(graph.frontiers(3)[edit.step + 1])  # another node set, not the true one
        tokens = [t for t, node in named.items() if node in frontier]
        torch.testing.assert_close(edit.vector, table[tokens].mean(0))


# -- a hand-built model -----------------------------------------------------------------------------
# Questions "Q 3": step 0's result is the digit, then doubled: <<1+2=3>> <<3*2=6>>, answer 6.
RECORDS = [
    Record(question=f"Q {d}", steps=(f"<<1+{d - 1}={d}>>", f"<<{d}*2={2 * d}>>"), answer=str(2 * d))
    for d in range(2, 10)
]


class _Cache:
    def __init__(self, queues):
        self.queues, self.step = queues, 0


class HandBuiltModel(nn.Module):
    """Embeddings are one-hot (D = V), the thought fed is its question's digit's embedding, and the
    answer is written from the thought: "### " + 2 * (the digit the thought names). With
    `reads_thought=False` the answer comes from the question's digit instead, whatever the thought."""

    def __init__(self, tokenizer, reads_thought: bool):
        super().__init__()
        self.tokenizer, self.reads_thought = tokenizer, reads_thought
        self.table = nn.Parameter(torch.eye(len(tokenizer)), requires_grad=False)
        self.latent_token_id = special_ids(tokenizer).latent
        self.thought_projection = nn.Identity()  # as ContinuousThoughtLM's; never called: run() builds the thought
        self.digits = {tokenizer.convert_tokens_to_ids(str(d)): d for d in range(10)}

    def embed(self, ids):
        return self.table[ids]

    def logits(self, hidden):
        return hidden * 10.0

    def _one_hot(self, tokens):
        return self.table[torch.tensor(tokens)][:, None]  # (B, 1, V)

    def run(self, input_ids, attention_mask, position_ids=None, cache=None, thought_hook=None):
        if cache is not None:  # one more answer token per row
            cache.step += 1
            return self._one_hot([q[min(cache.step, len(q) - 1)] for q in cache.queues]), cache
        rows = input_ids.tolist()
        question_digit = [next(self.digits[t] for t in row if t in self.digits) for row in rows]
        own = self.table[[self.tokenizer.convert_tokens_to_ids(str(d)) for d in question_digit]][:, None]  # (B, 1, V)
        thought = own
        for column in (input_ids == self.latent_token_id).any(0).nonzero().flatten().tolist():
            thought = thought_hook(own, column) if thought_hook else own
        read = [self.digits.get(int(t), 0) for t in thought[:, 0].argmax(-1)]
        values = read if self.reads_thought else question_digit
        queues = [self.tokenizer.encode(f"### {2 * v}") + [self.tokenizer.eos_token_id] for v in values]
        hidden = torch.zeros(*input_ids.shape, self.table.shape[0])
        hidden[:, -1:] = self._one_hot([q[0] for q in queues])
        return hidden, _Cache(queues)


@pytest.mark.parametrize("reads_thought", [True, False], ids=["answer-from-thought", "thought-ignored"])
def test_causal_legibility_on_a_model_whose_answer_is_a_known_function_of_the_thought(reads_thought):
    tokenizer = build_tokenizer([t for r in RECORDS for t in (r.question, *r.steps, "### " + r.answer)], vocab_size=300)
    add_special_tokens(tokenizer)
    model = HandBuiltModel(tokenizer, reads_thought)
    method, curriculum = Method.from_config({"name": "coconut"}), Curriculum(max_latent_stage=1)
    ids = special_ids(tokenizer)
    loader = prompt_loader(
        RECORDS,
        tokenize_records(RECORDS, tokenizer),
        stage=1,
        method=method,
        curriculum=curriculum,
        ids=ids,
        batch_size=3,
    )
    report = evaluate(
        model,
        tokenizer,
        loader,
        RECORDS,
        method=method,
        curriculum=curriculum,
        stage=1,
        answer_kind="number",
        max_new_tokens=6,
        thought_ids=(ids.latent, ids.pause),
        ablations=(),
    ).report
    assert report.generation.accuracy == 1.0  # unedited, both answer right
    causal = report.intervention
    assert causal.causal_edits == len(RECORDS)  # one replaced step each, always another digit to say
    assert causal.causal_baseline == 0.0  # the edit never implies the unedited answer
    assert causal.causal == causal.causal_changed == (1.0 if reads_thought else 0.0)
    assert report.ablation is None and report.passes_skipped["ablation"] == "legibility.ablations=[]"
    assert report.to_dict()["legibility"]["causal"] == causal.causal  # report.json's layout
