"""Thought hooks for `ContinuousThoughtLM.run`: record the thoughts each question is fed, or feed
others in their place (the ablations that ask whether the thoughts are load-bearing), or edit some
of them and let the model carry on from there (the interventions of causal legibility).

A hook is built for one prompt batch, since a row's n-th thought sits in a column that depends on
its padding: it is the n-th `<|latent|>` of that row.
"""

from __future__ import annotations

import torch


def _latent_columns(input_ids: torch.Tensor, latent_id: int) -> list[list[int]]:
    return [row.nonzero().flatten().tolist() for row in input_ids == latent_id]


class ThoughtRecorder:
    """Keeps what every latent column was fed; `per_row()` gives each row's thoughts in order."""

    def __init__(self, input_ids: torch.Tensor, latent_id: int):
        self.columns_of_row = _latent_columns(input_ids, latent_id)
        self.fed: dict[int, torch.Tensor] = {}  # column -> (B, D)

    def __call__(self, thoughts: torch.Tensor, column: int) -> torch.Tensor:
        self.fed[column] = thoughts[:, 0].detach()
        return thoughts

    def per_row(self) -> list[torch.Tensor]:
        """(n_i, D) float32 CPU tensors, one per row (n_i = 0 for a row without thoughts)."""
        rows = []
        for b, columns in enumerate(self.columns_of_row):
            if columns:
                rows.append(torch.stack([self.fed[c][b] for c in columns]).float().cpu())
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
