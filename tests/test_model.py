"""The continuous-thought forward against a plain step-by-step computation (the definition)."""

import pytest
import torch
from conftest import OTHER_FAMILIES, RESCALING_FAMILIES, tiny_lm
from torch import nn

from coconut.core.decoder_probe import UnsupportedModelError
from coconut.core.model import ContinuousThoughtLM
from coconut.data.collate import collate_training

LATENT, START, END, PAD = 61, 62, 63, 0


def step_by_step(lm, ids: list[int]) -> torch.Tensor:
    """Logits of one unpadded sequence, each latent input set to the last hidden state before it,
    recomputing the whole prefix every time: slow and obviously right."""
    embed = lm.get_input_embeddings()  # the module, not its table: Gemma's scales what it looks up
    inputs = []
    for token in ids:
        if token == LATENT:
            inputs.append(lm.base_model(inputs_embeds=torch.stack(inputs)[None]).last_hidden_state[0, -1])
        else:
            inputs.append(embed(torch.tensor(token)))
    return lm(inputs_embeds=torch.stack(inputs)[None]).logits[0]


ROWS = [  # different question lengths, latent counts (0 to 3) and tail lengths
    [5, 6, 7, 8, START, LATENT, LATENT, LATENT, END, 9, 10, 11],
    [5, 6, START, LATENT, END, 12, 13, 14, 15, 16, 17, 18, 19],
    [7, 8, 9, 10, 11, 12, START, LATENT, LATENT, END, 20],
    [5, 6, 7, START, END, 21, 22, 23],
    [8, 9, 10, 24, 25],
]


def test_thought_forward_equals_step_by_step_on_a_padded_batch(family):
    lm = tiny_lm(family).eval()
    model = ContinuousThoughtLM(lm, LATENT)
    batch = collate_training(ROWS, ROWS, LATENT, PAD)
    logits = model(batch["input_ids"], batch["attention_mask"], batch["position_ids"]).logits
    for row, ids in enumerate(ROWS):
        start = int(batch["attention_mask"][row].argmax())  # first real column
        torch.testing.assert_close(logits[row, start : start + len(ids)], step_by_step(lm, ids), atol=1e-5, rtol=1e-5)


