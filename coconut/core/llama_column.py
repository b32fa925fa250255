"""One Llama band column in training as one autograd node, its backward written out (the thought
band of `ContinuousThoughtLM.run`, through `band_columns.LlamaColumns`).

At the graph presets' size (2 layers, width 128, 32 rows) a band column is ~1 ms of arithmetic
but, through the modules, ~140 ops forward and as many autograd nodes backward, ~4 ms in all
(each op and node costs a few microseconds on a CPU whatever its size). Here the forward is ~30
ops a layer with the q/k/v and gate/up projections each one product (their weights concatenated
once per band), and the backward ~40 ops a layer, without autograd's bookkeeping between them.
The linear layers' weight gradients are recorded for the question pass, as every band pass's
are (thought_band.py, point 1); the keys and values are written into the training cache's buffers
(thought_band.BufferedLayer) and the returned views route their gradients as `_Append`'s do.

The arithmetic is the modules' (Hugging Face's LlamaDecoderLayer with the eager attention):
RMSNorm in at least float32, rotary embedding `q * cos + rotate_half(q) * sin`, a softmax in at
least float32, SiLU-gated MLP. Used only where `LlamaColumns` checks that it applies (no biases,
SiLU, no attention dropout) and the module path's probe found the decoder's hidden states;
the float64 tests compare its values and gradients with the step-by-step definition.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from coconut.core.thought_band import _product


@dataclass
class ColumnSpec:
    """What one column's forward and backward need besides tensors."""

    eps: float
    scaling: float
    heads: int
    kv_heads: int
    head_dim: int
    cos: torch.Tensor  # (B, 1, d)
    sin: torch.Tensor  # (B, 1, d), its first half negated (signed_sin)
    mask: torch.Tensor  # (B, 1, 1, L + 1), True where a key may be read
    cache_layers: list  # thought_band.BufferedLayer per decoder layer, written at position L
    linears: list  # per layer: (w_qkv, w_o, w_gu, w_down), detached; q/k/v and gate/up concatenated
    records: object  # thought_band.DeferredWeightGrads, which takes the projections' weight gradients
    linear_ids: list  # per layer: ids of the (q, k, v, o, gate, up, down) projection modules


def _mm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x (B, k) @ weight.T, weight (n, k): a band column's product (through oneDNN where large)."""
    return _product(x, weight, None, skinny=True)


def signed_sin(sin: torch.Tensor) -> torch.Tensor:
    """sin (..., d) with its first half negated: `rotate_half(x) * sin == x.roll(d // 2, -1) *
    signed_sin(sin)`, element for element (Hugging Face's rotate_half is (x1, x2) -> (-x2, x1))."""
    half = sin.shape[-1] // 2
    return torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)


_FUSED_RMS = hasattr(torch.ops.aten, "_fused_rms_norm")  # (its backward has no CPU kernel)


