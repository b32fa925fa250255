"""The band's column pass (band_columns.py): chosen for the families it knows and only where it
gives the decoder's own hidden states; the band through it equals the definition (the float64
training-step tests in test_thought_band.py run both ways)."""

import logging

import pytest
import torch
from conftest import OTHER_FAMILIES, tiny_lm
from test_model import LATENT, PAD, ROWS, step_by_step

from coconut.core import band_columns
from coconut.core.model import ContinuousThoughtLM
from coconut.data.collate import collate_training


def test_the_column_pass_is_chosen_for_gpt2_and_llama():
    assert type(ContinuousThoughtLM(tiny_lm("gpt2"), LATENT)._columns) is band_columns.GPT2Columns
    assert type(ContinuousThoughtLM(tiny_lm("llama"), LATENT)._columns) is band_columns.LlamaColumns


@pytest.mark.parametrize("other", sorted(OTHER_FAMILIES))
def test_other_families_keep_the_decoders_own_forward(other):
    assert ContinuousThoughtLM(tiny_lm(other), LATENT)._columns is None


def test_a_column_pass_that_differs_from_the_decoder_is_not_used(monkeypatch, caplog):
    """A variant the pass does not know (here: the rotary angles left out) is caught by the probe."""
    prepare = band_columns.LlamaColumns.prepare

    def without_rotary(self, attention_mask, position_ids, past, lo, band_grads=None):
        return prepare(self, attention_mask, torch.zeros_like(position_ids), past, lo, band_grads)

    monkeypatch.setattr(band_columns.LlamaColumns, "prepare", without_rotary)
    with caplog.at_level(logging.INFO):
        model = ContinuousThoughtLM(tiny_lm("llama"), LATENT)
    assert model._columns is None
    assert "band columns through the decoder's own forward" in caplog.text


def test_a_library_internal_the_column_pass_reads_going_missing_sends_the_band_through_the_decoder(
    monkeypatch, caplog, family
):
    """A transformers release that renames what the pass reads (here: attention's `scaling`) gets the
    decoder's own forward, not an AttributeError in the middle of training."""
    kind = band_columns.GPT2Columns if family == "gpt2" else band_columns.LlamaColumns

    def renamed(self, *args, **kwargs):
        def column(hidden, t, cache):
            raise AttributeError("'Attention' object has no attribute 'scaling'")

        return column

    monkeypatch.setattr(kind, "prepare", renamed)
    with caplog.at_level(logging.INFO):
        model = ContinuousThoughtLM(tiny_lm(family), LATENT)
    assert model._columns is None
    assert "has no attribute 'scaling'" in caplog.text


def test_a_hook_on_a_decoder_layer_sends_the_band_through_the_decoder(family):
    lm = tiny_lm(family).eval()
    model = ContinuousThoughtLM(lm, LATENT)
    layers = getattr(lm.base_model, "layers", None) or lm.base_model.h
    seen = []
    layers[0].register_forward_hook(lambda module, args, out: seen.append(args[0].shape[1]))
    batch = collate_training(ROWS, ROWS, LATENT, PAD)
    logits = model(batch["input_ids"], batch["attention_mask"], batch["position_ids"]).logits
    assert seen.count(1) == 2  # the band's two single-column calls (three thoughts, the last with the rest)
    for row, ids in enumerate(ROWS):
        start = int(batch["attention_mask"][row].argmax())
        torch.testing.assert_close(logits[row, start : start + len(ids)], step_by_step(lm, ids), atol=1e-5, rtol=1e-5)


