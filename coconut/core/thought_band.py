"""Making the thought band's single-column passes cheap in training (`ContinuousThoughtLM.run`).

The band runs one single-column pass per column (B tokens each), forward and backward. Done naively
that costs far more than its FLOPs, for three reasons this module removes:

1. Weight gradients. A run with a band makes several decoder passes: the question (the prefix), one
   per band column, the rest. Autograd computes every linear layer's weight gradient once per pass,
   each into a fresh weight-sized tensor that is then added up: per band column an outer product
   over only B rows (a (768, 8) @ (8, 3072) product ran at 1-8 GFLOP/s on a 2-core CPU), and a
   weight-sized write, allocation and addition per pass (at GPT-2-small size, 340 MB each, held
   together until the question's pass ends the backward: the band's gradients alone were 0.11x of
   a plain step's peak memory). `DeferredWeightGrads` instead has the band's and the rest's linear
   layers record their input and output gradient during the backward (`recording`), and the
   question's pass, whose backward autograd runs last, add them to its own product in place
   (`consuming`): one weight gradient per layer per step, as in a plain step. A record that arrives
   after its layer's question pass ran (a computation that does not descend from the question's
   output) is computed on the spot, and a gate on the embeddings, which autograd runs after
   everything, computes any record left over; so the result never depends on that ordering. The
   linear layers are the decoder's `nn.Linear` and GPT-2 `Conv1D` modules with their stock forward
   and trainable parameters: during a training run their forward is swapped for one that records.
   Any other use of a parameter keeps autograd's own path. (A `TorchFunctionMode` that picks the
   linear calls out of every op would do the same at a Python call per op: ~7% of a stage-3 step of
   a 2-layer, 128-wide model.) Under autocast the casts make the weights new tensors: the band then
   keeps autograd's path (logged).

2. Skinny products. A band column multiplies B rows by each weight, forward and backward (the
   input's gradient). MKL runs such a product far below the memory bandwidth and on one thread
   however many torch has (a (8, 768) @ (768, 3072) product took 1.6 ms on one thread and on two of
   a 2-core AMD EPYC); oneDNN's `mkldnn._linear_pointwise` shares it out (0.9 ms on two). On a
   CPU, float32, weights of at least `SKINNY_MIN_WEIGHT` elements and at most `SKINNY_MAX_ROWS`
   rows take it; the question's and the rest's passes keep the product a plain step makes.

3. The KV cache. `DynamicCache` concatenates each column's keys and values onto the cache, so
   every column copies the whole prefix cache, and the attention keeps each copy for its
   backward: quadratic memory in the band's length. `BufferedLayer` writes into key and value
   buffers preallocated for the whole sequence and hands the attention views of them; a custom
   autograd function routes the views' gradients back to each piece written. Writes go through an
   alias with its own version counter: they only ever fill positions past those of every view
   handed out, so what the saved views hold never changes.

All keep the result exact: the same products, summed in a different order.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from functools import partial

import torch
from torch import nn
from transformers import DynamicCache
from transformers.pytorch_utils import Conv1D

try:  # a transformers internal (docs/architecture.md, "Library internals"): the per-layer cache
    from transformers.cache_utils import DynamicLayer
except ImportError as error:  # transformers 4.x keeps the cache as lists of tensors
    import transformers

    raise ImportError(
        f"coconut needs transformers >= 5.4 (pyproject.toml), found {transformers.__version__}: "
        "its per-layer cache (transformers.cache_utils.DynamicLayer) is missing. "
        "Fix: pip install 'transformers>=5.4'"
    ) from error

log = logging.getLogger(__name__)

# Band products that oneDNN computes (point 2 above): a weight of at least this many elements (a
# 512 x 512 layer; below that MKL's product is as fast or faster: 26 against 38 us for (32, 128) @
# (128, 256)), at most this many rows.
SKINNY_MIN_WEIGHT = 1 << 18
SKINNY_MAX_ROWS = 64
_LINEAR_POINTWISE = (
    getattr(torch.ops.mkldnn, "_linear_pointwise", None) if torch.backends.mkldnn.is_available() else None
)


def _skinny(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether a band column's product of `x` (N, in) with `weight` goes through oneDNN."""
    return (
        _LINEAR_POINTWISE is not None
        and x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and x.shape[0] <= SKINNY_MAX_ROWS
        and weight.numel() >= SKINNY_MIN_WEIGHT
    )


def _product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, skinny: bool) -> torch.Tensor:
    """x (N, k) @ weight.T (+ bias), `weight` (n, k) possibly a transposed view: (N, n)."""
    if skinny and _skinny(x, weight):
        return _LINEAR_POINTWISE(x, weight, bias, "none", [], "")
    return nn.functional.linear(x, weight, bias)


