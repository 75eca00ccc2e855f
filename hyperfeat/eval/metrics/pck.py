"""Evaluation metrics as torchmetrics ``Metric`` classes: PCK, DAVIS J&F, TAP-Vid.

Each metric keeps one row per evaluated item (pair, object, video) in "cat" list states, so
that DDP gathers them and ``compute`` sees every item; names (categories, sequences) travel as
fixed-width UTF-8 byte rows. ``compute`` returns a flat ``dict[str, Tensor]`` of 0-dim tensors,
ready for ``LightningModule.log_dict``; fractions are in [0, 1].
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from hyperfeat.errors import ConfigError, DataError
from hyperfeat.eval.metrics.encoding import _decode_names, _encode_name, _scalar

# ============================================================================ PCK


def _pck_thresholds(alphas: torch.Tensor, bbox_xyxy: torch.Tensor | None, image_size_wh: Sequence[int]):
    """Per-alpha thresholds (A,) for "img" and, given a box, "bbox" (else None)."""
    w, h = (float(v) for v in image_size_wh)
    if not (w > 0 and h > 0):
        raise DataError(f"image_size_wh must be positive (W, H); got {tuple(image_size_wh)}")
    img = alphas * max(w, h)
    if bbox_xyxy is None:
        return img, None
    box = torch.as_tensor(bbox_xyxy, dtype=torch.float64).flatten()
    if box.numel() != 4 or not torch.isfinite(box).all() or box[2] < box[0] or box[3] < box[1]:
        raise DataError(f"bbox_xyxy must be finite [x1, y1, x2, y2] with x2 >= x1, y2 >= y1; got {box.tolist()}")
    return img, alphas * torch.maximum(box[2] - box[0], box[3] - box[1])


def _valid_distances(
    pred_xy: torch.Tensor, target_xy: torch.Tensor, valid: torch.Tensor | None, category: str
) -> torch.Tensor:
    """Euclidean distances (M,) of the valid points of a pair, float64 on the CPU."""
    pred_xy, target_xy = torch.as_tensor(pred_xy), torch.as_tensor(target_xy)
    if pred_xy.dim() != 2 or pred_xy.shape[1] != 2 or pred_xy.shape != target_xy.shape:
        raise DataError(
            f"pred_xy and target_xy must both be (N, 2); got {tuple(pred_xy.shape)} and {tuple(target_xy.shape)}"
        )
    n = pred_xy.shape[0]
    valid = torch.ones(n, dtype=torch.bool) if valid is None else torch.as_tensor(valid).bool().cpu()
    if valid.shape != (n,):
        raise DataError(f"valid must be ({n},) to match the points; got {tuple(valid.shape)}")
    dist = (pred_xy.double() - target_xy.double()).norm(dim=1).cpu()[valid]
    if not torch.isfinite(dist).all():
        raise DataError(f"a pair of category {category!r} has non-finite valid points")
    return dist


class PCK(Metric):
    """Percentage of correct keypoints, per keypoint (pooled) and per image, overall and per category.

    A keypoint is correct when ‖pred − target‖ ≤ α·max(bbox h, bbox w) ("bbox", h = y2 − y1,
    w = x2 − x1) or ≤ α·max(image H, W) ("img"), all in original target-image pixels.

    ``compute()`` keys (values are fractions in [0, 1], 0-dim tensors):

    - ``pck_{bbox|img}@{α}``: correct keypoints / keypoints, pooled over all pairs;
    - ``pck_{bbox|img}@{α}_per_image``: mean over pairs of each pair's PCK (pairs with no valid
      keypoint are left out of this mean);
    - ``num_pairs``, ``num_points``;
    - the same under ``cat/<category>/`` for every category, e.g. ``cat/cat/pck_bbox@0.1``.

    α is written with ``{:g}`` (0.05, 0.1, 0.15). "bbox" keys only count the pairs updated with a
    box and are absent when there was none.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, alphas: Sequence[float] = (0.05, 0.1, 0.15), **kwargs):
        super().__init__(**kwargs)
        if not alphas or any(not a > 0 for a in alphas):
            raise ConfigError(f"alphas must be a non-empty list of positive numbers; got {alphas!r}")
        self.alphas = tuple(float(a) for a in alphas)
        # one row per pair: [num_points, has_bbox, correct_bbox (A), correct_img (A)]
        self.add_state("pair_stats", default=[], dist_reduce_fx="cat")
        self.add_state("pair_category", default=[], dist_reduce_fx="cat")

    def update(
        self,
        pred_xy: torch.Tensor,
        target_xy: torch.Tensor,
        bbox_xyxy: torch.Tensor | Sequence[float] | None,
        image_size_wh: Sequence[int],
        category: str,
        valid: torch.Tensor | None = None,
    ) -> None:
        """One pair: predictions and targets (N, 2) in original target-image pixels."""
        dist = _valid_distances(pred_xy, target_xy, valid, category)  # (M,)
        alphas = torch.tensor(self.alphas, dtype=torch.float64)
        img_thr, bbox_thr = _pck_thresholds(alphas, bbox_xyxy, image_size_wh)  # (A,), (A,) or None
        correct_img = (dist[None] <= img_thr[:, None]).sum(dim=1)  # (A,)
        if bbox_thr is None:
            correct_bbox = torch.zeros_like(correct_img)
        else:
            correct_bbox = (dist[None] <= bbox_thr[:, None]).sum(dim=1)
        head = torch.tensor([dist.numel(), int(bbox_thr is not None)])
        row = torch.cat([head, correct_bbox, correct_img]).long()[None]  # (1, 2 + 2A)
        self.pair_stats.append(row.to(self.device))
        self.pair_category.append(_encode_name(category, "category").to(self.device))

    def compute(self) -> dict[str, torch.Tensor]:
        if len(self.pair_stats) == 0:
            return {"num_pairs": _scalar(0), "num_points": _scalar(0)}
        stats = dim_zero_cat(self.pair_stats).cpu()  # (P, 2 + 2A)
        names = _decode_names(dim_zero_cat(self.pair_category))
        out = self._summary(stats, "")
        for cat in sorted(set(names)):
            rows = torch.tensor([name == cat for name in names])
            out.update(self._summary(stats[rows], f"cat/{cat}/"))
        return out

    def _summary(self, stats: torch.Tensor, prefix: str) -> dict[str, torch.Tensor]:
        a = len(self.alphas)
        points, has_bbox = stats[:, 0].double(), stats[:, 1].bool()
        out = {f"{prefix}num_pairs": _scalar(len(stats)), f"{prefix}num_points": _scalar(points.sum())}
        kinds = (("bbox", stats[:, 2 : 2 + a], has_bbox), ("img", stats[:, 2 + a :], torch.ones_like(has_bbox)))
        for kind, correct, rows in kinds:
            if not rows.any():
                continue
            n, c = points[rows], correct[rows].double()  # (P',), (P', A)
            pooled = c.sum(0) / n.sum() if n.sum() > 0 else torch.full((a,), math.nan)
            scored = n > 0
            per_image = (c[scored] / n[scored, None]).mean(0) if scored.any() else torch.full((a,), math.nan)
            for i, alpha in enumerate(self.alphas):
                out[f"{prefix}pck_{kind}@{alpha:g}"] = _scalar(pooled[i])
                out[f"{prefix}pck_{kind}@{alpha:g}_per_image"] = _scalar(per_image[i])
        return out
