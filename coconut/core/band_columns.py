"""One column through the decoder without the decoder's per-call set-up: the thought band's
single-column passes (`ContinuousThoughtLM.run`), for the families where that is exact.

A thought column is one token per row through every layer, as many times as the band has columns.
Through the decoder's own forward each such call builds its attention mask (~0.27 ms with Hugging
Face's `create_causal_mask`), its rotary angles or position embeddings, its output records and
cache bookkeeping, and runs attention through a kernel made for long queries (CPU flash attention:
~0.2 ms forward and ~0.5 ms backward per layer for one query of the graph presets' Llama). At small
widths that set-up, not the arithmetic, is most of a column's time.

`column_pass(decoder)` returns, for GPT-2 and Llama decoders, a pass that computes the mask, the
rotary angles or position embeddings once per band (`prepare`) and then runs each column through
the decoder's own modules (norms, projections, MLP, dropout) in the order of their forward, with a
single-query attention of three small ops (scores, float32 softmax, values: the eager attention's
arithmetic). The same modules on the same inputs: exact up to the attention kernel's summation
order. Elsewhere it returns None and the band calls the decoder. `column_pass` also runs one band
both ways on random inputs and returns None if they differ, so a variant this module does not know
(Gemma's scaled embeddings, Qwen3's query norms, a sliding window) keeps the decoder's own forward.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn
from transformers import DynamicCache

log = logging.getLogger(__name__)

# The one-node Llama column concatenates the q/k/v and gate/up weights once a band, a copy of most of
# the decoder's weights: only up to this many weight elements (the graph presets' Llama has 0.4M; a
# GPT-2-small-sized Llama 85M, whose columns' per-op cost is small beside their products anyway).
FUSED_MAX_WEIGHTS = 1 << 24

# (hidden (B, 1, D), column of the input, cache) -> last-layer hidden states (B, 1, D)
Column = Callable[[torch.Tensor, int, DynamicCache], torch.Tensor]


def single_query_attention(
    query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, scaling: float, dropout: float
) -> torch.Tensor:
    """Attention of one query position per row: query (B, G, r, d) (r query heads share each of G
    key/value heads), keys and values (B, G, L, d), mask (B, 1, 1, L) True where a key may be read;
    `dropout` is the probability with which a probability is dropped (0 outside training).
    Returns (B, G, r, d). The eager attention's arithmetic, as one autograd node."""
    return _SingleQueryAttention.apply(query, keys, values, mask, scaling, dropout)


class _SingleQueryAttention(torch.autograd.Function):
    """Scores, mask, softmax in at least float32, dropout, values; the backward written out. With one
    query head per key head (r = 1) the products against a single row are broadcast multiplications:
    a batched matrix product with one row or column ran 3-10x slower on a CPU (0.15-0.45 ms against
    0.04 ms for 128 heads of 83 keys)."""

    @staticmethod
    def forward(ctx, query, keys, values, mask, scaling: float, dropout: float):
        scores = torch.matmul(query, keys.transpose(-1, -2)) * scaling  # (B, G, r, L)
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        # At least float32, as the eager attention (a float64 model keeps float64)
        probs = nn.functional.softmax(scores, dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32))
        probs = probs.to(values.dtype)
        kept = None
        if dropout > 0:  # as nn.functional.dropout: kept with probability 1 - p, scaled by 1 / (1 - p)
            kept = torch.empty_like(probs).bernoulli_(1 - dropout).div_(1 - dropout)
        dropped = probs if kept is None else probs * kept
        ctx.scaling = scaling
        ctx.save_for_backward(query, keys, values, probs, kept)
        return torch.matmul(dropped, values)

    @staticmethod
    def backward(ctx, grad):
        query, keys, values, probs, kept = ctx.saved_tensors
        single = query.shape[-2] == 1
        dropped = probs if kept is None else probs * kept
        g_dropped = torch.matmul(grad, values.transpose(-1, -2))  # (B, G, r, L)
        g_values = dropped.transpose(-1, -2) * grad if single else torch.matmul(dropped.transpose(-1, -2), grad)
        g_probs = g_dropped if kept is None else g_dropped * kept
        pc = probs.to(torch.promote_types(probs.dtype, torch.float32))
        gc = g_probs.to(pc.dtype)
        g_scores = (pc * (gc - (gc * pc).sum(-1, keepdim=True))).to(probs.dtype) * ctx.scaling
        g_query = torch.matmul(g_scores, keys)  # (B, G, r, d)
        g_keys = g_scores.transpose(-1, -2) * query if single else torch.matmul(g_scores.transpose(-1, -2), query)
        return g_query, g_keys, g_values, None, None, None


