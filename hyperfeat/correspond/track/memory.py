"""The memory tracker: a descriptor-based point tracker that follows each query frame by frame.

Cheap ideas from the learned trackers, each one a switch (``video.trackers.memory``, see
:class:`MemorySettings`):

* **Global re-detection** (TAPIR's global matching stage): every frame is searched everywhere as
  well as in a window around the previous position; the global best is taken when it beats the
  local one by ``redetect_margin`` in similarity, or whenever the point was lost in the frame
  before (see below), so a point that comes out from behind an occluder is found again wherever
  it is.
  With ``cycle_select``, when exactly one of the two (local best, global best) matches back into
  the query frame within ``fb_threshold`` cells of the query, that one is taken.
* **Template memory** (CoTracker's track features / DINO-Tracker's refined query): the score map
  mixes the query's own descriptor with the mean of the last ``memory_size`` confident
  appearances of the point (weight ``memory_weight``), so slow appearance change is followed.
* **Fused visibility**: three cues each vote, and a point is visible when at least the fraction
  ``visibility_vote`` of the cues switched on agree (0.5: a majority; 1.0: all of them, an AND,
  which on the benchmark called most visible points occluded):

  - *cosine floor*: the found similarity ``s`` reaches ``min_similarity``;
  - *calibrated margin* (``calibrate``): a similarity means nothing on its own (cosines of one
    describer crowd near 1, of another near 0), so it is read against the query's own levels.
    At the query frame the query is compared with every cell away from it; the
    ``visibility_quantile`` of those distractor similarities is its "not me" level ``b``. The
    similarity found in the first tracked frame (next to the query, where the point is almost
    always in view) is its "me" level ``v``. The cue is ``(s − b) / (v − b) ≥
    visibility_threshold``. When ``v − b ≤ min_margin`` the descriptor does not tell this point
    from its distractors at all (uninformative descriptors: a random backbone, a flat region)
    and the cue abstains by voting visible, so such points are trusted visible instead of all
    being called occluded;
  - *forward–backward agreement* (``cycle_check``): the found descriptor matched back into the
    query frame lands within ``fb_threshold`` cells of the query.

  The confidence is the mean of the cues' graded values (margin clipped to [0, 1], cosine
  clipped to [0, 1], fb ``1 − error / (2 · fb_threshold)`` clipped to [0, 1]).
  Re-detection follows the strictest cue: a point is *lost* (searched globally in the next
  frame) when its cycle fails (without the cycle check: when it is called occluded).
* **Sub-cell refinement**: a soft-argmax over ``refine_radius`` cells around the chosen cell.

Everything a step needs is the current frame's descriptors and the state of the points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch

from hyperfeat.correspond.cells import (
    argmax_cell,
    cycle_error,
    refine_cells,
    sample_descriptors,
    window_mask,
)
from hyperfeat.correspond.track.base import check_frame, check_settings, setting


@dataclass
class MemorySettings:
    """Settings of the memory tracker (``video.trackers.memory``)."""

    track_radius: int = setting(8, "local search window around the previous position, in cells", low=0)
    refine_radius: int = setting(2, "sub-cell soft-argmax window, in cells", low=0)
    refine_temperature: float = setting(0.02, "soft-argmax temperature over cosine similarities", low=0, low_open=True)
    redetect: bool = setting(True, "search the whole frame too; always after a lost frame (failed cycle)")
    redetect_margin: float = setting(0.2, "take the global best when it beats the local one by this", low=0)
    cycle_select: bool = setting(
        True, "of the local and global best, take the one whose forward-backward cycle returns"
    )
    memory_size: int = setting(0, "recent confident appearances kept per point (0: the query alone)", low=0)
    memory_weight: float = setting(0.5, "weight of the memory's mean in the score map", low=0, high=1)
    memory_min_confidence: float = setting(
        0.6, "an appearance enters the memory at this confidence or more", low=0, high=1
    )
    calibrate: bool = setting(True, "margin cue (s − b) / (v − b): b the query's distractor level, v its first match")
    visibility_quantile: float = setting(0.99, "b = this quantile of the query frame's other cells", low=0, high=1)
    visibility_threshold: float = setting(1.0, "the margin cue passes at this", low=0)
    min_margin: float = setting(0.0, "v − b at or below this: uninformative, the margin cue votes visible")
    min_similarity: float = setting(0.5, "cosine-floor cue: visible when s is at least this", low=-1, high=1)
    cycle_check: bool = setting(True, "forward-backward cue: the match, matched back, returns within fb_threshold")
    fb_threshold: float = setting(4.0, "forward-backward tolerance, in cells", low=0)
    visibility_vote: float = setting(
        0.5, "visible when this fraction of the cues switched on agree (1.0: all)", low=0, high=1
    )
    exclude_radius: int = setting(2, "cells around the query left out of its distractors", low=0)

    def __post_init__(self):
        check_settings(self, "video.trackers.memory")


class MemoryGroup:
    """Points that start in one frame, followed one frame at a time in one direction.

    ``query_desc`` (D, h, w) L2-normalised descriptors of the query frame; ``cells`` (n, 2) the
    queries in cell xy. :meth:`step` takes the next frame's (D, h, w) normalised descriptors and
    returns its positions (n, 2) cell xy, visible (n,) bool and confidence (n,) in [0, 1].
    """

    def __init__(self, query_desc: torch.Tensor, cells: torch.Tensor, settings: MemorySettings):
        self.settings = settings
        _, h, w = query_desc.shape
        self.grid = (h, w)
        self.query_flat = query_desc.flatten(1)  # (D, h·w)
        self.start = cells.float()
        self.query_feat = sample_descriptors(query_desc, self.start)  # (n, D)
        self.previous = self.start.clone()
        self.lost = torch.zeros(len(cells), dtype=torch.bool, device=cells.device)
        n, dim = self.query_feat.shape
        self.memory = torch.zeros(n, max(settings.memory_size, 0), dim, device=cells.device)
        self.memory_count = torch.zeros(n, dtype=torch.long, device=cells.device)
        self.memory_next = 0
        # the query's distractor level b: similarities to the query frame's cells away from it
        scores = self.query_feat @ self.query_flat  # (n, h·w)
        near = window_mask(self.start.round().long(), self.grid, int(settings.exclude_radius)).flatten(1)
        others = scores.masked_fill(near, float("nan"))
        self.background = torch.nanquantile(others, float(settings.visibility_quantile), dim=1)  # (n,)
        self.background = torch.nan_to_num(self.background, nan=0.0).clamp(max=0.999)
        self.reference: Union[torch.Tensor, None] = None  # (n,) v, set at the first step

    def _score_map(self, feats: torch.Tensor) -> torch.Tensor:
        s = self.settings
        scores = self.query_feat @ feats  # (n, h·w)
        if s.memory_size > 0 and s.memory_weight > 0:
            filled = self.memory_count.clamp(max=self.memory.shape[1])  # (n,)
            has = filled > 0
            if has.any():
                mean = self.memory.sum(1) / filled.clamp(min=1)[:, None]  # (n, D)
                mem_scores = torch.nn.functional.normalize(mean, dim=1) @ feats
                mixed = (1 - s.memory_weight) * scores + s.memory_weight * mem_scores
                scores = torch.where(has[:, None], mixed, scores)
        return scores

    def _cycle_error(self, feats: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """(n,) cells' descriptors matched back into the query frame (nearest cell): distance to the
        query, in cells. ``feats`` (D, h·w) of the current frame, ``cells`` (n, 2) integer xy."""
        w = self.grid[1]
        return cycle_error(feats[:, cells[:, 1] * w + cells[:, 0]].T, self.query_flat, self.grid, self.start)

    def margin_of(self, similarity: torch.Tensor) -> torch.Tensor:
        """(n,) found similarities → the calibrated margin (s − b) / (v − b); ∞ (votes visible)
        where v − b ≤ ``min_margin`` (the descriptor tells this point from nothing)."""
        b, v = self.background, self.reference
        gap = v - b
        informative = gap > self.settings.min_margin
        margin = (similarity - b) / gap.clamp(min=1e-6)
        return torch.where(informative, margin, torch.full_like(margin, float("inf")))

    @torch.no_grad()
    def step(self, desc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s = self.settings
        h, w = self.grid
        dim = self.query_flat.shape[0]
        check_frame(desc, dim, self.grid)
        feats = desc.flatten(1)  # (D, h·w)
        scores = self._score_map(feats).view(-1, h, w)  # (n, h, w)
        window = window_mask(self.previous.round().long(), self.grid, int(s.track_radius))
        local = scores.masked_fill(~window, float("-inf"))
        chosen = argmax_cell(local)
        if s.redetect:
            best_global = argmax_cell(scores)
            jump = (scores.flatten(1).amax(1) > local.flatten(1).amax(1) + s.redetect_margin) | self.lost
            if s.cycle_select:  # of the local and the global best, the one whose cycle returns
                local_ok = self._cycle_error(feats, chosen) <= s.fb_threshold
                global_ok = self._cycle_error(feats, best_global) <= s.fb_threshold
                jump = torch.where(local_ok != global_ok, global_ok, jump)
            chosen = torch.where(jump[:, None], best_global, chosen)
        position = refine_cells(scores, chosen, int(s.refine_radius), s.refine_temperature)  # (n, 2)
        found = sample_descriptors(desc, position)  # (n, D)
        similarity = (found * self.query_feat).sum(1)
        if s.memory_size > 0 and s.memory_weight > 0 and bool((self.memory_count > 0).any()):
            filled = self.memory_count.clamp(max=self.memory.shape[1])
            mean = torch.nn.functional.normalize(self.memory.sum(1) / filled.clamp(min=1)[:, None], dim=1)
            mixed = (1 - s.memory_weight) * similarity + s.memory_weight * (found * mean).sum(1)
            similarity = torch.where(filled > 0, mixed, similarity)
        if self.reference is None:  # the first tracked frame: the point's own "me" level v
            self.reference = similarity.clone()
        votes, grades = [(similarity >= s.min_similarity)], [similarity.clamp(0, 1)]
        if s.calibrate:
            margin = self.margin_of(similarity)
            votes.append(margin >= s.visibility_threshold)
            grades.append(margin.clamp(0, 1))
        cycle_ok = None
        if s.cycle_check:
            back = (found @ self.query_flat).view(-1, h, w)
            back_pos = refine_cells(back, argmax_cell(back), int(s.refine_radius), s.refine_temperature)
            error = (back_pos - self.start).norm(dim=1)
            cycle_ok = error <= s.fb_threshold
            votes.append(cycle_ok)
            grades.append((1 - error / (2 * max(s.fb_threshold, 1e-6))).clamp(0, 1))
        agree = torch.stack(votes).float().mean(0)  # (n,) fraction of cues that call it visible
        visible = agree >= s.visibility_vote - 1e-6
        confidence = torch.stack(grades).mean(0)
        if s.memory_size > 0:
            keep = visible & (confidence >= s.memory_min_confidence)
            slot = self.memory_next % self.memory.shape[1]
            self.memory[keep, slot] = found[keep]
            self.memory_count[keep] += 1
            self.memory_next += 1
        self.lost = ~cycle_ok if cycle_ok is not None else ~visible
        self.previous = position
        return position, visible, confidence
