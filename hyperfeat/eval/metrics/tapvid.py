"""TAP-Vid point-tracking metrics (Doersch et al. 2022): occlusion accuracy, position accuracy
δ_avg over thresholds 1-16 px and average Jaccard, computed in a 256 × 256 frame on the frames
the query mode evaluates (``first``: after the query, ``strided``: all but the query frame).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from hyperfeat.errors import ConfigError, DataError
from hyperfeat.eval.metrics.encoding import _as_numpy, _scalar
from hyperfeat.geometry import rescale_points

# ============================================================================ TAP-Vid


TAPVID_THRESHOLDS = (1, 2, 4, 8, 16)


TAPVID_SIZE = 256  # tracks are compared in a 256 × 256 frame


def _tapvid_eval_mask(query_frames: np.ndarray, num_frames: int, query_mode: str) -> np.ndarray:
    """(N, T) frames scored for each query: after the query frame ("first"), or all but it ("strided")."""
    frames = np.arange(num_frames)[None]  # (1, T)
    q = query_frames[:, None]  # (N, 1)
    return frames > q if query_mode == "first" else frames != q


def tapvid_video_metrics(
    query_points: np.ndarray,
    gt_tracks: np.ndarray,
    gt_occluded: np.ndarray,
    pred_tracks: np.ndarray,
    pred_occluded: np.ndarray,
    query_mode: str,
) -> dict[str, float]:
    """The TAP-Vid metrics of one video, tracks already in the 256 × 256 frame (official formulas).

    A point is within δ when its squared distance is strictly below δ²; pts_within counts the
    gt-visible points regardless of the predicted occlusion; Jaccard = TP / (gt visible + FP)
    with TP = within δ, gt visible and predicted visible, FP = predicted visible and (gt occluded
    or not within δ). A video without any scored visible point gives NaN for those ratios.
    """
    query_frames = np.round(query_points[:, 0]).astype(np.int64)
    evaluated = _tapvid_eval_mask(query_frames, gt_tracks.shape[1], query_mode)  # (N, T)
    visible, pred_visible = ~gt_occluded, ~pred_occluded
    with np.errstate(invalid="ignore", divide="ignore"):
        out = {"occlusion_accuracy": float(((pred_occluded == gt_occluded) & evaluated).sum() / evaluated.sum())}
        sq_dist = np.square(pred_tracks - gt_tracks).sum(axis=-1)  # (N, T)
        n_visible = (visible & evaluated).sum()
        for delta in TAPVID_THRESHOLDS:
            within = sq_dist < delta**2
            correct = within & visible
            out[f"pts_within_{delta}"] = float((correct & evaluated).sum() / n_visible)
            true_pos = (correct & pred_visible & evaluated).sum()
            false_pos = (((~visible) | (~within)) & pred_visible & evaluated).sum()
            out[f"jaccard_{delta}"] = float(true_pos / (n_visible + false_pos))
    out["average_jaccard"] = float(np.mean([out[f"jaccard_{d}"] for d in TAPVID_THRESHOLDS]))
    out["average_pts_within_thresh"] = float(np.mean([out[f"pts_within_{d}"] for d in TAPVID_THRESHOLDS]))
    return out


TAPVID_KEYS = (
    ("occlusion_accuracy",)
    + tuple(f"pts_within_{d}" for d in TAPVID_THRESHOLDS)
    + tuple(f"jaccard_{d}" for d in TAPVID_THRESHOLDS)
    + ("average_jaccard", "average_pts_within_thresh")
)


class TapVidMetrics(Metric):
    """TAP-Vid point-tracking metrics (Doersch et al. 2022), per video, then averaged over videos.

    ``update`` takes one video: ``query_points`` (N, 3) as **(t, x, y)** (note: the official code
    uses (t, y, x)), ``gt_tracks``/``pred_tracks`` (N, T, 2) (x, y), ``gt_occluded``/
    ``pred_occluded`` (N, T) bool, all in pixels of a ``frame_size_wh`` = (W, H) frame. Tracks are
    scaled to 256 × 256 (x·256/W, y·256/H) before thresholding. ``query_mode`` "first" scores the
    frames after each query's frame; "strided" every frame but the query frame.

    ``compute()`` keys: ``occlusion_accuracy``, ``pts_within_{1,2,4,8,16}``,
    ``jaccard_{1,2,4,8,16}``, ``average_jaccard``, ``average_pts_within_thresh`` (δ_avg), each the
    mean over videos of the per-video value (videos where a value is undefined, e.g. no visible
    scored point, are left out of that mean; the official code would give NaN), and ``num_videos``.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, query_mode: str = "first", **kwargs):
        super().__init__(**kwargs)
        if query_mode not in ("first", "strided"):
            raise ConfigError(f"query_mode must be 'first' or 'strided'; got {query_mode!r}")
        self.query_mode = query_mode
        self.add_state("video_stats", default=[], dist_reduce_fx="cat")  # (1, len(TAPVID_KEYS))

    def update(
        self,
        query_points: torch.Tensor | np.ndarray,
        gt_tracks: torch.Tensor | np.ndarray,
        gt_occluded: torch.Tensor | np.ndarray,
        pred_tracks: torch.Tensor | np.ndarray,
        pred_occluded: torch.Tensor | np.ndarray,
        frame_size_wh: Sequence[int],
    ) -> None:
        q, gt, pred = (
            _as_numpy(x, n).astype(np.float64)
            for x, n in ((query_points, "query_points"), (gt_tracks, "gt_tracks"), (pred_tracks, "pred_tracks"))
        )
        gt_occ, pred_occ = _as_occlusion(gt_occluded, "gt_occluded"), _as_occlusion(pred_occluded, "pred_occluded")
        _check_tracks(q, gt, gt_occ, pred, pred_occ)
        w, h = frame_size_wh
        if not (w > 0 and h > 0):
            raise DataError(f"frame_size_wh must be positive (W, H); got {tuple(frame_size_wh)}")
        to_256 = (TAPVID_SIZE, TAPVID_SIZE)
        video = tapvid_video_metrics(
            q,
            rescale_points(gt, (w, h), to_256),
            gt_occ,
            rescale_points(pred, (w, h), to_256),
            pred_occ,
            self.query_mode,
        )
        row = torch.tensor([[video[k] for k in TAPVID_KEYS]], dtype=torch.float64)
        self.video_stats.append(row.to(self.device))

    def compute(self) -> dict[str, torch.Tensor]:
        if len(self.video_stats) == 0:
            return {"num_videos": _scalar(0)}
        stats = dim_zero_cat(self.video_stats).cpu()  # (V, K)
        out = {k: _scalar(stats[:, i].nanmean()) for i, k in enumerate(TAPVID_KEYS)}
        out["num_videos"] = _scalar(len(stats))
        return out


