"""Thought projections: what maps the last hidden state to the next continuous thought's input embedding.

COCONUT (Hao et al. 2024, arXiv:2412.06769) feeds the hidden state back unchanged (`identity`). Two
alternatives ask whether a thought can stay continuous yet readable:

  identity      h                                     the paper's method (default)
  sparse_vocab  sum_i w_i E[v_i]                      v = top-k tokens of the LM head's logits on h,
                                                      w = softmax(top-k logits / temperature); every
                                                      thought reads as k weighted tokens
  linear        h + W h + b   (W, b start at zero)    a learned affine map, a baseline for the
                                                      bottleneck that starts at the paper's method
  sparse_readout sum_i w_i E[v_i]                     as sparse_vocab, but v and w come from a learned
                                                      readout R (V x D, initialised to the LM head's
                                                      weight) instead of the LM head: R is free to
                                                      learn what a thought means rather than predict
                                                      the next format token
  mlp           LN(W2 GELU(W1 h + b1) + b2)           CODI's projection (Shen et al. 2025, zhenyi4/codi
                                                      src/model.py:192-200): Dropout, Linear(D, prj_dim),
                                                      GELU, Linear(prj_dim, D), LayerNorm (unless
                                                      prj_no_ln); initialised as torch's nn.Linear
  latent_policy mean(h) * sigma                       CoLaR's latent head (Tan et al. 2025, xiaomi-research/colar
                                                      modules/projector.py:16-38): a Gaussian over the next
                                                      compressed embedding / sigma, fed its mean
                                                      (coconut/core/colar.py); method=colar's own

`sparse_vocab` reads the model's own LM head and input embedding matrix (not copies), so tied weights
stay tied and gradients reach both. Its `straight_through` mode feeds hard weights (1/k on each of the
top-k tokens: for k=1 exactly the argmax token's embedding) and passes the softmax's gradient back.
Only `linear` (W, b), `mlp` and `sparse_readout` (R: V x D more parameters, as many as the LM head)
have parameters; they live under `model.thought_projection.*` in the state dict, and `projection_config`
is what a checkpoint stores to rebuild the same module. `sparse_readout`'s `readout_logits` is the
distribution the legibility objective can score (`legibility.read=readout`,
coconut/core/legibility_objective.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace

import torch
from torch import nn
from transformers import PreTrainedModel

from coconut.core.colar import LatentPolicy
from coconut.core.errors import ConfigError
from coconut.core.model import lm_logits

NAMES = ("identity", "sparse_vocab", "linear", "sparse_readout", "mlp", "latent_policy")
SPARSE = ("sparse_vocab", "sparse_readout")  # the names that take k / mode / temperature
MODES = ("softmax", "straight_through")


@dataclass(frozen=True)
class ProjectionConfig:
    """`model.thought_projection`: a name, plus k / mode / temperature for sparse_vocab and sparse_readout. The defaults
    equal conf/model/thought_projection/*.yaml (a test checks it)."""

    name: str = "identity"
    k: int = 4  # tokens mixed into a sparse thought
    mode: str = "softmax"  # softmax | straight_through
    temperature: float = 1.0  # on the top-k logits before the softmax
    # mlp only (CODI's names): the hidden width (null: the model's), the dropout on its input, no LayerNorm.
    prj_dim: int | None = None
    prj_dropout: float = 0.0
    prj_no_ln: bool = False
    # latent_policy only (CoLaR's names): the head's width (null: the model's), a fixed std of 1e-9
    # (their `lp_determinisitc`), sigma the embedding std (null: measured on the input embeddings).
    lp_intermediate_size: int | None = None
    lp_deterministic: bool = False
    embeds_std: float | None = None

    def __post_init__(self):
        if self.name not in NAMES:
            raise ConfigError(
                f"model.thought_projection={self.name!r} is not a thought projection; choose one of {', '.join(NAMES)}"
            )
        if self.name in SPARSE:
            if not isinstance(self.k, int) or self.k < 1:
                raise ConfigError(f"model.thought_projection.k must be an integer >= 1, got {self.k!r}")
            if self.mode not in MODES:
                raise ConfigError(f"model.thought_projection.mode must be one of {', '.join(MODES)}, got {self.mode!r}")
            if not self.temperature > 0:
                raise ConfigError(f"model.thought_projection.temperature must be > 0, got {self.temperature!r}")
        if self.name == "mlp":
            if self.prj_dim is not None and (not isinstance(self.prj_dim, int) or self.prj_dim < 1):
                raise ConfigError(f"thought_projection.prj_dim must be an integer >= 1 or null, got {self.prj_dim!r}")
            if not 0 <= self.prj_dropout < 1:
                raise ConfigError(f"thought_projection.prj_dropout must be in [0, 1), got {self.prj_dropout!r}")

    @classmethod
    def parse(cls, cfg: str | Mapping | None) -> ProjectionConfig:
        """From `identity` (a name: its defaults), a mapping with `name` and parameters, or None."""
        if cfg is None:
            return cls()
        if isinstance(cfg, str):
            return cls(name=cfg)
        values = dict(cfg)
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(
                f"model.thought_projection has unknown keys {sorted(unknown)}; known: "
                f"{', '.join(f.name for f in fields(cls))}"
            )
        return cls(**values)

    def as_dict(self) -> dict:
        """The fields that matter for `name` (what checkpoints store)."""
        if self.name == "mlp":
            return {k: v for k, v in asdict(self).items() if k == "name" or k.startswith("prj_")}
        if self.name == "latent_policy":
            return {k: v for k, v in asdict(self).items() if k in ("name", "embeds_std") or k.startswith("lp_")}
        if self.name not in SPARSE:
            return {"name": self.name}
        return {k: v for k, v in asdict(self).items() if not k.startswith(("prj_", "lp_", "embeds_"))}


class IdentityProjection(nn.Identity):
    """The paper's method: the hidden state is the thought."""

    config = ProjectionConfig("identity")


class SparseVocabProjection(nn.Module):
    """A thought as a sparse mixture of token embeddings: the LM head's top-k tokens on the hidden
    state, weighted by their renormalised softmax."""

    def __init__(self, lm: PreTrainedModel, config: ProjectionConfig):
        super().__init__()
        vocab = lm.get_input_embeddings().weight.shape[0]
        if config.k > vocab:
            raise ConfigError(f"model.thought_projection.k={config.k} exceeds the vocabulary ({vocab} tokens)")
        self.config = config
        # Kept outside the module tree: the LM is registered by ContinuousThoughtLM, and registering
        # it here too would list its weights twice in the state dict.
        self.__dict__["_lm"] = lm

    def scores(self, hidden: torch.Tensor) -> torch.Tensor:
        """The logits (..., V) whose top-k tokens the thought of `hidden` (..., D) mixes: the LM head's."""
        return lm_logits(self._lm, hidden)

    def mixture(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(weights, token ids), each (..., k): the tokens the thought of `hidden` (..., D) mixes."""
        logits = self.scores(hidden)  # (..., V)
        top_logits, top_ids = logits.topk(self.config.k, dim=-1)  # (..., k)
        soft = torch.softmax(top_logits.float() / self.config.temperature, dim=-1)
        if self.config.mode == "softmax":
            return soft, top_ids
        hard = torch.full_like(soft, 1.0 / self.config.k)
        # Forward value exactly `hard` (soft - soft is 0), backward the softmax's gradient.
        return hard + (soft - soft.detach()), top_ids

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        weights, ids = self.mixture(hidden)
        table = self._lm.get_input_embeddings().weight  # (V, D), the live (possibly tied) matrix
        tokens = table[ids]  # (..., k, D)
        return torch.einsum("...k,...kd->...d", weights.to(tokens.dtype), tokens)  # (..., D)

    def extra_repr(self) -> str:
        return f"k={self.config.k}, mode={self.config.mode}, temperature={self.config.temperature}"


class SparseReadoutProjection(SparseVocabProjection):
    """A sparse thought whose tokens a learned readout R picks: sum softmax(top-k of R h / T) E[v].
    R starts as a copy of the LM head's weight (so at the start it picks what sparse_vocab picks for a
    model whose logits are the head's product alone, GPT-2 and Llama), then learns apart from it: the
    LM head keeps predicting the next token, R reads what the thought means. Every thought stays
    literally k weighted vocabulary tokens."""

    def __init__(self, lm: PreTrainedModel, config: ProjectionConfig):
        super().__init__(lm, config)
        head = lm.get_output_embeddings().weight  # (V, D)
        # A copy, not a tie: learning R must not move the LM head. (V, D) like the head's weight,
        # i.e. the D x V readout of the issue transposed; no random draw (a run's stream stays put).
        self.readout = nn.Parameter(head.detach().clone())

    def readout_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """R h: (..., D) -> (..., V), the readout's logits (what the legibility objective's `readout` scores)."""
        return hidden @ self.readout.T.to(hidden.dtype)

    def scores(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.readout_logits(hidden)


class LinearProjection(nn.Module):
    """A learned affine map h -> h + W h + b with W = 0, b = 0 at the start, i.e. `nn.Linear(d, d)`
    initialised to the identity. Written as a residual so that weight decay pulls it towards the
    paper's method rather than towards the zero map."""

    config = ProjectionConfig("linear")

    def __init__(self, dim: int, dtype: torch.dtype = torch.float32):
        super().__init__()
        # skip_init: no random draw, so a run's random stream (and its stage-0 model, which has no
        # thoughts) is the same whichever projection it uses.
        self.delta = nn.utils.skip_init(nn.Linear, dim, dim, dtype=dtype)
        nn.init.zeros_(self.delta.weight)
        nn.init.zeros_(self.delta.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.delta(hidden)


class MLPProjection(nn.Sequential):
    """CODI's projection, laid out as their `prj` (zhenyi4/codi src/model.py:192-200) so that the
    state dicts line up: 0 Dropout, 1 Linear(D, prj_dim), 2 GELU, 3 Linear(prj_dim, D), ln LayerNorm(D)."""

    def __init__(self, dim: int, config: ProjectionConfig, dtype: torch.dtype = torch.float32):
        width = config.prj_dim or dim
        super().__init__(
            nn.Dropout(config.prj_dropout),
            nn.Linear(dim, width, dtype=dtype),
            nn.GELU(),
            nn.Linear(width, dim, dtype=dtype),
        )
        if not config.prj_no_ln:
            self.add_module("ln", nn.LayerNorm(dim, dtype=dtype))
        self.config = config


def build_thought_projection(cfg: str | Mapping | None, lm: PreTrainedModel) -> nn.Module:
    """The projection `cfg` names (see `ProjectionConfig.parse`) for the base model `lm`."""
    config = ProjectionConfig.parse(cfg)
    if config.name == "identity":
        return IdentityProjection()
    if config.name == "sparse_vocab":
        return SparseVocabProjection(lm, config)
    if config.name == "sparse_readout":
        return SparseReadoutProjection(lm, config)
    embeddings = lm.get_input_embeddings().weight
    if config.name == "mlp":
        return MLPProjection(embeddings.shape[1], config, dtype=embeddings.dtype)
    if config.name == "latent_policy":  # sigma measured once and kept in the config the checkpoint stores
        sigma = config.embeds_std if config.embeds_std is not None else float(embeddings.detach().float().std())
        dim = embeddings.shape[1]
        head = LatentPolicy(dim, config.lp_intermediate_size or dim, config.lp_deterministic, sigma, embeddings.dtype)
        head.config = replace(config, embeds_std=sigma)
        return head
    return LinearProjection(embeddings.shape[1], dtype=embeddings.dtype)


def projection_config(projection: nn.Module) -> dict:
    """What a checkpoint stores to rebuild `projection` (a plain `nn.Identity` is the identity)."""
    if isinstance(projection, nn.Identity):
        return {"name": "identity"}
    return projection.config.as_dict()
