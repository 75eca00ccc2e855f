"""The appearance tracker, for points whose look changes (the state-change analysis).

Matching the query's own descriptor in every frame loses a point that is painted, cut or
re-textured, exactly where the analysis must read it. Here each step's template mixes the query
with the point's look in the frame before, ``(1 − template_update) · query + template_update ·
previous``; the local search (``track_radius`` cells, motion prior ``motion_penalty``, no global
jump) keeps a point near where it was in the frame of an abrupt change, and from the next frame
on the template carries its new look. The search is centred on previous + ``velocity`` × last
step, so a moving point keeps moving where its look says nothing. A position is visible when its
frame-to-frame cycle closes: its descriptor, searched back in the previous frame within
``track_radius`` cells (no motion prior, which would close any cycle), lands within
``cycle_threshold`` cells of the previous position.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hyperfeat.correspond.cells import (
    argmax_cell,
    clamp_cells,
    refine_cells,
    sample_descriptors,
    squared_distance,
    window_mask,
)
from hyperfeat.correspond.track.base import check_frame, check_settings, setting


@dataclass
class AppearanceSettings:
    """Settings of the appearance tracker (``video.trackers.appearance``)."""

    track_radius: int = setting(8, "local search window around the predicted position, in cells", low=0)
    template_update: float = setting(
        0.5, "weight of the previous frame's look in the template (0: the query alone)", low=0, high=1
    )
    motion_penalty: float = setting(1.0, "local search: similarity − this × (distance / track_radius)²", low=0)
    velocity: float = setting(1.0, "search around previous + this × last step (0: around the previous position)", low=0)
    cycle_threshold: float = setting(2.0, "visible when the frame-to-frame cycle returns within this many cells", low=0)
    refine_radius: int = setting(2, "sub-cell soft-argmax window, in cells", low=0)
    refine_temperature: float = setting(0.02, "soft-argmax temperature over cosine similarities", low=0, low_open=True)

    def __post_init__(self):
        check_settings(self, "video.trackers.appearance")


def _local(scores: torch.Tensor, centre: torch.Tensor, radius: int, penalty: float) -> torch.Tensor:
    """scores (n, h, w) outside ``radius`` cells of ``centre`` (n, 2) set to −inf, minus
    ``penalty`` · (d / radius)², d the distance in cells from the centre."""
    h, w = scores.shape[-2:]
    local = scores.masked_fill(~window_mask(centre.round().long(), (h, w), radius), float("-inf"))
    if penalty > 0:
        local = local - penalty * squared_distance(centre, (h, w)) / max(float(radius), 1.0) ** 2
    return local


class AppearanceGroup:
    """Points of one query frame followed by the appearance tracker (see the module docstring)."""

    def __init__(self, query_desc: torch.Tensor, cells: torch.Tensor, settings: AppearanceSettings):
        self.settings = settings
        self.dim, h, w = query_desc.shape
        self.grid = (h, w)
        self.previous = cells.float()  # (n, 2)
        self.query_feat = sample_descriptors(query_desc, self.previous)  # (n, D)
        self.previous_feat = self.query_feat
        self.previous_desc = query_desc  # (D, h, w)
        self.last_step = torch.zeros_like(self.previous)

    @torch.no_grad()
    def step(self, desc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s = self.settings
        h, w = self.grid
        check_frame(desc, self.dim, self.grid)
        template = F.normalize(
            (1 - s.template_update) * self.query_feat + s.template_update * self.previous_feat, dim=1
        )
        scores = (template @ desc.flatten(1)).view(-1, h, w)  # (n, h, w)
        predicted = self.previous + s.velocity * self.last_step
        predicted = clamp_cells(predicted, self.grid)
        local = _local(scores, predicted, s.track_radius, s.motion_penalty)
        position = refine_cells(scores, argmax_cell(local), s.refine_radius, s.refine_temperature)  # (n, 2)
        found = sample_descriptors(desc, position)  # (n, D)
        back = (found @ self.previous_desc.flatten(1)).view(-1, h, w)  # (n, h, w)
        back_local = _local(back, position, s.track_radius, 0.0)  # no prior: an honest cycle
        back_pos = refine_cells(back, argmax_cell(back_local), s.refine_radius, s.refine_temperature)
        visible = (back_pos - self.previous).norm(dim=1) <= s.cycle_threshold
        self.last_step = position - self.previous
        self.previous, self.previous_feat, self.previous_desc = position, found, desc
        return position, visible, visible.float()
