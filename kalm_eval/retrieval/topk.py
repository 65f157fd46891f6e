"""Exact top-k with ties over score blocks (the dense search's running result, shard by shard and in the merge)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


class TopK:
    """A running exact top-k per query that keeps ties: after any sequence of adds, each row holds every candidate
    whose score is >= the row's k-th best score so far (padded with -inf / position -1)."""

    def __init__(self, n_rows: int, k: int, device):
        import torch

        self.k = k
        self.values = torch.full((n_rows, 0), float("-inf"), device=device)
        self.positions = torch.full((n_rows, 0), -1, dtype=torch.int64, device=device)

    def add_scores(self, scores, offset: int) -> None:
        """Add a block of scores (rows x columns) for corpus positions offset .. offset+columns-1."""
        import torch

        width = min(self.k, scores.shape[1])
        top = torch.topk(scores, width, dim=1)
        if width == scores.shape[1]:
            values, columns = top.values, top.indices
        else:
            kth = top.values[:, -1:]
            tied = int((scores >= kth).sum(dim=1).max())
            if tied > width:  # some row has ties at its k-th score that topk cut: take them all
                top = torch.topk(scores, tied, dim=1)
            values, columns = top.values, top.indices
        self.merge(values, columns + offset)

    def merge(self, values, positions) -> None:
        import torch

        values = torch.cat([self.values, values], dim=1)
        positions = torch.cat([self.positions, positions], dim=1)
        values = torch.where(positions >= 0, values, torch.full_like(values, float("-inf")))
        if values.shape[1] > self.k:
            kth = torch.topk(values, self.k, dim=1).values[:, -1:]
            keep = (values >= kth) & (positions >= 0)
            width = int(keep.sum(dim=1).max())
            order = torch.sort(values, dim=1, descending=True, stable=True).indices[:, :width]
            values = torch.gather(values, 1, order)
            positions = torch.gather(positions, 1, order)
            dropped = ~torch.gather(keep, 1, order)
            values = values.masked_fill(dropped, float("-inf"))
            positions = positions.masked_fill(dropped, -1)
        self.values, self.positions = values, positions

    def rows(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(scores, positions) of each row's kept candidates."""
        values = self.values.cpu().numpy()
        positions = self.positions.cpu().numpy()
        for row_values, row_positions in zip(values, positions):
            keep = row_positions >= 0
            yield row_values[keep].astype(np.float32), row_positions[keep].astype(np.int64)