def _norm(h: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """LlamaRMSNorm: weight * h / sqrt(mean(h^2) + eps), computed in at least float32; returns it and
    the reciprocal root (B, 1)."""
    if _FUSED_RMS and h.device.type == "cpu" and h.dtype in (torch.float32, torch.float64):  # one op, as checked
        return torch.ops.aten._fused_rms_norm(h, [h.shape[-1]], weight, eps)
    hc = h.to(torch.promote_types(h.dtype, torch.float32))
    r = torch.rsqrt(hc.pow(2).mean(-1, keepdim=True) + eps)
    return weight * (hc * r).to(h.dtype), r


def _norm_backward(grad: torch.Tensor, h: torch.Tensor, r: torch.Tensor, weight: torch.Tensor) -> tuple:
    """Gradients of `_norm` with respect to h and weight, given its input h and reciprocal root r."""
    nc = h.to(r.dtype) * r
    grad_w = (grad * nc.to(grad.dtype)).sum(0)
    gn = (grad * weight).to(nc.dtype)
    grad_h = r * (gn - nc * (gn * nc).mean(-1, keepdim=True))
    return grad_h.to(grad.dtype), grad_w


class LlamaColumn(torch.autograd.Function):
    """hidden (B, D); per layer the cache's keys and values so far (B, G, L, d); the norms' weights
    (input and post-attention norm per layer, then the final norm) -> the last-layer hidden state
    (B, D) and, per layer, the keys and values with this column's written (B, G, L + 1, d)."""

    @staticmethod
    def forward(ctx, spec: ColumnSpec, hidden, *tensors):
        n_layers = len(spec.cache_layers)
        pasts, norms = tensors[: 2 * n_layers], tensors[2 * n_layers :]
        b, d, groups = hidden.shape[0], spec.head_dim, spec.kv_heads
        half, rotated = d // 2, (spec.heads + groups) * d  # the query and key part of q/k/v
        cdtype = torch.promote_types(hidden.dtype, torch.float32)
        h, saved, views = hidden, [], []
        for i, layer in enumerate(spec.cache_layers):
            (w_in, w_post), (w_qkv, w_o, w_gu, w_down) = norms[2 * i : 2 * i + 2], spec.linears[i]
            x1, r1 = _norm(h, w_in, spec.eps)
            qkv = _mm(x1, w_qkv)  # (B, (H + 2G) d)
            qk = qkv[:, :rotated].view(b, -1, d)  # (B, H + G, d)
            qk = qk * spec.cos + qk.roll(half, -1) * spec.sin  # rotary embedding, spec.sin signed
            length = pasts[2 * i].shape[2]  # L
            kb, vb, kw, vw = layer.buffers
            kw[:, :, length] = qk[:, spec.heads :]
            vw[:, :, length] = qkv[:, rotated:].view(b, groups, d)
            keys, values = kb[:, :, : length + 1], vb[:, :, : length + 1]  # (B, G, L + 1, d)
            qg = qk[:, : spec.heads].reshape(b, groups, -1, d)  # (B, G, r, d)
            scores = torch.matmul(qg, keys.transpose(-1, -2)) * spec.scaling  # (B, G, r, L + 1)
            scores = scores.masked_fill(~spec.mask, torch.finfo(scores.dtype).min)
            p = nn.functional.softmax(scores, dim=-1, dtype=cdtype).to(hidden.dtype)
            a = torch.matmul(p, values).reshape(b, -1)  # (B, H d)
            h2 = h + _mm(a, w_o)
            x2, r2 = _norm(h2, w_post, spec.eps)
            gate, up = _mm(x2, w_gu).chunk(2, dim=1)  # (B, I) each
            act = nn.functional.silu(gate)
            m = act * up
            saved.append((h, r1, x1, qg, keys, values, p, a, h2, r2, x2, gate, up, act, m))
            h = h2 + _mm(m, w_down)
            views += [keys, values]
        out, rf = _norm(h, norms[-1], spec.eps)
        ctx.spec, ctx.saved, ctx.final = spec, saved, (h, rf)
        ctx.lengths = [p.shape[2] for p in pasts[::2]]
        ctx.save_for_backward(*norms)
        return (out, *views)

    @staticmethod
    def backward(ctx, grad_out, *grad_views):
        spec, norms = ctx.spec, ctx.saved_tensors
        b, d, groups = grad_out.shape[0], spec.head_dim, spec.kv_heads
        half = d // 2
        h_last, rf = ctx.final
        g_h, g_final = _norm_backward(grad_out, h_last, rf, norms[-1])
        grads_norms = [None] * len(norms)
        grads_norms[-1] = g_final
        grads_past = [None] * (2 * len(spec.cache_layers))
        for i in reversed(range(len(spec.cache_layers))):
            (w_in, w_post), (w_qkv, w_o, w_gu, w_down) = norms[2 * i : 2 * i + 2], spec.linears[i]
            h, r1, x1, qg, keys, values, p, a, h2, r2, x2, gate, up, act, m = ctx.saved[i]
            q_id, k_id, v_id, o_id, gate_id, up_id, down_id = spec.linear_ids[i]
            # h_out = h2 + m @ w_down.T; m = silu(gate) * up
            g_m = _mm(g_h, w_down.T)
            _record(spec, down_id, m, g_h)
            g_gate = torch.ops.aten.silu_backward(g_m * up, gate)
            g_up = g_m * act
            g_x2 = _mm(torch.cat([g_gate, g_up], dim=1), w_gu.T)
            _record(spec, gate_id, x2, g_gate)
            _record(spec, up_id, x2, g_up)
            g_n, grads_norms[2 * i + 1] = _norm_backward(g_x2, h2, r2, w_post)
            g_h2 = g_h + g_n
            # h2 = h + a @ w_o.T; a = softmax(qg keys^T * scaling) values
            g_a = _mm(g_h2, w_o.T).view(b, groups, -1, d)  # (B, G, r, d)
            _record(spec, o_id, a, g_h2)
            g_p = torch.matmul(g_a, values.transpose(-1, -2))  # (B, G, r, L + 1)
            g_values = torch.matmul(p.transpose(-1, -2), g_a)  # (B, G, L + 1, d)
            pc = p.to(torch.promote_types(p.dtype, torch.float32))
            g_pc = g_p.to(pc.dtype)
            g_scores = (pc * (g_pc - (g_pc * pc).sum(-1, keepdim=True))).to(p.dtype) * spec.scaling
            g_q = torch.matmul(g_scores, keys).view(b, -1, d)  # (B, H, d)
            g_keys = torch.matmul(g_scores.transpose(-1, -2), qg)  # (B, G, L + 1, d)
            if grad_views[2 * i] is not None:  # later columns' and the rest's reads of these keys
                g_keys = g_keys + grad_views[2 * i]
            if grad_views[2 * i + 1] is not None:
                g_values = g_values + grad_views[2 * i + 1]
            length = ctx.lengths[i]
            grads_past[2 * i], grads_past[2 * i + 1] = g_keys[:, :, :length], g_values[:, :, :length]
            # rotary: y = x cos + roll(x) sin', roll by half its own transpose
            g_qk = torch.cat([g_q, g_keys[:, :, length]], dim=1)  # (B, H + G, d)
            g_qk = g_qk * spec.cos + (g_qk * spec.sin).roll(half, -1)
            g_qkv = torch.cat([g_qk.reshape(b, -1), g_values[:, :, length].reshape(b, -1)], dim=1)
            g_x1 = _mm(g_qkv, w_qkv.T)
            g_q, g_k, g_v = g_qkv.split([spec.heads * d, groups * d, groups * d], dim=1)
            _record(spec, q_id, x1, g_q)
            _record(spec, k_id, x1, g_k)
            _record(spec, v_id, x1, g_v)
            g_n, grads_norms[2 * i] = _norm_backward(g_x1, h, r1, w_in)
            g_h = g_h2 + g_n
        return (None, g_h, *grads_past, *grads_norms)


def _record(spec: ColumnSpec, layer_id: int | None, x: torch.Tensor, grad: torch.Tensor) -> None:
    """Leaves the weight gradient of one projection (x (B, in), grad (B, out)) to the question
    pass (None: a frozen projection)."""
    if layer_id is not None:
        spec.records.records.setdefault(layer_id, []).append((x, grad))
