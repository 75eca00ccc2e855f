"""Evaluation metrics as torchmetrics ``Metric`` classes: PCK, DAVIS J&F, TAP-Vid.

Each metric keeps one row per evaluated item (pair, object, video) in "cat" list states, so
that DDP gathers them and ``compute`` sees every item; names (categories, sequences) travel as
fixed-width UTF-8 byte rows. ``compute`` returns a flat ``dict[str, Tensor]`` of 0-dim tensors,
ready for ``LightningModule.log_dict``; fractions are in [0, 1].
"""

from __future__ import annotations

import math
import re
from typing import Sequence

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from hyperfeat.errors import ConfigError, DataError

NAME_BYTES = 64  # longest category / sequence name, in UTF-8 bytes


# ---------------------------------------------------------------------------- shared helpers


def _encode_name(name: str, what: str) -> torch.Tensor:
    """A name as a (1, NAME_BYTES) uint8 row, zero padded."""
    if not isinstance(name, str) or not name:
        raise DataError(f"{what} must be a non-empty string; got {name!r}")
    raw = name.encode("utf-8")
    if len(raw) > NAME_BYTES or b"\0" in raw:
        raise DataError(f"{what} {name!r} must be at most {NAME_BYTES} UTF-8 bytes without NUL")
    row = torch.zeros(1, NAME_BYTES, dtype=torch.uint8)
    row[0, : len(raw)] = torch.tensor(list(raw), dtype=torch.uint8)
    return row


def _decode_names(rows: torch.Tensor) -> list[str]:
    return [bytes(r).rstrip(b"\0").decode("utf-8") for r in rows.cpu().tolist()]


def _as_numpy(x: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    raise DataError(f"{name} must be a tensor or numpy array; got {type(x).__name__}")


def _scalar(value: float) -> torch.Tensor:
    return torch.tensor(float(value), dtype=torch.float32)


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


_PCK_KEY = re.compile(r"^pck_(bbox|img)@([0-9.e-]+)(_per_image)?$")


def _pck_columns(results: dict) -> list[tuple[str, str, bool]]:
    """(key, header, per_image) of the overall PCK keys: pooled first, then bbox before img, by α."""
    parsed = []
    for key in results:
        m = _PCK_KEY.match(key)
        if m:
            parsed.append((bool(m.group(3)), m.group(1), float(m.group(2)), key, f"{m.group(1)}@{m.group(2)}"))
    return [(key, header, per_image) for per_image, _, _, key, header in sorted(parsed)]


def format_pck(results: dict[str, torch.Tensor | float]) -> str:
    """An aligned text table of a ``PCK.compute()`` dict: one row overall, one per category, in %."""
    columns = _pck_columns(results)
    cats = sorted({k[len("cat/") :].rsplit("/", 1)[0] for k in results if k.startswith("cat/")})
    rows = [("all", "")] + [(c, f"cat/{c}/") for c in cats]
    first = max([len("category")] + [len(c) for c, _ in rows])
    n_pooled = sum(1 for *_, per_image in columns if not per_image)
    labels = [("per keypoint", n_pooled), ("per image", len(columns) - n_pooled)]
    labels = [(label, n) for label, n in labels if n]
    width = max([8] + [len(h) for _, h, _ in columns] + [math.ceil(len(label) / n) for label, n in labels])
    lead = f"{'':<{first}} {'':>6} {'':>7}  "
    groups = [f"{label:^{(width + 1) * n - 1}}" for label, n in labels]
    header = f"{'category':<{first}} {'pairs':>6} {'points':>7}  " + _cells([h for _, h, _ in columns], width, n_pooled)
    lines = [lead + " | ".join(groups), header]
    for label, prefix in rows:
        cells = [_percent(results.get(prefix + key)) for key, _, _ in columns]
        pairs, points = (int(float(results.get(prefix + k, 0))) for k in ("num_pairs", "num_points"))
        lines.append(f"{label:<{first}} {pairs:>6} {points:>7}  " + _cells(cells, width, n_pooled))
    return "\n".join(lines)


def _percent(value: torch.Tensor | float | None) -> str:
    return "-" if value is None or math.isnan(float(value)) else f"{100 * float(value):.2f}"


def _cells(cells: list[str], width: int, split: int) -> str:
    left = " ".join(f"{c:>{width}}" for c in cells[:split])
    right = " ".join(f"{c:>{width}}" for c in cells[split:])
    return f"{left} | {right}" if right else left


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


# ============================================================================ TAP-Vid


TAPVID_THRESHOLDS = (1, 2, 4, 8, 16)
TAPVID_SIZE = 256  # tracks are compared in a 256 × 256 frame


def _tapvid_eval_mask(query_frames: np.ndarray, num_frames: int, query_mode: str) -> np.ndarray:
    """(N, T) frames scored for each query: after the query frame ("first"), or all but it ("strided")."""
    frames = np.arange(num_frames)[None]  # (1, T)
    q = query_frames[:, None]  # (N, 1)
    return frames > q if query_mode == "first" else frames != q


def tapvid_video_metrics(
    query_points: np.ndarray, gt_tracks: np.ndarray, gt_occluded: np.ndarray,
    pred_tracks: np.ndarray, pred_occluded: np.ndarray, query_mode: str,
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
        q, gt, pred = (_as_numpy(x, n).astype(np.float64) for x, n in
                       ((query_points, "query_points"), (gt_tracks, "gt_tracks"), (pred_tracks, "pred_tracks")))
        gt_occ, pred_occ = _as_occlusion(gt_occluded, "gt_occluded"), _as_occlusion(pred_occluded, "pred_occluded")
        _check_tracks(q, gt, gt_occ, pred, pred_occ)
        w, h = frame_size_wh
        if not (w > 0 and h > 0):
            raise DataError(f"frame_size_wh must be positive (W, H); got {tuple(frame_size_wh)}")
        scale = np.array([TAPVID_SIZE / w, TAPVID_SIZE / h])
        video = tapvid_video_metrics(q, gt * scale, gt_occ, pred * scale, pred_occ, self.query_mode)
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
