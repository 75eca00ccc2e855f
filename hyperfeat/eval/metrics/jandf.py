"""DAVIS J&F: region similarity J (IoU) and boundary F-measure per object and frame, with the
official DAVIS-2017 evaluation's boundary extraction and tolerance, as mean / recall / decay.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from hyperfeat.errors import ConfigError, DataError
from hyperfeat.eval.metrics.encoding import (
    _as_numpy,
    _decode_names,
    _encode_name,
    _scalar,
)

# ============================================================================ DAVIS J&F


def region_similarity(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """J (IoU) per frame of boolean masks (T, H, W) → (T,); empty vs empty counts as 1."""
    inter = np.logical_and(gt, pred).sum(axis=(-2, -1))
    union = np.logical_or(gt, pred).sum(axis=(-2, -1))
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """One-pixel boundary map (H, W) bool of a mask, as the DAVIS toolkit's ``seg2bmap``.

    A pixel is on the boundary when it differs from its right, lower or lower-right neighbour
    (last row: right neighbour only; last column: lower neighbour only; corner: never).
    """
    seg = seg.astype(bool)
    e, s, se = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def disk_dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation (H, W) by the disk {dx² + dy² ≤ radius²} (skimage's ``disk``), zero outside.

    Done row by row of the disk: a horizontal dilation by the row's half width (a window sum on a
    cumulative sum), shifted vertically by the row's offset.
    """
    h, w = mask.shape
    csum = np.zeros((h, w + 1), dtype=np.int32)
    np.cumsum(mask, axis=1, out=csum[:, 1:])
    cols = np.arange(w)
    out = np.zeros((h, w), dtype=bool)
    rows_by_half_width: dict[int, np.ndarray] = {}
    for dy in range(-radius, radius + 1):
        half = math.isqrt(radius * radius - dy * dy)
        if half not in rows_by_half_width:
            lo, hi = np.clip(cols - half, 0, w), np.clip(cols + half + 1, 0, w)
            rows_by_half_width[half] = (csum[:, hi] - csum[:, lo]) > 0  # (H, W)
        row = rows_by_half_width[half]
        if dy >= 0:
            out[: h - dy] |= row[dy:]
        else:
            out[-dy:] |= row[: h + dy]
    return out


def boundary_tolerance(size_hw: tuple[int, int], bound_th: float = 0.008) -> int:
    """Match radius in pixels: ``bound_th`` itself if ≥ 1, else ceil(bound_th · image diagonal)."""
    if bound_th >= 1:
        return int(bound_th)
    return int(math.ceil(bound_th * math.hypot(*size_hw)))


def _crop_box(a: np.ndarray, b: np.ndarray, pad: int) -> tuple[slice, slice]:
    """Bounding box of the pixels set in either map, grown by ``pad`` and clipped to the frame."""
    ys, xs = np.nonzero(a | b)
    h, w = a.shape
    rows = slice(max(ys.min() - pad, 0), min(ys.max() + pad + 1, h))
    cols = slice(max(xs.min() - pad, 0), min(xs.max() + pad + 1, w))
    return rows, cols


def boundary_f(gt: np.ndarray, pred: np.ndarray, bound_th: float = 0.008) -> float:
    """F-measure of the boundaries of two boolean masks (H, W), as the DAVIS toolkit's ``f_measure``."""
    gt_b, pred_b = seg2bmap(gt), seg2bmap(pred)
    n_gt, n_pred = int(gt_b.sum()), int(pred_b.sum())
    if n_gt == 0 or n_pred == 0:  # toolkit: P = 1 if nothing predicted, R = 1 if nothing to find
        return 1.0 if n_gt == n_pred else 0.0
    radius = boundary_tolerance(gt.shape, bound_th)
    rows, cols = _crop_box(gt_b, pred_b, radius)  # dilation cannot reach beyond this box
    gt_b, pred_b = gt_b[rows, cols], pred_b[rows, cols]
    precision = (pred_b & disk_dilate(gt_b, radius)).sum() / n_pred
    recall = (gt_b & disk_dilate(pred_b, radius)).sum() / n_gt
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


def db_statistics(values: np.ndarray) -> tuple[float, float, float]:
    """(mean, recall = fraction > 0.5, decay) of per-frame values, as the DAVIS toolkit.

    Decay: mean of the first minus mean of the last of 4 bins, with the toolkit's overlapping
    bin edges ``round(linspace(1, T, 5)) − 1`` (each bin includes its right edge).
    """
    values = np.asarray(values, dtype=np.float64)
    mean, recall = float(np.nanmean(values)), float(np.nanmean(values > 0.5))
    edges = (np.round(np.linspace(1, len(values), 5) + 1e-10) - 1).astype(np.int64)
    bins = [values[edges[i] : edges[i + 1] + 1] for i in range(4)]
    return mean, recall, float(np.nanmean(bins[0]) - np.nanmean(bins[3]))