class DeferredWeightGrads:
    """While a training run's passes are inside `question_pass()`, `column_pass()` and
    `rest_pass()`, `layers` leave their weight gradients to one product per layer (module
    docstring, point 1); `gate` catches what is left."""

    def __init__(self, layers: list[nn.Module]):
        self.layers = layers
        self.params = {id(p): p for layer in layers for p in layer.parameters(recurse=False)}
        self.records: dict[int, list] = {}  # id(layer) -> [(x (N, in), grad (N, out)), ...]
        self.consumed: set[int] = set()  # layers whose question pass has run its backward
        self.kinds = {id(layer): (layer.weight, layer.bias, isinstance(layer, Conv1D)) for layer in layers}

    def question_pass(self):
        """The question's (prefix) pass: its backward adds the recorded gradients to its own."""
        return self._swapped(consume=True, skinny=False)

    def column_pass(self):
        """A band column's pass: gradients recorded, skinny products through oneDNN (point 2)."""
        return self._swapped(consume=False, skinny=True)

    def rest_pass(self):
        """The pass over the rest: gradients recorded."""
        return self._swapped(consume=False, skinny=False)

    @contextmanager
    def _swapped(self, consume: bool, skinny: bool):
        for layer in self.layers:  # an instance attribute shadows the class's forward
            layer.forward = partial(_deferred_forward, layer, self, consume, skinny)
        try:
            yield
        finally:
            for layer in self.layers:
                del layer.forward

    def gate(self, hidden: torch.Tensor) -> torch.Tensor:
        """`hidden` unchanged; its backward adds the gradients of any records left over (after every
        computation that descends from `hidden` has run its backward) and readies the next backward."""
        return _Gate.apply(self, hidden, *self.params.values())

    def own_gradients(self, layer_id: int, x: torch.Tensor, grad: torch.Tensor) -> tuple:
        """The weight and bias gradients of one record (x (N, in), grad (N, out))."""
        weight, bias, conv1d = self.kinds[layer_id]
        return x.T @ grad if conv1d else grad.T @ x, grad.sum(0) if bias is not None else None


def _deferred_forward(
    layer: nn.Module, band: DeferredWeightGrads, consume: bool, skinny: bool, x: torch.Tensor
) -> torch.Tensor:
    """`layer(x)` (its stock forward), with the weight gradient left to `band`."""
    if not torch.is_grad_enabled():  # e.g. a checkpointed layer's first, gradient-free pass
        return type(layer).forward(layer, x)
    out = _DeferredLinear.apply(x.reshape(-1, x.shape[-1]), layer.weight, layer.bias, band, id(layer), consume, skinny)
    return out.view(*x.shape[:-1], out.shape[-1])


class _DeferredLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, band: DeferredWeightGrads, layer_id: int, consume: bool, skinny: bool):
        # x (N, in); weight (out, in), or (in, out) for a Conv1D, whose forward is addmm(bias, x, weight)
        conv1d = band.kinds[layer_id][2]
        ctx.band, ctx.layer_id, ctx.conv1d, ctx.consume, ctx.skinny = band, layer_id, conv1d, consume, skinny
        ctx.save_for_backward(x, weight)
        if conv1d and not (skinny and _skinny(x, weight)):
            return torch.addmm(bias, x, weight)
        return _product(x, weight.T if conv1d else weight, bias, skinny)  # (N, out)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors  # x (N, in), grad (N, out)
        band, layer_id = ctx.band, ctx.layer_id
        grad_x = _product(grad, weight if ctx.conv1d else weight.T, None, ctx.skinny)  # (N, in)
        if not ctx.consume and layer_id not in band.consumed:
            band.records.setdefault(layer_id, []).append((x, grad))
            return grad_x, None, None, None, None, None, None
        grad_w, grad_b = band.own_gradients(layer_id, x, grad)
        if ctx.consume:
            band.consumed.add(layer_id)
            records = band.records.pop(layer_id, [])
            if records:
                xs, grads = (
                    torch.cat([r for r, _ in records]),
                    torch.cat([g for _, g in records]),
                )  # (N_rec, in), (N_rec, out)
                grad_w = grad_w.addmm_(xs.T, grads) if ctx.conv1d else grad_w.addmm_(grads.T, xs)
                grad_b = None if grad_b is None else grad_b.add_(grads.sum(0))
        return grad_x, grad_w, grad_b, None, None, None, None


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

        for layer_id, records in band.records.items():
            weight, bias, _ = band.kinds[layer_id]
            grad_w, grad_b = band.own_gradients(
                layer_id, torch.cat([x for x, _ in records]), torch.cat([g for _, g in records])
            )
            add(weight, grad_w)
            if bias is not None:
                add(bias, grad_b)
        band.records.clear()
        band.consumed.clear()  # a second backward through the same graph (retain_graph) starts afresh
        return None, grad, *(grads.get(id(p)) for p in band.params.values())


def deferred_weight_grads(decoder: torch.nn.Module) -> DeferredWeightGrads | None:
    """The mode for a training run with a band, or None where it does not apply (no gradients
    wanted, or autocast on, whose weight casts it cannot see through)."""
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
