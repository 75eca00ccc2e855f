"""The coherent tracker: points tracked together, each carried by the motion of its neighbours.

A single descriptor match is unreliable on real footage: the point's look changes, it passes
behind something, a look-alike sits nearby. Joint trackers (CoTracker and its kin) gain from
tracking many points together, because points close on the query frame mostly move together.
This tracker brings that to any describer, with no learning:

* **Support points.** Beside the queries, a grid of support points (every ``support_spacing``
  cells of the query frame) is tracked too, so every query has neighbours.
* **A raw match per point**: the best cell within ``track_radius`` of its previous position for a
  template mixing the query's look with its latest confident look (``recent_weight``).
* **Neighbour motion**: each point's predicted step is the weighted median of its neighbours'
  raw steps; a neighbour's weight is its closeness on the query frame (Gaussian,
  ``neighbour_sigma`` cells), its likeness to the point there (``exp((cos − 1) / neighbour_tau)``,
  so the background does not drag an object's points) and the distinctiveness of its own match.
* **The final match** searches around the prediction with a motion prior (``motion_penalty``)
  and a sub-cell soft-argmax; a point predicted outside the frame, or whose match disagrees with
  its neighbours, follows the prediction.
* **Visibility from evidence**: a logistic score of the match's similarity to the query and to
  the point's recent look and its distinctiveness (best minus the best far from it in the whole
  frame), each read between the point's own levels (its distractors' similarity on the query
  frame and its first match), the forward–backward error back to the query frame and the
  disagreement with the neighbours. The weights
  (``visibility_weights``) were fitted on half of the TAP-Vid-DAVIS clips (see
  ``benchmarks/tracking.py``); a point is visible when the score is ≥ 0, its confidence is the
  score's sigmoid.
* **Re-detection**: the global best is taken, for a point called occluded in the frame before or
  whose local match does not return to it on the query frame, when its similarity beats the local
  one by ``redetect_margin`` and its cycle returns within ``cycle_radius`` cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hyperfeat.correspond.cells import (
    argmax_cell,
    clamp_cells,
    cycle_error,
    refine_cells,
    sample_descriptors,
    scores_at,
    squared_distance,
    window_mask,
)
from hyperfeat.correspond.track.base import check_frame, check_settings, setting
from hyperfeat.errors import ConfigError

# the visibility score's inputs, in the order of CoherentSettings.visibility_weights (+ bias last)
VISIBILITY_FEATURES = ("query_margin", "recent_margin", "distinctiveness", "cycle_error", "neighbour_disagreement")


@dataclass
class CoherentSettings:
    """Settings of the coherent tracker (``video.trackers.coherent``); the defaults were chosen on
    the chosen half of the TAP-Vid-DAVIS clips with the classical describer (``benchmarks/tracking.py``)."""

    track_radius: int = setting(8, "raw match: search window around the previous position, in cells", low=0)
    refine_radius: int = setting(2, "sub-cell soft-argmax window, in cells", low=0)
    refine_temperature: float = setting(0.02, "soft-argmax temperature over cosine similarities", low=0, low_open=True)
    support_spacing: int = setting(
        8, "support points tracked beside the queries, every this many cells (0: none)", low=0
    )
    neighbour_sigma: float = setting(
        8.0, "neighbours' closeness on the query frame: Gaussian std, in cells", low=0, low_open=True
    )
    neighbour_tau: float = setting(0.1, "neighbours' likeness weight exp((cos − 1) / tau)", low=0, low_open=True)
    recent_weight: float = setting(
        0.3, "template = (1 − this) · query look + this · latest confident look", low=0, high=1
    )
    final_radius: int = setting(8, "final match: search window around the neighbours' prediction, in cells", low=0)
    motion_penalty: float = setting(
        0.2, "final match: similarity − this × (distance to prediction / final_radius)²", low=0
    )
    follow_threshold: float = setting(
        3.0, "a match this many cells from the prediction follows the prediction …", low=0
    )
    follow_margin: float = setting(0.05, "… unless its similarity beats the prediction's by this", low=0)
    refine_on_query: bool = setting(True, "sub-cell refinement on the query look's scores alone (else the template's)")
    redetect: bool = setting(True, "a point called occluded is searched in the whole frame next")
    redetect_margin: float = setting(0.1, "… and jumps when the global best beats the local one by this", low=0)
    cycle_radius: float = setting(2.0, "… and its cycle to the query frame returns within this many cells", low=0)
    distinct_radius: int = setting(3, "distinctiveness: the best match against the best beyond this many cells", low=1)
    visibility_weights: list = setting(
        [0.664, 1.136, -0.062, -0.114, -0.188, 0.75],
        "the visibility score's weights over VISIBILITY_FEATURES, then its bias",
    )

    def __post_init__(self):
        check_settings(self, "video.trackers.coherent")
        if len(self.visibility_weights) != len(VISIBILITY_FEATURES) + 1:
            raise ConfigError(
                f"video.trackers.coherent.visibility_weights must hold {len(VISIBILITY_FEATURES) + 1} "
                f"numbers (one per feature, then the bias); got {len(self.visibility_weights)}"
            )


def _weighted_median(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """values (m,), weights (n, m) ≥ 0 → (n,) the weighted median of ``values`` under each row of
    weights (0 where a row's weights are all 0)."""
    order = values.argsort()
    sorted_values = values[order]
    cumulative = weights[:, order].cumsum(1)  # (n, m)
    total = cumulative[:, -1:]
    index = (cumulative < 0.5 * total).sum(1).clamp(max=len(values) - 1)
    return torch.where(total[:, 0] > 0, sorted_values[index], torch.zeros_like(index, dtype=values.dtype))


class CoherentGroup:
    """Points that start in one frame, followed one frame at a time in one direction (see the
    module docstring). ``query_desc`` (D, h, w) L2-normalised; ``cells`` (n, 2) query cell xy."""

    def __init__(self, query_desc: torch.Tensor, cells: torch.Tensor, settings: CoherentSettings):
        self.settings = s = settings
        self.dim, h, w = query_desc.shape
        self.grid = (h, w)
        self.num_queries = len(cells)
        device = cells.device
        support = torch.zeros(0, 2, device=device)
        if s.support_spacing > 0:
            spacing = int(s.support_spacing)
            ys = torch.arange(spacing // 2, h, spacing, dtype=torch.float32, device=device)
            xs = torch.arange(spacing // 2, w, spacing, dtype=torch.float32, device=device)
            gy, gx = torch.meshgrid(ys, xs, indexing="ij")
            support = torch.stack([gx.flatten(), gy.flatten()], 1)
        self.start = torch.cat([cells.float(), support])  # (n + m, 2)
        self.query_flat = query_desc.flatten(1)  # (D, h·w)
        self.query_feat = sample_descriptors(query_desc, self.start)  # (n + m, D)
        self.recent_feat = self.query_feat.clone()
        self.position = self.start.clone()
        self.visible = torch.ones(len(self.start), dtype=torch.bool, device=device)
        self.reference = None  # (n + m,) v: each point's similarity to its query at the first step
        # b: the point's "not me" level, a high quantile of its similarity to the query frame's other cells
        others = (self.query_feat @ self.query_flat).masked_fill(
            window_mask(self.start.round().long(), self.grid, 2).flatten(1), float("nan")
        )  # (P, h·w)
        self.background = torch.nan_to_num(torch.nanquantile(others, 0.99, dim=1), nan=0.0)  # (P,)
        # neighbour weights: closeness × likeness on the query frame, no self-weight
        distance2 = (self.start[:, None] - self.start[None]).pow(2).sum(-1)  # (P, P)
        likeness = self.query_feat @ self.query_feat.T
        self.neighbours = torch.exp(-distance2 / (2 * s.neighbour_sigma**2)) * torch.exp(
            (likeness - 1) / s.neighbour_tau
        )
        self.neighbours.fill_diagonal_(0)

    def _cycle_error(self, feats: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """(P,) the descriptors at integer ``cells`` (P, 2) of the current frame (``feats`` (D, h·w))
        matched back into the query frame (nearest cell): distance to the point's start, in cells."""
        w = self.grid[1]
        return cycle_error(feats[:, cells[:, 1] * w + cells[:, 0]].T, self.query_flat, self.grid, self.start)

    def _template(self) -> torch.Tensor:
        w = self.settings.recent_weight
        return F.normalize((1 - w) * self.query_feat + w * self.recent_feat, dim=1)  # (P, D)

    def _inside(self, xy: torch.Tensor) -> torch.Tensor:
        h, w = self.grid
        return (xy[:, 0] >= -0.5) & (xy[:, 0] <= w - 0.5) & (xy[:, 1] >= -0.5) & (xy[:, 1] <= h - 0.5)

    @torch.no_grad()
    def step(self, desc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The next frame's (D, h, w) normalised descriptors → the queries' positions (n, 2) cell
        xy (may lie outside the grid when the point left the frame), visible (n,) bool and
        confidence (n,) in [0, 1]."""
        s = self.settings
        h, w = self.grid
        check_frame(desc, self.dim, self.grid)
        feats = desc.flatten(1)  # (D, h·w)
        template = self._template()  # (P, D)
        scores = (template @ feats).view(-1, h, w)  # (P, h, w)
        # 1. raw match near the previous position, and its distinctiveness
        anchor = clamp_cells(self.position, self.grid)
        window = window_mask(anchor.round().long(), self.grid, int(s.track_radius))
        raw_cell = argmax_cell(scores.masked_fill(~window, float("-inf")))
        raw = refine_cells(scores, raw_cell, int(s.refine_radius), s.refine_temperature)  # (P, 2)
        best = scores_at(scores, raw_cell)
        far = window_mask(raw_cell, self.grid, int(s.distinct_radius))
        second = scores.masked_fill(far | ~window, float("-inf")).flatten(1).amax(1)
        reliability = (best - second).clamp(min=0) * self.visible.float()  # (P,)
        # 2. neighbour motion: the weighted median of the neighbours' raw steps
        steps = raw - anchor
        weights = self.neighbours * reliability[None]
        motion = torch.stack([_weighted_median(steps[:, 0], weights), _weighted_median(steps[:, 1], weights)], 1)
        has_neighbours = weights.sum(1) > 1e-6
        predicted = torch.where(has_neighbours[:, None], self.position + motion, raw)  # (P, 2)
        # 3. final match around the prediction, with the motion prior
        centre = clamp_cells(predicted, self.grid)
        final_window = window_mask(centre.round().long(), self.grid, int(s.final_radius))
        prior = s.motion_penalty * squared_distance(centre, self.grid) / max(float(s.final_radius), 1.0) ** 2
        local = (scores - prior).masked_fill(~final_window, float("-inf"))
        cell = argmax_cell(local)
        if s.redetect:  # the global best when clearly better and its cycle returns, for a point that
            # was lost in the frame before or whose local match does not return
            global_cell = argmax_cell(scores)
            gain = scores_at(scores, global_cell) - scores_at(scores, cell)
            returns = self._cycle_error(feats, global_cell) <= s.cycle_radius
            local_returns = self._cycle_error(feats, cell) <= s.cycle_radius
            jump = (~self.visible | ~local_returns) & (gain > s.redetect_margin) & returns
            cell = torch.where(jump[:, None], global_cell, cell)
        else:
            jump = torch.zeros_like(self.visible)
        refine_scores = (self.query_feat @ feats).view(-1, h, w) if s.refine_on_query else scores
        matched = refine_cells(refine_scores, cell, int(s.refine_radius), s.refine_temperature)  # (P, 2)
        found = sample_descriptors(desc, matched)  # (P, D)
        query_similarity = (found * self.query_feat).sum(1)
        # a match far from the prediction and not clearly better than it follows the prediction
        at_prediction = sample_descriptors(desc, centre)
        prediction_similarity = (at_prediction * template).sum(1)
        match_similarity = (found * template).sum(1)
        disagreement = (matched - predicted).norm(dim=1)
        follow = (
            ~jump
            & has_neighbours
            & (disagreement > s.follow_threshold)
            & (match_similarity < prediction_similarity + s.follow_margin)
        )
        outside = ~self._inside(predicted) & ~jump
        follow = follow | outside
        position = torch.where(follow[:, None], predicted, matched)
        # 4. visibility from evidence
        if self.reference is None:
            self.reference = query_similarity.clone()
        recent_similarity = (found * F.normalize(self.recent_feat, dim=1)).sum(1)
        near = window_mask(cell, self.grid, int(s.distinct_radius))
        distinct = scores_at(scores, cell) - scores.masked_fill(near, float("-inf")).flatten(1).amax(1)
        cycle = cycle_error(found, self.query_flat, self.grid, self.start)
        # similarities read between the point's own levels b (its distractors on the query frame) and
        # v (its first match), so that the weights carry over between describers whose cosines live
        # on different scales
        gap = (self.reference - self.background).clamp(min=0.05)
        evidence = torch.stack(
            [
                (query_similarity - self.background) / gap,
                (recent_similarity - self.background) / gap,
                (distinct / gap).clamp(max=2.0),
                cycle.clamp(max=10.0),
                disagreement.clamp(max=10.0),
            ],
            1,
        )  # (P, 5)
        self.evidence = evidence
        weights_v = torch.tensor(s.visibility_weights, dtype=evidence.dtype, device=evidence.device)
        logit = evidence @ weights_v[:-1] + weights_v[-1]
        visible = (logit >= 0) & ~outside
        confidence = torch.sigmoid(logit) * (~outside).float()
        # 5. the state: confident looks update the recent template
        update = visible & ~follow
        self.recent_feat = torch.where(update[:, None], found, self.recent_feat)
        self.position = position
        self.visible = visible
        n = self.num_queries
        return position[:n], visible[:n], confidence[:n]