class _Band:
    """What a band's columns share: the padding mask (B, 1, 1, K) of every key position and the
    column index of the band's first column."""

    def __init__(self, attention_mask: torch.Tensor, past: int, lo: int):
        self.mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, K)
        self.past, self.lo = past, lo

    def keys_of(self, t: int) -> torch.Tensor:
        """The mask of the keys column t may read: every cached and input position up to t."""
        return self.mask[..., : self.past + t + 1]


class GPT2Columns:
    """Columns of a `GPT2Model`: position embeddings added and dropped out as its forward does, then
    each block's ln_1, attention (c_attn, cache, attention dropout, c_proj, resid dropout), ln_2,
    MLP; then ln_f."""

    def __init__(self, decoder: nn.Module):
        self.decoder = decoder
        self.heads = decoder.config.num_attention_heads

    def applies(self) -> bool:
        """Whether the decoder is still as it was probed: its blocks of their own class (not wrapped,
        e.g. by FSDP), no hooks on it or them."""
        return _intact(self.decoder, self.decoder.h)

    def prepare(
        self, attention_mask: torch.Tensor, position_ids: torch.Tensor, past: int, lo: int, band_grads=None
    ) -> Column:
        """`position_ids` (B, n) of the band's columns lo..lo+n-1 (input indices); `attention_mask`
        covers the cache and every input column; `band_grads` is not needed here."""
        band = _Band(attention_mask, past, lo)
        positions = self.decoder.wpe(position_ids)  # (B, n, D): one lookup for the band

        def column(hidden: torch.Tensor, t: int, cache: DynamicCache) -> torch.Tensor:
            b, _, width = hidden.shape
            mask, j = band.keys_of(t), t - band.lo
            h = self.decoder.drop(hidden + positions[:, j : j + 1])  # (B, 1, D)
            for i, block in enumerate(self.decoder.h):
                attn = block.attn
                q, k, v = attn.c_attn(block.ln_1(h)).split(width, dim=2)  # (B, 1, D) each
                q, k, v = (x.reshape(b, self.heads, 1, -1) for x in (q, k, v))  # (B, H, 1, d)
                keys, values = cache.update(k, v, i)  # (B, H, L, d)
                dropout = attn.attn_dropout.p if attn.training else 0.0
                out = single_query_attention(q, keys, values, mask, attn.scaling, dropout)  # (B, H, 1, d)
                h = attn.resid_dropout(attn.c_proj(out.reshape(b, 1, width))) + h
                h = h + block.mlp(block.ln_2(h))
            return self.decoder.ln_f(h)

        return column


