"""The training band's fast path (a KV cache filled in place, weight gradients computed once for the
band) against the definition in float64, and the fallbacks where it does not apply."""

import logging

import pytest
import torch
from conftest import tiny_lm
from test_model import END, LATENT, PAD, ROWS, START, step_by_step
from transformers import MistralConfig, MistralForCausalLM
from transformers.models.llama.modeling_llama import LlamaRMSNorm
from transformers.models.mistral.modeling_mistral import MistralRMSNorm
from transformers.pytorch_utils import Conv1D

from coconut.core import thought_band
from coconut.core.model import ContinuousThoughtLM
from coconut.core.thought_band import deferred_weight_grads
from coconut.data.collate import collate_training


def loss_and_gradients_step_by_step(lm, rows):
    """The batch's mean next-token loss computed row by row from `step_by_step`, its gradients, and
    each row's logits."""
    total, count, logits = 0.0, 0, []
    for ids in rows:
        row_logits = step_by_step(lm, ids)
        total = total + torch.nn.functional.cross_entropy(row_logits[:-1], torch.tensor(ids[1:]), reduction="sum")
        count += len(ids) - 1
        logits.append(row_logits.detach())
    lm.zero_grad()
    (total / count).backward()
    return {n: p.grad.clone() for n, p in lm.named_parameters()}, logits


@pytest.fixture(autouse=True)
def rms_norm_in_float64(monkeypatch):
    """Hugging Face's RMSNorm computes in float32 even on float64 inputs; that rounding (1e-7) would
    hide what these tests look for. Here it computes in its input's dtype, for both sides alike."""

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    for norm in (LlamaRMSNorm, MistralRMSNorm):
        monkeypatch.setattr(norm, "forward", forward)


def mean_loss(logits, batch):
    """The mean next-token loss of a padded batch, in the logits' dtype (the model's own `loss` is
    computed in float32)."""
    targets = batch["labels"][:, 1:].masked_fill(batch["attention_mask"][:, :-1] == 0, -100)  # (B, T - 1)
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), targets.flatten(), ignore_index=-100)


def check_training_step_is_exact(lm, rows=ROWS, column_pass=True):
    lm = lm.double().eval()  # dropout off; gradients still flow
    model = ContinuousThoughtLM(lm, LATENT)
    if not column_pass:  # the band's columns through the decoder's own forward
        model._columns = None
    batch = collate_training(rows, rows, LATENT, PAD)
    out = model(batch["input_ids"], batch["attention_mask"], batch["position_ids"])
    mean_loss(out.logits, batch).backward()
    batched = {n: p.grad.clone() for n, p in lm.named_parameters()}
    expected, logits = loss_and_gradients_step_by_step(lm, rows)
    for row, ids in enumerate(rows):
        start = int(batch["attention_mask"][row].argmax())  # first real column
        torch.testing.assert_close(out.logits[row, start : start + len(ids)], logits[row], atol=1e-12, rtol=1e-12)
    for name, grad in expected.items():
        torch.testing.assert_close(batched[name], grad, atol=1e-12, rtol=1e-10, msg=name)


@pytest.mark.parametrize("column_pass", [True, False], ids=["column pass", "decoder forward"])
def test_training_step_equals_step_by_step_in_float64(family, column_pass):
    check_training_step_is_exact(tiny_lm(family), column_pass=column_pass)


def test_a_sliding_window_cache_takes_the_concatenating_path_logged_and_exact(caplog):
    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        sliding_window=4,  # shorter than the rows: the window matters
        pad_token_id=0,
    )
    with caplog.at_level(logging.INFO):
        check_training_step_is_exact(MistralForCausalLM(config))
    assert "mistral: the thought band concatenates its KV cache" in caplog.text
    assert "DynamicSlidingWindowLayer" in caplog.text


def test_a_second_backward_through_the_same_graph_adds_the_same_gradients(family):
    lm = tiny_lm(family).double().eval()
    model = ContinuousThoughtLM(lm, LATENT)
    batch = collate_training(ROWS, ROWS, LATENT, PAD)
    loss = mean_loss(model(batch["input_ids"], batch["attention_mask"], batch["position_ids"]).logits, batch)
    loss.backward(retain_graph=True)
    once = {n: p.grad.clone() for n, p in lm.named_parameters()}
    loss.backward()
    for name, param in lm.named_parameters():
        torch.testing.assert_close(param.grad, 2 * once[name], atol=1e-12, rtol=1e-12, msg=name)


def test_under_autocast_the_band_keeps_autograd_weight_gradients_logged(caplog):
    lm = tiny_lm("gpt2").eval()
    model = ContinuousThoughtLM(lm, LATENT)
    batch = collate_training(ROWS, ROWS, LATENT, PAD)
    with caplog.at_level(logging.INFO), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch["input_ids"], batch["attention_mask"], batch["position_ids"], labels=batch["labels"])
        out.loss.backward()
    assert "autocast is on: the thought band computes weight gradients per column" in caplog.text
    assert all(p.grad is not None and p.grad.isfinite().all() for p in lm.parameters())


