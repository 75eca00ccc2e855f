"""The window tracker (the original point tracker): each query's own descriptor matched in a
window around its previous position, a jump to the global best when it is far better, a fixed
cosine floor and a cycle back to the query frame for visibility."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hyperfeat.correspond.cells import argmax_cell, refine_cells, sample_descriptors, window_mask
from hyperfeat.correspond.track.base import check_frame, check_settings, setting


@dataclass
class WindowSettings:
    """Settings of the window tracker (``video.trackers.window``)."""

    track_radius: int = setting(8, "local search window around the previous position, in cells", low=0)
    cycle_threshold: float = setting(
        2.0, "visible when the match, matched back into the query frame, lands within this many cells", low=0
    )
    min_similarity: float = setting(
        0.5, "visible when the cosine similarity to the query is at least this", low=-1, high=1
    )
    refine_radius: int = setting(2, "sub-cell soft-argmax window, in cells", low=0)
    refine_temperature: float = setting(0.02, "soft-argmax temperature over cosine similarities", low=0, low_open=True)
    reacquire_margin: float = setting(0.1, "jump to the global best match when it beats the local one by this", low=0)

    def __post_init__(self):
        check_settings(self, "video.trackers.window")


class WindowGroup:
    """Points of one query frame followed by the window tracker (see the module docstring)."""

    def __init__(self, query_desc: torch.Tensor, cells: torch.Tensor, settings: WindowSettings):
        self.settings = settings
        self.dim, h, w = query_desc.shape
        self.grid = (h, w)
        self.query_flat = query_desc.flatten(1)  # (D, h·w)
        self.start = cells.float()  # (n, 2)
        self.query_feat = sample_descriptors(query_desc, self.start)  # (n, D)
        self.previous = self.start.clone()

    @torch.no_grad()
    def step(self, desc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s = self.settings
        check_frame(desc, self.dim, self.grid)
        scores = (self.query_feat @ desc.flatten(1)).view(-1, *self.grid)  # (n, h, w)
        local = scores.masked_fill(~window_mask(self.previous.round().long(), self.grid, s.track_radius), float("-inf"))
        jump = scores.flatten(1).amax(1) > local.flatten(1).amax(1) + s.reacquire_margin
        chosen = torch.where(jump[:, None], argmax_cell(scores), argmax_cell(local))
        position = refine_cells(scores, chosen, s.refine_radius, s.refine_temperature)  # (n, 2)
        found = sample_descriptors(desc, position)  # (n, D)
        similarity = (found * self.query_feat).sum(1)
        back = (found @ self.query_flat).view(-1, *self.grid)
        back_pos = refine_cells(back, argmax_cell(back), s.refine_radius, s.refine_temperature)
        visible = ((back_pos - self.start).norm(dim=1) <= s.cycle_threshold) & (similarity >= s.min_similarity)
        self.previous = position
        return position, visible, visible.float()