def test_single_query_attention_equals_scaled_dot_product_attention():
    torch.manual_seed(0)
    query, keys, values = torch.randn(3, 2, 4, 8), torch.randn(3, 2, 7, 8), torch.randn(3, 2, 7, 8)
    mask = torch.rand(3, 1, 1, 7) > 0.3
    mask[..., -1] = True  # every row reads at least its own key
    out = band_columns.single_query_attention(query, keys, values, mask, 8**-0.5, 0.0)
    # the reference: every query head of a group as its own head
    expected = torch.nn.functional.scaled_dot_product_attention(
        query.reshape(3, 8, 1, 8), keys.repeat_interleave(4, 1), values.repeat_interleave(4, 1), attn_mask=mask
    )
    torch.testing.assert_close(out, expected.reshape(3, 2, 4, 8), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("shared", [1, 3], ids=["one query head per key head", "three"])
def test_single_query_attention_gradients_equal_autograds_in_float64(shared):
    torch.manual_seed(0)
    query, keys, values = (torch.randn(3, 2, shared, 5, dtype=torch.float64), *torch.randn(2, 3, 2, 7, 5).double())
    mask = torch.rand(3, 1, 1, 7) > 0.3
    mask[..., -1] = True
    inputs = [t.requires_grad_() for t in (query, keys, values)]
    out = band_columns.single_query_attention(*inputs, mask, 0.4, 0.0)
    grad = torch.randn_like(out)
    ours = torch.autograd.grad(out, inputs, grad)
    scores = (query @ keys.transpose(-1, -2) * 0.4).masked_fill(~mask, float("-inf"))
    expected = torch.autograd.grad(scores.softmax(-1) @ values, inputs, grad)
    for a, b in zip(ours, expected):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_single_query_attention_drops_probabilities_in_training_and_scales_the_rest():
    torch.manual_seed(0)
    query, keys = torch.randn(64, 1, 1, 4), torch.zeros(64, 1, 10, 4)  # equal scores: probabilities 0.1
    values = torch.ones(64, 1, 10, 4)
    out = band_columns.single_query_attention(query, keys, values, torch.ones(64, 1, 1, 10, dtype=torch.bool), 1.0, 0.5)
    kept = out[..., 0].flatten() / 0.2  # each kept probability 0.1 scaled to 0.2: out = 0.2 x kept count
    torch.testing.assert_close(kept, kept.round())
    assert 4 < kept.mean() < 6  # half of the 10 kept on average


class Wrapper(torch.nn.Module):
    """A decoder layer inside another module, as FSDP wraps each one: the layer's attributes are no
    longer the decoder's layers' own."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, *args, **kwargs):
        return self.inner(*args, **kwargs)


def test_a_wrapped_decoder_layer_sends_the_band_through_the_decoder(family):
    lm = tiny_lm(family).eval()
    model = ContinuousThoughtLM(lm, LATENT)
    layers = getattr(lm.base_model, "layers", None) or lm.base_model.h
    layers[1] = Wrapper(layers[1])
    assert not model._columns.applies()
    batch = collate_training(ROWS, ROWS, LATENT, PAD)
    logits = model(batch["input_ids"], batch["attention_mask"], batch["position_ids"]).logits
    for row, ids in enumerate(ROWS):
        start = int(batch["attention_mask"][row].argmax())
        torch.testing.assert_close(logits[row, start : start + len(ids)], step_by_step(lm, ids), atol=1e-5, rtol=1e-5)


def step_gradients(model, batch) -> dict:
    model.lm.zero_grad()
    model(batch["input_ids"], batch["attention_mask"], batch["position_ids"], labels=batch["labels"]).loss.backward()
    return {n: None if p.grad is None else p.grad.clone() for n, p in model.lm.named_parameters()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_one_node_llama_column_gives_the_modules_gradients(dtype):
    """In float32 and in a bfloat16 model (its norms computed in float32 as LlamaRMSNorm does), with a
    frozen projection: the same gradients as the columns through the modules, none for the frozen one."""
    lm = tiny_lm("llama").to(dtype).eval()
    lm.model.layers[0].self_attn.k_proj.weight.requires_grad_(False)
    fused = ContinuousThoughtLM(lm, LATENT)
    modules = ContinuousThoughtLM(lm, LATENT)
    modules._columns.fused = False
    assert fused._columns.fused
    batch = collate_training(ROWS, ROWS, LATENT, PAD)
    expected, got = step_gradients(modules, batch), step_gradients(fused, batch)
    tolerance = {"atol": 1e-5, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 2e-2, "rtol": 5e-2}
    for name, grad in expected.items():
        if grad is None:
            assert got[name] is None, name
        else:
            torch.testing.assert_close(got[name].float(), grad.float(), **tolerance, msg=name)
    assert got["model.layers.0.self_attn.k_proj.weight"] is None


def test_columns_in_training_mode_run_with_dropout(family):
    """Dropout on (GPT-2's attention, residual and embedding dropout): a training step through the
    column pass runs and every trainable parameter gets a finite gradient."""
    lm = tiny_lm(family).train()
    model = ContinuousThoughtLM(lm, LATENT)
    batch = collate_training(ROWS, ROWS, LATENT, PAD)
    grads = step_gradients(model, batch)
    assert all(g is not None and g.isfinite().all() for g in grads.values())


def test_a_large_llama_keeps_its_modules_in_training(monkeypatch):
    """The one-node column copies the projections' weights once a band: not beyond FUSED_MAX_WEIGHTS."""
    monkeypatch.setattr(band_columns, "FUSED_MAX_WEIGHTS", 0)
    assert not ContinuousThoughtLM(tiny_lm("llama"), LATENT)._columns.fused


def test_gradient_checkpointing_turned_on_later_sends_the_band_through_the_decoder(family):
    lm = tiny_lm(family)
    model = ContinuousThoughtLM(lm, LATENT)
    assert model._columns.applies()
    lm.gradient_checkpointing_enable()
    assert not model._columns.applies()