class LlamaColumns:
    """Columns of a `LlamaModel`: rotary angles of the band's positions computed once, then each
    layer's input norm, q/k/v projections, rotary embedding, cache, grouped-query attention,
    o_proj, post-attention norm, MLP; then the final norm. In training, where the layers have no
    biases, SiLU and no attention dropout, each column is one autograd node (llama_column.py)."""

    def __init__(self, decoder: nn.Module):
        from transformers.models.llama.modeling_llama import rotate_half  # noqa: PLC0415 (llama only)

        self.decoder, self.rotate_half = decoder, rotate_half
        config = decoder.config
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        projections = [m for layer in decoder.layers for m in self._projections(layer)]
        self.fused = (
            config.hidden_act == "silu"
            and config.attention_dropout == 0
            and all(isinstance(m, nn.Linear) and m.bias is None for m in projections)
            and sum(m.weight.numel() for m in projections) <= FUSED_MAX_WEIGHTS
        )

    def applies(self) -> bool:
        """As `GPT2Columns.applies`."""
        return _intact(self.decoder, self.decoder.layers)

    @staticmethod
    def _projections(layer: nn.Module) -> list[nn.Module]:
        attn, mlp = layer.self_attn, layer.mlp
        return [attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj]

    def prepare(
        self, attention_mask: torch.Tensor, position_ids: torch.Tensor, past: int, lo: int, band_grads=None
    ) -> Column:
        """`band_grads`: the run's `thought_band.DeferredWeightGrads` in training, for the fused
        column; None (or a cache other than the training one) keeps the modules."""
        band = _Band(attention_mask, past, lo)
        like = self.decoder.norm.weight  # the rotary module reads only its device and dtype
        cos, sin = self.decoder.rotary_emb(like, position_ids)  # (B, n, d) each
        cos, sin = cos[:, :, None], sin[:, :, None]  # (B, n, 1, d)
        rotate_half, d, groups = self.rotate_half, self.head_dim, self.kv_heads
        fused = None
        if self.fused and band_grads is not None and not self._wrapped():
            fused = self._fused(band_grads, band, cos, sin)

        def column(hidden: torch.Tensor, t: int, cache: DynamicCache) -> torch.Tensor:
            if fused is not None and _buffered(cache):
                return fused(hidden, t, cache)
            b = hidden.shape[0]
            mask, j = band.keys_of(t), t - band.lo
            c, s = cos[:, j], sin[:, j]  # (B, 1, d), against (B, heads, d)
            h = hidden  # (B, 1, D)
            for i, layer in enumerate(self.decoder.layers):
                attn = layer.self_attn
                x = layer.input_layernorm(h)
                q = attn.q_proj(x).view(b, -1, d)  # (B, H, d)
                k = attn.k_proj(x).view(b, -1, d)  # (B, G, d)
                v = attn.v_proj(x).view(b, -1, 1, d)  # (B, G, 1, d)
                q = q * c + rotate_half(q) * s
                k = k * c + rotate_half(k) * s
                keys, values = cache.update(k[:, :, None], v, i)  # (B, G, L, d)
                dropout = attn.attention_dropout if attn.training else 0.0
                out = single_query_attention(q.view(b, groups, -1, d), keys, values, mask, attn.scaling, dropout)
                h = h + attn.o_proj(out.reshape(b, 1, -1))  # (B, G, r, d) -> (B, 1, H * d)
                h = h + layer.mlp(layer.post_attention_layernorm(h))
            return self.decoder.norm(h)

        return column

    def _wrapped(self) -> bool:
        """Whether a projection or norm has a hook or a forward of its own on the instance (accelerate's
        device hooks, a test's spy), which the one-node column would skip."""
        modules = [self.decoder.norm]
        for layer in self.decoder.layers:
            modules += [*self._projections(layer), layer.input_layernorm, layer.post_attention_layernorm]
        return any("forward" in vars(m) or m._forward_hooks or m._forward_pre_hooks for m in modules)

    def _fused(self, band_grads, band: _Band, cos: torch.Tensor, sin: torch.Tensor) -> Column:
        """The training column as one autograd node: the projections' weights (q/k/v and gate/up
        concatenated, once for the band), which of them take gradients, the norms' weights."""
        from coconut.core.llama_column import ColumnSpec, LlamaColumn, signed_sin  # noqa: PLC0415

        layers = self.decoder.layers
        with torch.no_grad():
            linears = []
            for layer in layers:
                q, k, v, o, gate, up, down = (m.weight for m in self._projections(layer))
                linears.append((torch.cat([q, k, v]), o.detach(), torch.cat([gate, up]), down.detach()))
        ids = [[id(m) if id(m) in band_grads.kinds else None for m in self._projections(layer)] for layer in layers]
        norms = [w for layer in layers for w in (layer.input_layernorm.weight, layer.post_attention_layernorm.weight)]
        norms.append(self.decoder.norm.weight)
        attn = layers[0].self_attn
        eps, scaling = self.decoder.norm.variance_epsilon, attn.scaling
        sin = signed_sin(sin)

        def column(hidden: torch.Tensor, t: int, cache: DynamicCache) -> torch.Tensor:
            b, j = hidden.shape[0], t - band.lo
            spec = ColumnSpec(
                eps, scaling, self.heads, self.kv_heads, self.head_dim, cos[:, j], sin[:, j], band.keys_of(t),
                cache.layers, linears, band_grads, ids,
            )  # fmt: skip
            pasts = [x for layer in cache.layers for x in (layer.keys, layer.values)]
            out, *views = LlamaColumn.apply(spec, hidden.view(b, -1), *pasts, *norms)
            for layer, keys, values in zip(cache.layers, views[::2], views[1::2]):
                layer.keys, layer.values, layer.written = keys, values, keys
            return out.view(b, 1, -1)

        return column


def _buffered(cache: DynamicCache) -> bool:
    """Whether every layer of `cache` is a training `BufferedLayer` with room for one more column."""
    from coconut.core.thought_band import BufferedLayer  # noqa: PLC0415

    return all(
        isinstance(layer, BufferedLayer)
        and layer.buffers is not None
        and layer.keys is not None
        and layer.keys is getattr(layer, "written", None)
        and layer.keys.shape[-2] < layer.capacity
        for layer in cache.layers
    )


