"""Making the thought band's single-column passes cheap in training (`ContinuousThoughtLM.run`).

The band runs one single-column pass per column (B tokens each), forward and backward. Done naively
that costs far more than its FLOPs, for two reasons this module removes:

1. Weight gradients. Autograd computes every linear layer's weight gradient once per column, as an
   outer product over only B rows into a fresh weight-sized tensor that is then added up: slow
   (a (768, 8) @ (8, 3072) product ran at 1-8 GFLOP/s on a 2-core CPU) and a weight-sized write per
   column.
   `DeferredWeightGrads` instead records each band linear's input and output gradient during the
   backward and computes each weight's gradient once, over all band columns, in one matmul
   (`_Gate`). The gate is placed on the tensor every band computation descends from, so autograd
   runs it after all of them; a record that arrives later anyway is computed on the spot, so the
   result never depends on that ordering. The linear layers are the decoder's `nn.Linear` and
   GPT-2 `Conv1D` modules with their stock forward and trainable parameters: during a band call
   their forward is swapped for one that records. Any other use of a parameter keeps autograd's
   own path. (A `TorchFunctionMode` that picks the linear calls out of every op would do the same
   at a Python call per op: ~7% of a stage-3 step of a 2-layer, 128-wide model.) Under autocast
   the casts make the weights new tensors: the band then keeps autograd's path (logged).

2. The KV cache. `DynamicCache` concatenates each column's keys and values onto the cache, so
   every column copies the whole prefix cache, and the attention keeps each copy for its
   backward: quadratic memory in the band's length. `BufferedLayer` writes into key and value
   buffers preallocated for the whole sequence and hands the attention views of them; a custom
   autograd function routes the views' gradients back to each piece written. Writes go through an
   alias with its own version counter: they only ever fill positions past those of every view
   handed out, so what the saved views hold never changes.

Both keep the result exact: the same products, summed in a different order.
"""

from __future__ import annotations

import logging
from functools import partial

import torch
from torch import nn
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer
from transformers.pytorch_utils import Conv1D

log = logging.getLogger(__name__)


class DeferredWeightGrads:
    """While entered (around each band call of the decoder), `layers` record what their weight
    gradients need instead of computing them per column; `gate` computes them all at once."""

    def __init__(self, layers: list[nn.Module]):
        self.layers = layers
        self.params = {id(p): p for layer in layers for p in layer.parameters(recurse=False)}
        # Per layer: (weight, bias, conv1d, [(x (N, in), grad (N, out)), ...]).
        self.records: dict[int, tuple] = {}
        self.open = True  # False once the gate has computed the recorded gradients

    def __enter__(self):
        for layer in self.layers:
            layer.forward = partial(_deferred_forward, layer, self)  # an instance attribute shadows the class's
        return self

    def __exit__(self, *exc):
        for layer in self.layers:
            del layer.forward

    def gate(self, hidden: torch.Tensor) -> torch.Tensor:
        """`hidden` unchanged; its backward adds the recorded weight gradients (after every band
        computation that descends from `hidden` has run its backward)."""
        params = list(self.params.values())
        return _Gate.apply(self, hidden, *params)


def _deferred_forward(layer: nn.Module, band: DeferredWeightGrads, x: torch.Tensor) -> torch.Tensor:
    """`layer(x)` (its stock forward), with the weight gradient left to `band`'s gate."""
    if not torch.is_grad_enabled():  # e.g. a checkpointed layer's first, gradient-free pass
        return type(layer).forward(layer, x)
    if isinstance(layer, Conv1D):  # as Conv1D.forward: addmm over the flattened rows
        out = _DeferredLinear.apply(x.reshape(-1, x.shape[-1]), layer.weight, layer.bias, band, layer)
        return out.view(*x.shape[:-1], layer.nf)
    return _DeferredLinear.apply(x, layer.weight, layer.bias, band, layer)


class _DeferredLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, band: DeferredWeightGrads, layer: nn.Module):
        conv1d = isinstance(layer, Conv1D)
        ctx.band, ctx.layer, ctx.conv1d, ctx.has_bias, ctx.bias = band, layer, conv1d, bias is not None, bias
        ctx.save_for_backward(x, weight)
        if conv1d:
            return torch.addmm(bias, x, weight)  # (N, out), weight (in, out)
        return nn.functional.linear(x, weight, bias)  # (..., out), weight (out, in)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = grad @ weight.T if ctx.conv1d else grad @ weight
        x2, g2 = x.reshape(-1, x.shape[-1]), grad.reshape(-1, grad.shape[-1])  # (N, in), (N, out)
        if ctx.band.open:
            record = ctx.band.records.setdefault(id(ctx.layer), (weight, ctx.bias, ctx.conv1d, []))
            record[3].append((x2, g2))
            return grad_x, None, None, None, None
        grad_w = x2.T @ g2 if ctx.conv1d else g2.T @ x2
        return grad_x, grad_w, g2.sum(0) if ctx.has_bias else None, None, None


class _Gate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, band: DeferredWeightGrads, hidden, *params):
        ctx.band = band
        return hidden.clone()

    @staticmethod
    def backward(ctx, grad):
        band = ctx.band
        grads = {}  # parameter id -> gradient

        def add(param, grad):
            grads[id(param)] = grad if id(param) not in grads else grads[id(param)] + grad

        for weight, bias, conv1d, records in band.records.values():
            x = torch.cat([x for x, _ in records])  # (N_band, in)
            g = torch.cat([g for _, g in records])  # (N_band, out)
            add(weight, x.T @ g if conv1d else g.T @ x)
            if bias is not None:
                add(bias, g.sum(0))
        band.records.clear()
        band.open = False
        return None, grad, *(grads.get(id(p)) for p in band.params.values())


