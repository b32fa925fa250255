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
   result never depends on that ordering. Linear layers are found as `F.linear` (nn.Linear) and
   `torch.addmm(bias, x, weight)` (GPT-2's Conv1D) calls whose weight is a parameter of the
   decoder; any other use of a parameter keeps autograd's own path. Under autocast the casts make
   the weights new tensors: the band then keeps autograd's path (logged).

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

import torch
from torch.nn import functional as F  # noqa: N812
from torch.overrides import TorchFunctionMode
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

log = logging.getLogger(__name__)


class DeferredWeightGrads(TorchFunctionMode):
    """Active around the band's decoder calls: linear layers with a weight in `params` skip their
    per-column weight gradient; `gate` computes them all at once."""

    def __init__(self, params: list[torch.nn.Parameter]):
        super().__init__()
        self.params = {id(p): p for p in params if p.requires_grad}
        # Per kind of call (weight, bias, conv1d): (weight, bias, conv1d, [(x (N, in), grad (N, out)), ...]).
        self.records: dict[tuple[int, int, bool], tuple] = {}
        self.open = True  # False once the gate has computed the recorded gradients

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear and not kwargs and len(args) in (2, 3):
            x, weight, bias = (*args, None)[:3]
            conv1d = False
        elif func is torch.addmm and not kwargs and len(args) == 3:
            bias, x, weight = args
            conv1d = True
        else:
            return func(*args, **kwargs)
        if (
            id(weight) not in self.params
            or (bias is not None and id(bias) not in self.params)
            or not torch.is_grad_enabled()
        ):
            return func(*args, **kwargs)
        return _DeferredLinear.apply(x, weight, bias, self, conv1d)

    def gate(self, hidden: torch.Tensor) -> torch.Tensor:
        """`hidden` unchanged; its backward adds the recorded weight gradients (after every band
        computation that descends from `hidden` has run its backward)."""
        params = list(self.params.values())
        return _Gate.apply(self, hidden, *params)


class _DeferredLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, band: DeferredWeightGrads, conv1d: bool):
        ctx.band, ctx.conv1d, ctx.has_bias, ctx.bias = band, conv1d, bias is not None, bias
        ctx.save_for_backward(x, weight)
        if conv1d:
            return torch.addmm(bias, x, weight)  # (N, out), weight (in, out)
        return F.linear(x, weight, bias)  # (..., out), weight (out, in)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = grad @ weight.T if ctx.conv1d else grad @ weight
        x2, g2 = x.reshape(-1, x.shape[-1]), grad.reshape(-1, grad.shape[-1])  # (N, in), (N, out)
        if ctx.band.open:
            key = (id(weight), id(ctx.bias), ctx.conv1d)
            ctx.band.records.setdefault(key, (weight, ctx.bias, ctx.conv1d, []))[3].append((x2, g2))
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
    params = [p for p in decoder.parameters() if p.requires_grad]
    if not params:
        return None
    if torch.is_autocast_enabled(params[0].device.type):
        _log_once(
            "autocast is on: the thought band computes weight gradients per column (autograd's path)", id(decoder)
        )
        return None
    return DeferredWeightGrads(params)


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