def _candidate(decoder: nn.Module):
    """The column pass this module has for `decoder`'s class and settings, or None."""
    from transformers.models.gpt2.modeling_gpt2 import GPT2Model  # noqa: PLC0415
    from transformers.models.llama.modeling_llama import LlamaModel  # noqa: PLC0415

    config = getattr(decoder, "config", None)
    if getattr(config, "_attn_implementation", None) not in ("eager", "sdpa"):
        return None
    if getattr(decoder, "gradient_checkpointing", False):
        return None
    if type(decoder) is GPT2Model:
        if config.add_cross_attention or config.reorder_and_upcast_attn:
            return None
        return GPT2Columns(decoder)
    if type(decoder) is LlamaModel:
        if decoder.rotary_emb.rope_type != "default":  # dynamic rope types depend on the call's length
            return None
        return LlamaColumns(decoder)
    return None


def _intact(decoder: nn.Module, layers) -> bool:
    """Whether `layers` are all of the class the decoder was built with (FSDP wraps them in its own),
    no hook sits on the decoder or a layer and no gradient checkpointing was turned on, all of which
    the column pass would skip."""
    from torch.nn.modules import module as torch_module  # noqa: PLC0415

    kind = type(layers[0])
    if any(type(layer) is not kind for layer in layers) or kind.__module__ != type(decoder).__module__:
        return False
    if getattr(decoder, "gradient_checkpointing", False):  # enabled after construction
        return False
    global_hooks = (torch_module._global_forward_hooks, torch_module._global_forward_pre_hooks)
    return not any(global_hooks) and not any(m._forward_hooks or m._forward_pre_hooks for m in [decoder, *layers])


# (embeds (B, T, D), attention_mask (B, past + T), position_ids (B, T), cache) -> hidden (B, T, D):
# the decoder's own forward, as ContinuousThoughtLM calls it.
Decode = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, DynamicCache], torch.Tensor]


@torch.no_grad()
def column_pass(lm: nn.Module, decode: Decode) -> GPT2Columns | LlamaColumns | None:
    """The column pass for `lm`'s decoder if this module has one and it gives the decoder's own
    hidden states on a left-padded batch (relative difference within the dtype's tolerance); its
    training variant (`LlamaColumns.fused`) is checked the same way and turned off if it differs."""
    from coconut.core.decoder_probe import FIRST_CHUNK, _probe_inputs, _relative_difference  # noqa: PLC0415
    from coconut.core.thought_band import DeferredWeightGrads, _is_trainable_linear, buffered_cache  # noqa: PLC0415

    columns = _candidate(lm.base_model)
    if columns is None:
        return None
    modes = {module: module.training for module in lm.modules()}
    lm.eval()  # no dropout in the comparison
    try:
        embeds, mask = _probe_inputs(lm)  # (2, T, D), the second row left-padded
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        linears = [m for m in lm.base_model.modules() if _is_trainable_linear(m)]

        def band(way: str) -> torch.Tensor:
            cache = buffered_cache(lm.config, mask.shape[1]) if way == "fused" else DynamicCache(config=lm.config)
            out = [decode(embeds[:, :FIRST_CHUNK], mask[:, :FIRST_CHUNK], positions[:, :FIRST_CHUNK], cache)]
            records = DeferredWeightGrads(linears) if way == "fused" else None
            column = columns.prepare(mask, positions[:, FIRST_CHUNK:], 0, FIRST_CHUNK, records)
            for t in range(FIRST_CHUNK, mask.shape[1]):
                step = embeds[:, t : t + 1]
                if way == "decoder":
                    out.append(decode(step, mask[:, : t + 1], positions[:, t : t + 1], cache))
                else:
                    out.append(column(step, t, cache))
            return torch.cat(out, 1)

        reference = band("decoder")
        differences = {"columns": _relative_difference(reference, band("columns"))}
        if getattr(columns, "fused", False) and linears:
            differences["fused"] = _relative_difference(reference, band("fused"))
    except AttributeError as error:  # an internal it reads is gone (docs/architecture.md, "Library internals")
        log.info(f"{lm.config.model_type}: band columns through the decoder's own forward (the column pass: {error})")
        return None
    finally:
        for module, training in modes.items():
            module.training = training
    tolerance = 1e-5 if embeds.dtype in (torch.float32, torch.float64) else 3e-2
    if differences["columns"] > tolerance:
        log.info(
            f"{lm.config.model_type}: band columns through the decoder's own forward (the column pass "
            f"differs by {differences['columns']:.2g})"
        )
        return None
    if differences.get("fused", 0) > tolerance:
        log.info(
            f"{lm.config.model_type}: band columns through the modules in training (the one-node column "
            f"differs by {differences['fused']:.2g})"
        )
        columns.fused = False
    return columns