def test_gradients_equal_step_by_step(family):
    lm = tiny_lm(family).eval()  # dropout off; gradients still flow
    model = ContinuousThoughtLM(lm, LATENT)
    batch = collate_training(ROWS[:2], ROWS[:2], LATENT, PAD)
    model(batch["input_ids"], batch["attention_mask"], batch["position_ids"], labels=batch["labels"]).loss.backward()
    batched = {n: p.grad.clone() for n, p in lm.named_parameters()}
    lm.zero_grad()
    # The same mean token loss, computed row by row step by step.
    total, count = 0.0, 0
    for ids in ROWS[:2]:
        logits = step_by_step(lm, ids)
        target = torch.tensor(ids[1:])
        total = total + torch.nn.functional.cross_entropy(logits[:-1], target, reduction="sum")
        count += len(ids) - 1
    (total / count).backward()
    for name, param in lm.named_parameters():
        torch.testing.assert_close(batched[name], param.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_the_loss_is_the_mean_cross_entropy_over_the_labelled_positions(family):
    # The loss takes the logits of the labelled positions alone; the full logits give the same.
    lm = tiny_lm(family).eval()
    model = ContinuousThoughtLM(lm, LATENT)
    labels = [[-100] * (r.index(END) + 1) + r[r.index(END) + 1 :] if END in r else r for r in ROWS]
    batch = collate_training(ROWS, labels, LATENT, PAD)
    out = model(batch["input_ids"], batch["attention_mask"], batch["position_ids"], labels=batch["labels"])
    targets = batch["labels"][:, 1:]  # a left pad column's target is the row's first label: -100 here
    expected = nn.functional.cross_entropy(out.logits[:, :-1].flatten(0, 1), targets.flatten(), ignore_index=-100)
    torch.testing.assert_close(out.loss, expected, atol=1e-6, rtol=1e-6)


def test_without_latents_it_is_the_base_model(family):
    lm = tiny_lm(family).eval()
    ids = torch.tensor([ROWS[4]])
    torch.testing.assert_close(ContinuousThoughtLM(lm, LATENT)(ids).logits, lm(ids).logits, atol=0, rtol=0)


def test_thoughts_are_the_hidden_states_before_latents(family):
    lm = tiny_lm(family).eval()
    model = ContinuousThoughtLM(lm, LATENT)
    ids = torch.tensor([ROWS[0]])
    out = model(ids)
    thoughts = model.thoughts(ids, out.hidden_states, LATENT)[0]  # (3, D)
    assert thoughts.shape == (3, lm.config.hidden_size)
    torch.testing.assert_close(thoughts[0], lm.base_model(ids[:, :5]).last_hidden_state[0, -1])


@pytest.mark.parametrize("other", sorted(OTHER_FAMILIES))
def test_logits_are_the_models_own_where_it_rescales_them(other):
    """Cohere scales, Granite divides, Gemma-2 soft-caps its logits in its own forward (OPT and Bloom
    reach their decoder otherwise); the wrapper gives the same logits, without thoughts and through
    them (padded batch, step by step)."""
    lm = tiny_lm(other).eval()
    model = ContinuousThoughtLM(lm, LATENT)
    ids = torch.tensor([ROWS[4]])
    torch.testing.assert_close(model(ids).logits, lm(ids).logits, atol=1e-6, rtol=1e-6)
    if other in RESCALING_FAMILIES:  # the test can fail: the LM head alone gives other logits
        head = lm.get_output_embeddings()(lm.base_model(ids).last_hidden_state)
        assert not torch.allclose(head, lm(ids).logits, atol=1e-3)
    batch = collate_training(ROWS, ROWS, LATENT, PAD)
    logits = model(batch["input_ids"], batch["attention_mask"], batch["position_ids"]).logits
    for row, ids in enumerate(ROWS):
        start = int(batch["attention_mask"][row].argmax())
        torch.testing.assert_close(logits[row, start : start + len(ids)], step_by_step(lm, ids), atol=1e-5, rtol=1e-5)


class KwargsOnlyDecoder(nn.Module):
    """A custom decoder whose forward takes everything but the inputs through **kwargs, around
    GPT-2's (learned absolute positions, so a left-padded row needs its position ids)."""

    def __init__(self, inner: nn.Module, drop_position_ids: bool):
        super().__init__()
        self.inner, self.drop = inner, drop_position_ids

    def get_input_embeddings(self):
        return self.inner.get_input_embeddings()

    def forward(self, input_ids=None, **kwargs):
        if self.drop:
            kwargs.pop("position_ids", None)
        return self.inner(input_ids, **kwargs)


def kwargs_only_lm(drop_position_ids: bool):
    lm = tiny_lm("gpt2").eval()
    lm.transformer = KwargsOnlyDecoder(lm.transformer, drop_position_ids)
    return lm


def test_a_decoder_taking_position_ids_through_kwargs_gets_them():
    lm = kwargs_only_lm(drop_position_ids=False)
    model = ContinuousThoughtLM(lm, LATENT)
    batch = collate_training(ROWS, ROWS, LATENT, PAD)
    logits = model(batch["input_ids"], batch["attention_mask"], batch["position_ids"]).logits
    for row, ids in enumerate(ROWS):
        start = int(batch["attention_mask"][row].argmax())
        torch.testing.assert_close(logits[row, start : start + len(ids)], step_by_step(lm, ids), atol=1e-5, rtol=1e-5)


def test_a_decoder_that_loses_position_ids_is_refused():
    with pytest.raises(UnsupportedModelError, match="left-padded row"):
        ContinuousThoughtLM(kwargs_only_lm(drop_position_ids=True), LATENT)


def test_probing_the_decoder_leaves_the_random_state_and_training_mode_alone():
    lm = tiny_lm("gpt2").train()
    lm.transformer.h[0].eval()  # a mix of modes stays as it was
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    ContinuousThoughtLM(lm, LATENT)
    torch.testing.assert_close(torch.rand(3), expected)
    assert lm.training and lm.transformer.h[1].training and not lm.transformer.h[0].training