class JandF(Metric):
    """DAVIS-2017 semi-supervised J&F: region similarity J and boundary F per object.

    ``update(pred_masks, gt_masks, sequence)`` takes a whole sequence (T, H, W) of integer
    object ids (0 = background). As the toolkit: gt id 255 (void) is background; the objects are
    ids 1 … max id of the first gt frame; the first frame (given as input) and the last frame
    are not scored, exactly as the toolkit's semi-supervised evaluation (``masks[:, 1:-1]``), so
    T ≥ 3; prediction ids above the object count are an error. With ``foreground_only`` every
    id > 0 (gt and prediction) is merged into one object.

    Per object: J and F per frame, then mean, recall (fraction of frames > 0.5) and decay.
    ``compute()`` keys (0-dim tensors):

    - ``J&F`` = (J-Mean + F-Mean) / 2; ``J-Mean``, ``J-Recall``, ``J-Decay``, ``F-Mean``,
      ``F-Recall``, ``F-Decay``: means over all objects of all sequences; ``num_objects``;
    - ``obj/<sequence>_<id>/{J-Mean, F-Mean, J&F}`` per object (the toolkit's names);
    - ``seq/<sequence>/{J-Mean, F-Mean, J&F}``: means over the objects of the sequence.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False
    STATS = ("J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")

    def __init__(self, foreground_only: bool = False, bound_th: float = 0.008, **kwargs):
        super().__init__(**kwargs)
        if not bound_th > 0 or (bound_th >= 1 and bound_th != int(bound_th)):
            raise ConfigError(f"bound_th must be a fraction in (0, 1) or a whole number of pixels; got {bound_th}")
        self.foreground_only = bool(foreground_only)
        self.bound_th = float(bound_th)
        self.add_state("object_stats", default=[], dist_reduce_fx="cat")  # (1, 6) per object
        self.add_state("object_id", default=[], dist_reduce_fx="cat")  # (1,)
        self.add_state("object_sequence", default=[], dist_reduce_fx="cat")  # (1, NAME_BYTES)

    def _object_masks(self, masks: np.ndarray) -> tuple[np.ndarray, int]:
        """Masks with void as background (or merged foreground), and the number of objects."""
        masks = np.where(masks == 255, 0, masks)
        if self.foreground_only:
            return (masks > 0).astype(np.int64), 1
        return masks, int(masks[0].max())

    def update(self, pred_masks: torch.Tensor | np.ndarray, gt_masks: torch.Tensor | np.ndarray, sequence: str) -> None:
        pred, gt = _as_numpy(pred_masks, "pred_masks"), _as_numpy(gt_masks, "gt_masks")
        if gt.ndim != 3 or pred.shape != gt.shape or gt.shape[0] < 3:
            raise DataError(
                f"sequence {sequence!r}: pred_masks and gt_masks must both be (T, H, W) with T >= 3 "
                f"(first and last frames are not scored); got {pred.shape} and {gt.shape}"
            )
        gt, num_objects = self._object_masks(gt.astype(np.int64))
        pred = (pred > 0).astype(np.int64) if self.foreground_only else pred.astype(np.int64)
        if num_objects == 0:
            raise DataError(f"sequence {sequence!r}: the first gt frame has no object (ids > 0)")
        if pred.max() > num_objects or pred.min() < 0:
            raise DataError(
                f"sequence {sequence!r}: predicted ids must be in 0..{num_objects} (the first gt frame's "
                f"objects); got {pred.min()}..{pred.max()}"
            )
        gt, pred = gt[1:-1], pred[1:-1]  # (T-2, H, W)
        for obj in range(1, num_objects + 1):
            self._add_object(gt == obj, pred == obj, obj, sequence)

    def _add_object(self, gt: np.ndarray, pred: np.ndarray, obj: int, sequence: str) -> None:
        j = region_similarity(gt, pred)  # (T',)
        f = np.array([boundary_f(g, p, self.bound_th) for g, p in zip(gt, pred)])  # (T',)
        row = torch.tensor([*db_statistics(j), *db_statistics(f)], dtype=torch.float64)[None]
        self.object_stats.append(row.to(self.device))
        self.object_id.append(torch.tensor([obj], device=self.device))
        self.object_sequence.append(_encode_name(sequence, "sequence").to(self.device))

    def compute(self) -> dict[str, torch.Tensor]:
        if len(self.object_stats) == 0:
            return {"num_objects": _scalar(0)}
        stats = dim_zero_cat(self.object_stats).cpu()  # (O, 6)
        ids = dim_zero_cat(self.object_id).cpu().tolist()
        seqs = _decode_names(dim_zero_cat(self.object_sequence))
        out = self._summary(stats, "")
        out["num_objects"] = _scalar(len(stats))
        for k, (seq, obj) in enumerate(zip(seqs, ids)):
            out.update(self._summary(stats[k : k + 1], f"obj/{seq}_{obj}/", short=True))
        for seq in sorted(set(seqs)):
            rows = torch.tensor([s == seq for s in seqs])
            out.update(self._summary(stats[rows], f"seq/{seq}/", short=True))
        return out

    def _summary(self, stats: torch.Tensor, prefix: str, short: bool = False) -> dict[str, torch.Tensor]:
        means = dict(zip(self.STATS, stats.mean(dim=0).tolist()))
        keep = ("J-Mean", "F-Mean") if short else self.STATS
        out = {f"{prefix}J&F": _scalar((means["J-Mean"] + means["F-Mean"]) / 2)}
        out.update({f"{prefix}{k}": _scalar(means[k]) for k in keep})
        return out
