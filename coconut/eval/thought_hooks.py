"""Thought hooks for `ContinuousThoughtLM.run`: record the thoughts each question is fed, or feed
others in their place (the ablations that ask whether the thoughts are load-bearing), or edit some
of them and let the model carry on from there (the interventions of causal legibility).

A hook is built for one prompt batch, since a row's n-th thought sits in a column that depends on
its padding: it is the n-th `<|latent|>` of that row.
"""

from __future__ import annotations

import torch
from torch import nn


def _latent_columns(input_ids: torch.Tensor, latent_id: int) -> list[list[int]]:
    return [row.nonzero().flatten().tolist() for row in input_ids == latent_id]


class ThoughtRecorder:
    """Keeps what every latent column was fed; `per_row()` gives each row's thoughts in order.

    Given the model's thought `projection`, it also keeps what each thought was projected from (the
    hidden state before the latent; `sources_per_row()`), through a forward pre-hook on the projection
    that `close()` removes: a `sparse_readout` thought is read by its readout on that state.
    """

    def __init__(self, input_ids: torch.Tensor, latent_id: int, projection: nn.Module | None = None):
        self.columns_of_row = _latent_columns(input_ids, latent_id)
        self.fed: dict[int, torch.Tensor] = {}  # column -> (B, D)
        self.sources: dict[int, torch.Tensor] = {}  # column -> (B, D), with a projection
        self._projected_from: torch.Tensor | None = None  # the projection's last input (B, 1, D)
        self._handle = None
        if projection is not None:
            # The model calls the projection on a column's state, then this hook on its result:
            # the input seen last is the source of the thought passed next.
            self._handle = projection.register_forward_pre_hook(self._keep_input)

    def _keep_input(self, _module: nn.Module, args: tuple) -> None:
        self._projected_from = args[0]

    def __call__(self, thoughts: torch.Tensor, column: int) -> torch.Tensor:
        self.fed[column] = thoughts[:, 0].detach()
        if self._projected_from is not None:
            self.sources[column] = self._projected_from[:, 0].detach()
            self._projected_from = None  # each input is the source of one column's thoughts only
        return thoughts

    def close(self) -> None:
        """Removes the projection hook (a no-op without a projection)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def per_row(self) -> list[torch.Tensor]:
        """(n_i, D) float32 CPU tensors, one per row (n_i = 0 for a row without thoughts)."""
        return self._rows(self.fed)

    def sources_per_row(self) -> list[torch.Tensor]:
        """What each row's thoughts were projected from, as `per_row()`; empty for a row with a
        thought the projection did not make (or recorded without the projection)."""
        return self._rows(self.sources)

    def _rows(self, by_column: dict[int, torch.Tensor]) -> list[torch.Tensor]:
        rows = []
        for b, columns in enumerate(self.columns_of_row):
            if columns and all(c in by_column for c in columns):
                rows.append(torch.stack([by_column[c][b] for c in columns]).float().cpu())
            else:
                rows.append(torch.empty(0))
        return rows


class ThoughtReplacement:
    """Feeds given vectors instead of the model's thoughts: row b's n-th thought becomes
    `replacements[b][n]`, or `fallback` where a replacement row is shorter."""

    def __init__(
        self,
        input_ids: torch.Tensor,
        latent_id: int,
        replacements: list[torch.Tensor],
        fallback: torch.Tensor,
    ):
        batch, width = input_ids.shape
        dim = fallback.shape[-1]
        self.table = torch.zeros(batch, width, dim, dtype=fallback.dtype, device=input_ids.device)  # (B, T, D)
        for b, columns in enumerate(_latent_columns(input_ids, latent_id)):
            for n, column in enumerate(columns):
                source = replacements[b]
                self.table[b, column] = source[n] if n < len(source) else fallback

    def __call__(self, thoughts: torch.Tensor, column: int) -> torch.Tensor:
        return self.table[:, column : column + 1].to(thoughts.dtype)  # (B, 1, D)


class ThoughtEdit:
    """Feeds `vector` in place of some of a row's thoughts and lets the model compute the rest:
    `edits` maps a row to (the numbers n of its thoughts to replace, the vector (D,) fed there). The
    thoughts after an edited one follow from it (causal legibility, coconut/eval/intervention.py)."""

    def __init__(self, input_ids: torch.Tensor, latent_id: int, edits: dict[int, tuple[range, torch.Tensor]]):
        batch, width = input_ids.shape
        self.edited = torch.zeros(batch, width, dtype=torch.bool, device=input_ids.device)  # (B, T)
        self.table: torch.Tensor | None = None  # (B, T, D)
        for b, columns in enumerate(_latent_columns(input_ids, latent_id)):
            if b not in edits:
                continue
            numbers, vector = edits[b]
            if self.table is None:
                self.table = torch.zeros(batch, width, vector.shape[-1], dtype=vector.dtype, device=input_ids.device)
            for n in numbers:
                if n < len(columns):
                    self.edited[b, columns[n]] = True
                    self.table[b, columns[n]] = vector

    def __call__(self, thoughts: torch.Tensor, column: int) -> torch.Tensor:
        if self.table is None:
            return thoughts
        replaced = self.table[:, column : column + 1].to(thoughts.dtype)  # (B, 1, D)
        return torch.where(self.edited[:, column, None, None], replaced, thoughts)