def _as_occlusion(x: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    arr = _as_numpy(x, name)
    if arr.dtype != bool and not np.isin(arr, (0, 1)).all():
        raise DataError(f"{name} must be boolean (or 0/1) occlusion flags; got values {np.unique(arr)[:5]}")
    return arr.astype(bool)


def _check_tracks(q: np.ndarray, gt: np.ndarray, gt_occ: np.ndarray, pred: np.ndarray, pred_occ: np.ndarray) -> None:
    if gt.ndim != 3 or gt.shape[2] != 2 or pred.shape != gt.shape:
        raise DataError(f"gt_tracks and pred_tracks must both be (N, T, 2); got {gt.shape} and {pred.shape}")
    n, t = gt.shape[:2]
    if gt_occ.shape != (n, t) or pred_occ.shape != (n, t):
        raise DataError(f"gt_occluded and pred_occluded must be ({n}, {t}); got {gt_occ.shape} and {pred_occ.shape}")
    if q.shape != (n, 3):
        raise DataError(f"query_points must be ({n}, 3) as (t, x, y); got {q.shape}")
    frames = np.round(q[:, 0])
    if ((frames < 0) | (frames >= t)).any():
        raise DataError(f"query frames must be in 0..{t - 1}; got {frames.min():g}..{frames.max():g}")