def test_a_training_cache_can_be_continued_past_its_length(family):
    lm = tiny_lm(family).double().eval()
    model = ContinuousThoughtLM(lm, LATENT)
    batch = collate_training(ROWS, ROWS, LATENT, PAD)
    ids, mask, pos = batch["input_ids"], batch["attention_mask"], batch["position_ids"]
    whole, _ = model.run(ids, mask, pos)
    split = 11  # after every row's thoughts (columns 7-9)
    head, cache = model.run(ids[:, :split], mask[:, :split], pos[:, :split])
    tail, _ = model.run(ids[:, split:], mask, pos[:, split:], cache)  # more than the cache was sized for
    torch.testing.assert_close(torch.cat([head, tail], 1), whole, atol=1e-12, rtol=1e-12)


def test_a_one_column_band_is_exact(family):
    # The band's only column joins the pass over the rest: no single-column pass at all.
    rows = [[5, 6, 7, START, LATENT, END, 9, 10], [8, 9, START, LATENT, END, 11, 12, 13, 14]]
    check_training_step_is_exact(tiny_lm(family), rows)


def test_the_band_defers_the_weight_gradients_of_every_linear_layer(family):
    decoder = tiny_lm(family).base_model
    linears = [m for m in decoder.modules() if isinstance(m, (torch.nn.Linear, Conv1D))]
    assert linears, family
    assert deferred_weight_grads(decoder).layers == linears


def test_a_layer_whose_forward_another_library_wrapped_keeps_its_wrapper(family):
    lm = tiny_lm(family).double().eval()
    model = ContinuousThoughtLM(lm, LATENT)
    wrapped = next(m for m in lm.base_model.modules() if isinstance(m, (torch.nn.Linear, Conv1D)))
    calls = []

    def wrapper(x, stock=wrapped.forward):  # as accelerate's hooks do: an instance attribute
        calls.append(x.shape)
        return stock(x)

    wrapped.forward = wrapper
    batch = collate_training(ROWS, ROWS, LATENT, PAD)
    model(batch["input_ids"], batch["attention_mask"], batch["position_ids"])
    assert wrapped.forward is wrapper
    assert (len(ROWS), 1) == tuple(calls[1][:2])  # the band's single-column calls went through it too
    check_training_step_is_exact(lm)


def test_an_error_in_a_band_call_leaves_the_layers_as_they_were(family):
    lm = tiny_lm(family).double().eval()
    model = ContinuousThoughtLM(lm, LATENT)
    batch = collate_training(ROWS, ROWS, LATENT, PAD)

    def fail_in_the_band(module, args):
        if args[0].shape[1] == 1:  # (B, 1, D): a single-column (band) call
            raise RuntimeError("failed in the band")

    first_linear = next(m for m in lm.base_model.modules() if isinstance(m, (torch.nn.Linear, Conv1D)))
    handle = first_linear.register_forward_pre_hook(fail_in_the_band)
    with pytest.raises(RuntimeError, match="failed in the band"):
        model(batch["input_ids"], batch["attention_mask"], batch["position_ids"])
    handle.remove()
    assert not [name for name, m in lm.named_modules() if "forward" in vars(m)]
    check_training_step_is_exact(lm)


def test_the_question_pass_computes_each_weight_gradient_once(family, monkeypatch):
    """The band's and the rest's records are added to the question pass's own product: one product
    per deferred layer per backward, none left for the gate."""
    lm = tiny_lm(family).double().eval()
    model = ContinuousThoughtLM(lm, LATENT)
    batch = collate_training(ROWS, ROWS, LATENT, PAD)
    products = []
    own = thought_band.DeferredWeightGrads.own_gradients

    def counted(self, layer_id, x, grad):
        products.append(layer_id)
        return own(self, layer_id, x, grad)

    monkeypatch.setattr(thought_band.DeferredWeightGrads, "own_gradients", counted)
    loss = mean_loss(model(batch["input_ids"], batch["attention_mask"], batch["position_ids"]).logits, batch)
    loss.backward()
    layers = deferred_weight_grads(lm.base_model).layers
    assert sorted(products) == sorted(id(layer) for layer in layers)


@pytest.mark.skipif(thought_band._LINEAR_POINTWISE is None, reason="torch built without oneDNN")
def test_skinny_band_products_through_onednn_equal_step_by_step_in_float32(family, monkeypatch):
    """The band's forward and input-gradient products go through oneDNN for large weights (forced
    here for every weight); the step keeps its float32 agreement with the definition."""
    calls = []

    def counted(*args):
        calls.append(args[0].shape)
        return linear_pointwise(*args)

    linear_pointwise = thought_band._LINEAR_POINTWISE
    monkeypatch.setattr(thought_band, "_LINEAR_POINTWISE", counted)
    monkeypatch.setattr(thought_band, "SKINNY_MIN_WEIGHT", 0)
    lm = tiny_lm(family).eval()
    model = ContinuousThoughtLM(lm, LATENT)
    calls.clear()  # the probe's
    batch = collate_training(ROWS, ROWS, LATENT, PAD)
    out = model(batch["input_ids"], batch["attention_mask"], batch["position_ids"])
    mean_loss(out.logits, batch).backward()
    batched = {n: p.grad.clone() for n, p in lm.named_parameters()}
    expected, logits = loss_and_gradients_step_by_step(lm, ROWS)
    assert calls and all(shape[0] == len(ROWS) for shape in calls)  # band columns only (5 rows)
    for row, ids in enumerate(ROWS):
        start = int(batch["attention_mask"][row].argmax())
        torch.testing.assert_close(out.logits[row, start : start + len(ids)], logits[row], atol=1e-5, rtol=1e-5)
    for name, grad in expected.items():
        torch.testing.assert_close(batched[name], grad, atol=1e-5, rtol=1e-4, msg=name)