def deferred_weight_grads(decoder: torch.nn.Module) -> DeferredWeightGrads | None:
    """The mode for a training band, or None where it does not apply (no gradients wanted, or
    autocast on, whose weight casts it cannot see through)."""
    if not torch.is_grad_enabled():
        return None
    layers = [layer for layer in decoder.modules() if _is_trainable_linear(layer)]
    if not layers:
        return None
    if torch.is_autocast_enabled(layers[0].weight.device.type):
        _log_once(
            "autocast is on: the thought band computes weight gradients per column (autograd's path)", id(decoder)
        )
        return None
    return DeferredWeightGrads(layers)


def _is_trainable_linear(layer: nn.Module) -> bool:
    """An `nn.Linear` or `Conv1D` whose forward is the stock one (a subclass that overrides it, e.g. a
    quantized layer, keeps its own, and so does a layer whose forward another library wrapped on the
    instance, e.g. accelerate's device hooks) and whose weight and bias, if any, take gradients."""
    stock = type(layer).forward in (nn.Linear.forward, Conv1D.forward) and "forward" not in vars(layer)
    params = [p for p in (getattr(layer, "weight", None), getattr(layer, "bias", None)) if p is not None]
    return stock and bool(params) and all(p.requires_grad for p in params)


class BufferedLayer(DynamicLayer):
    """A `DynamicLayer` whose keys and values live in buffers of `capacity` positions, filled in
    place; `update` returns views of the filled part (B, H, length, d). Past capacity it grows by
    concatenation, as `DynamicLayer`."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity
        self.buffers: tuple[torch.Tensor, ...] | None = None

    def lazy_initialization(self, key_states, value_states):
        self.device = key_states.device
        b, h, _, d = key_states.shape
        kb = key_states.new_empty(b, h, self.capacity, d)  # (B, H, capacity, d)
        vb = value_states.new_empty(b, h, self.capacity, value_states.shape[-1])
        # Writes go through `.data` aliases, whose version counter is not the one the views share.
        self.buffers = (kb, vb, kb.data, vb.data)
        self.keys, self.values = None, None
        self.is_initialized = True

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if not self._fits(key_states, value_states):  # from now on a plain DynamicLayer over what was written
            self.buffers = None
            if self.keys is None:
                self.keys, self.values = key_states[:, :, :0], value_states[:, :, :0]
            return super().update(key_states, value_states, *args, **kwargs)
        start = 0 if self.keys is None else self.keys.shape[-2]
        self.keys, self.values = _Append.apply(self.buffers, start, self.keys, self.values, key_states, value_states)
        self.written = self.keys
        return self.keys, self.values

    def _fits(self, key_states, value_states) -> bool:
        """Whether the new states go into the buffers: there is room, they match them, and the keys are
        still the last view handed out (not cropped or reordered since, which would make a write land
        on positions that views kept for the backward hold)."""
        if self.buffers is None or (self.keys is not None and self.keys is not getattr(self, "written", None)):
            return False
        kb, vb = self.buffers[:2]
        length = 0 if self.keys is None else self.keys.shape[-2]
        return (
            length + key_states.shape[-2] <= self.capacity
            and key_states.shape[:2] == kb.shape[:2]
            and key_states.shape[-1] == kb.shape[-1]
            and value_states.shape[:2] == vb.shape[:2]
            and value_states.shape[-1] == vb.shape[-1]
            and key_states.dtype == kb.dtype
            and value_states.dtype == vb.dtype
        )

    def get_seq_length(self) -> int:
        return 0 if self.keys is None else self.keys.shape[-2]


class _Append(torch.autograd.Function):
    """Writes the new keys and values after the `start` positions already written; returns views of
    all of them. Gradient-wise this is `torch.cat([keys, new_keys], -2)` (and the same for values)."""

    @staticmethod
    def forward(ctx, buffers, start: int, keys, values, new_keys, new_values):
        kb, vb, kw, vw = buffers
        end = start + new_keys.shape[-2]
        kw[:, :, start:end] = new_keys
        vw[:, :, start:end] = new_values
        ctx.start, ctx.first = start, keys is None
        return kb[:, :, :end], vb[:, :, :end]

    @staticmethod
    def backward(ctx, grad_k, grad_v):
        s = ctx.start
        return (
            None,
            None,
            *(None if g is None or ctx.first else g[:, :, :s] for g in (grad_k, grad_v)),
            *(None if g is None else g[:, :, s:] for g in (grad_k, grad_v)),
        )


def buffered_cache(config, capacity: int) -> DynamicCache:
    """A `DynamicCache` for `config` whose layers are `BufferedLayer`s; where the model's cache has
    other layer kinds (sliding window, ...), the plain `DynamicCache`, which concatenates (logged
    once per config)."""
    cache = DynamicCache(config=config)
    kinds = sorted({type(layer).__name__ for layer in cache.layers if type(layer) is not DynamicLayer})
    if kinds or not cache.layers:
        _log_once(
            f"{config.model_type}: the thought band concatenates its KV cache (DynamicCache), as its cache layers "
            f"{kinds or 'are made on first use'} are not the DynamicLayer that thought_band.BufferedLayer replaces",
            key=id(config),
        )
        return cache
    cache.layers = [BufferedLayer(capacity) for _ in cache.layers]
    return cache


_logged: set[tuple[str, int]] = set()


def _log_once(message: str, key: int) -> None:
    if (message, key) not in _logged:
        _logged.add((message, key))
        log.info(message)
