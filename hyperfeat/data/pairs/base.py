"""The common semantic-pair sample: records, their validation, the Dataset base, and batching.

Every pair data set yields the same item dict (see :data:`PAIR_KEYS`)::

    source_image, target_image   (3, L, L) float32 in [-1, 1]  (L = load_size, the reference transform)
    source_points, target_points (N, 2) float32, (x, y) in the L×L frame
    valid                        (N,) bool
    source_size, target_size     original (W, H) as a tuple of ints
    target_points_orig           (N, 2) float32, (x, y) in original target pixels
    target_bbox                  (4,) float32 [x1, y1, x2, y2] in original target pixels, NaN if none
    category, pair_id            str

Points are (x, y) pixels with pixel centres at integers; rescaling between frames is plain
scaling x' = x·W'/W, as the reference does.

A point is *inside* an image of size (W, H) when -1 ≤ x ≤ W and -1 ≤ y ≤ H: the pixel area
[-0.5, W - 0.5] plus half a pixel of slack, for annotations written in 1-based (VOC, MATLAB)
coordinates. A point outside is, by default, marked invalid with one warning per data set; with
``strict=True`` it is a :class:`DataError` naming the pair and the point.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from hyperfeat.errors import DataError
from hyperfeat.geometry import rescale_points
from hyperfeat.images import load_image, resize_for_backbone
from hyperfeat.io import PathLike

PAIR_KEYS = (
    "source_image",
    "target_image",
    "source_points",
    "target_points",
    "valid",
    "source_size",
    "target_size",
    "target_points_orig",
    "target_bbox",
    "category",
    "pair_id",
)


EDGE_SLACK = 0.5  # pixels beyond the pixel area [-0.5, W - 0.5] still counted as inside


MAX_LISTED = 5  # how many offending files/points a message names


class DataWarning(UserWarning):
    """Something in a data set was skipped or repaired (missing images, points outside)."""


@dataclass
class PairRecord:
    """One annotated pair before its images are read. Points are in original pixels."""

    pair_id: str
    category: str
    source_path: Path
    target_path: Path
    source_points: np.ndarray  # (N, 2) float64
    target_points: np.ndarray  # (N, 2) float64
    valid: np.ndarray  # (N,) bool
    target_bbox: np.ndarray  # (4,) float64 xyxy, NaN when none
    where: str  # the annotation file (and entry) it came from, for messages
    source_size: Optional[tuple[int, int]] = None  # (W, H), filled by finalize_records
    target_size: Optional[tuple[int, int]] = None


def _points_array(value: Any, pair_id: str, where: str, field: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DataError(
            f"{where}: pair {pair_id}: {field} must be a list of [x, y] numbers; got {value!r:.80}"
        ) from err
    if array.size == 0:
        return np.zeros((0, 2))
    if array.ndim != 2 or array.shape[1] != 2:
        raise DataError(f"{where}: pair {pair_id}: {field} must have shape (N, 2) of (x, y); got shape {array.shape}")
    if not np.isfinite(array).all():
        row = int(np.where(~np.isfinite(array).all(axis=1))[0][0])
        raise DataError(f"{where}: pair {pair_id}: {field}[{row}] = {array[row].tolist()} is not finite")
    return array


def make_record(
    pair_id: str,
    category: str,
    source_path: PathLike,
    target_path: PathLike,
    source_points: Any,
    target_points: Any,
    *,
    where: str,
    target_bbox: Any = None,
    valid: Any = None,
) -> PairRecord:
    """Build a :class:`PairRecord`, checking shapes: (N, 2) points, the same N, a 4-number box."""
    src = _points_array(source_points, pair_id, where, "source points")
    trg = _points_array(target_points, pair_id, where, "target points")
    if len(src) != len(trg):
        raise DataError(
            f"{where}: pair {pair_id} has {len(src)} source points but {len(trg)} target points; "
            "expected the same number (one target per source point)"
        )
    if target_bbox is None:
        bbox = np.full(4, np.nan)
    else:
        bbox = np.asarray(target_bbox, dtype=np.float64).reshape(-1)
        if bbox.shape != (4,):
            raise DataError(f"{where}: pair {pair_id}: target box must be [x1, y1, x2, y2]; got {target_bbox!r}")
    mask = np.ones(len(src), dtype=bool) if valid is None else np.asarray(valid, dtype=bool).reshape(-1)
    if mask.shape != (len(src),):
        raise DataError(f"{where}: pair {pair_id}: {mask.shape[0]} validity flags for {len(src)} points")
    return PairRecord(pair_id, str(category), Path(source_path), Path(target_path), src, trg, mask, bbox, where)


def image_size(path: Path) -> tuple[int, int]:
    """(W, H) of an image file from its header, without decoding the pixels."""
    try:
        with Image.open(path) as img:
            return img.size
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"cannot read image {path}: {err} (corrupt or not an image?)") from err


def _listing(items: Sequence[Any]) -> str:
    shown = ", ".join(str(i) for i in items[:MAX_LISTED])
    return shown + (f", … ({len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else "")


def warn_missing_images(
    dataset: str, split: str, root: PathLike, missing: Sequence[Path], skipped: int, total: int
) -> None:
    """The one warning for pairs (or images) skipped because their image files are absent."""
    warnings.warn(
        f"{dataset} split {split!r} (root {root}): skipped {skipped} of {total} pairs because "
        f"{len(missing)} image file(s) are missing: {_listing([str(p) for p in missing])}",
        DataWarning,
        stacklevel=3,
    )


def _inside(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    w, h = size
    lo = -0.5 - EDGE_SLACK
    return (
        (points[:, 0] >= lo)
        & (points[:, 0] <= w - 0.5 + EDGE_SLACK)
        & (points[:, 1] >= lo)
        & (points[:, 1] <= h - 0.5 + EDGE_SLACK)
    )


def sample_across_categories(records: Sequence[PairRecord], n: int, seed: int = 0) -> list[PairRecord]:
    """``n`` of ``records`` spread over their categories as evenly as they allow, in their original order.

    Stratified and seeded: each category's pairs are shuffled with ``seed``, then the categories
    (in a seeded order) give one pair each in turn until ``n`` are taken; a category that runs out
    leaves its turns to the others. ``n >= len(records)`` keeps them all. The same records, ``n``
    and ``seed`` always give the same subset.
    """
    if n >= len(records):
        return list(records)
    rng = np.random.default_rng(int(seed))
    by_category: dict[str, list[int]] = {}
    for i, rec in enumerate(records):
        by_category.setdefault(str(rec.category), []).append(i)
    queues = [list(np.asarray(idx)[rng.permutation(len(idx))]) for idx in by_category.values()]
    queues = [queues[i] for i in rng.permutation(len(queues))]
    chosen: list[int] = []
    while len(chosen) < n:
        for queue in queues:
            if queue and len(chosen) < n:
                chosen.append(int(queue.pop(0)))
        queues = [q for q in queues if q]
    return [records[i] for i in sorted(chosen)]


def finalize_records(
    records: Sequence[PairRecord],
    *,
    dataset: str,
    split: str,
    root: PathLike,
    strict: bool = False,
    max_pairs: Optional[int] = None,
    sample_seed: int = 0,
) -> list[PairRecord]:
    """Drop pairs with missing images (one warning), keep ``max_pairs`` of them sampled across
    categories (:func:`sample_across_categories`, seeded by ``sample_seed``), read image sizes,
    and check every point lies inside its image (strict: DataError; else one warning + invalid).

    Raises DataError naming the split and root when no pair is left.
    """
    total = len(records)
    if total == 0:
        raise DataError(f"{dataset} split {split!r} under {root} lists no pairs; expected at least one")
    exists: dict[Path, bool] = {}
    for rec in records:
        for path in (rec.source_path, rec.target_path):
            if path not in exists:
                exists[path] = path.is_file()
    kept = [r for r in records if exists[r.source_path] and exists[r.target_path]]
    if len(kept) < total:
        missing = sorted({p for p, ok in exists.items() if not ok})
        warn_missing_images(dataset, split, root, missing, total - len(kept), total)
    if not kept:
        raise DataError(
            f"{dataset} split {split!r} under {root}: no pair left — all {total} listed pairs "
            "reference missing image files (see the warning for which)"
        )
    if max_pairs is not None:
        if int(max_pairs) < 1:
            raise DataError(f"{dataset}: max_pairs must be a positive integer or null; got {max_pairs!r}")
        kept = sample_across_categories(kept, int(max_pairs), sample_seed)

    sizes: dict[Path, tuple[int, int]] = {}
    outside: list[str] = []
    for rec in kept:
        for path in (rec.source_path, rec.target_path):
            if path not in sizes:
                sizes[path] = image_size(path)
        rec.source_size, rec.target_size = sizes[rec.source_path], sizes[rec.target_path]
        for side, points, size, path in (
            ("source", rec.source_points, rec.source_size, rec.source_path),
            ("target", rec.target_points, rec.target_size, rec.target_path),
        ):
            bad = np.where(~_inside(points, size) & rec.valid)[0]
            for i in bad:
                msg = (
                    f"pair {rec.pair_id} ({rec.where}): {side} point {int(i)} = {points[i].tolist()} lies outside "
                    f"{path.name} of size (W, H) = {size}; expected -1 <= x <= W and -1 <= y <= H"
                )
                if strict:
                    raise DataError(msg)
                outside.append(msg)
            rec.valid[bad] = False
    if outside:
        warnings.warn(
            f"{dataset} split {split!r} (root {root}): marked {len(outside)} point(s) outside their image "
            f"as invalid (strict=True makes this an error): {'; '.join(outside[:MAX_LISTED])}"
            + (f"; … ({len(outside) - MAX_LISTED} more)" if len(outside) > MAX_LISTED else ""),
            DataWarning,
            stacklevel=2,
        )
    return kept


class PairDataset(Dataset):
    """Base of the pair data sets: holds ``load_size`` / ``max_points`` and packs items."""

    def __init__(self, load_size: int, max_points: Optional[int] = None) -> None:
        if not isinstance(load_size, int) or load_size < 1:
            raise DataError(f"load_size must be a positive integer; got {load_size!r}")
        if max_points is not None and (not isinstance(max_points, int) or max_points < 1):
            raise DataError(f"max_points must be a positive integer or None; got {max_points!r}")
        self.load_size = load_size
        self.max_points = max_points
        self.resample = "bilinear"  # the describer's resize filter (Describer.resample), set by the evaluation

    def pack(
        self,
        *,
        source_image: torch.Tensor,
        target_image: torch.Tensor,
        source_points: np.ndarray,
        target_points: np.ndarray,
        valid: np.ndarray,
        source_size: tuple[int, int],
        target_size: tuple[int, int],
        target_points_orig: np.ndarray,
        target_bbox: np.ndarray,
        category: str,
        pair_id: str,
    ) -> dict[str, Any]:
        """The item dict, points padded (valid=False) or truncated to ``max_points`` if set."""
        src = torch.as_tensor(np.asarray(source_points), dtype=torch.float32).reshape(-1, 2)  # (N, 2)
        trg = torch.as_tensor(np.asarray(target_points), dtype=torch.float32).reshape(-1, 2)  # (N, 2)
        orig = torch.as_tensor(np.asarray(target_points_orig), dtype=torch.float32).reshape(-1, 2)  # (N, 2)
        mask = torch.as_tensor(np.asarray(valid), dtype=torch.bool).reshape(-1)  # (N,)
        if self.max_points is not None:
            src, trg, orig, mask = (pad_points(t, self.max_points) for t in (src, trg, orig, mask))
        return {
            "source_image": source_image,
            "target_image": target_image,
            "source_points": src,
            "target_points": trg,
            "valid": mask,
            "source_size": (int(source_size[0]), int(source_size[1])),
            "target_size": (int(target_size[0]), int(target_size[1])),
            "target_points_orig": orig,
            "target_bbox": torch.as_tensor(np.asarray(target_bbox), dtype=torch.float32).reshape(4),
            "category": category,
            "pair_id": pair_id,
        }


@dataclass(frozen=True)
class RecordOptions:
    """The keys every annotated pair data set (SPair, CUB, PF-WILLOW) takes beside its own:
    ``max_pairs`` (cap per split, sampled across categories with ``sample_seed``; None: all),
    ``max_points`` (pad/truncate each item to this many points), ``strict`` (a point outside its
    image is a DataError instead of a warning)."""

    max_pairs: Optional[int] = None
    sample_seed: int = 0
    max_points: Optional[int] = None
    strict: bool = False


class RecordPairDataset(PairDataset):
    """A pair data set backed by validated :class:`PairRecord` s (SPair, CUB, PF-WILLOW).

    A subclass reads its annotations into records and hands them here with its name, split and
    root; ``options`` are the :class:`RecordOptions` keys. The records then go through
    :func:`finalize_records` (missing images, the ``max_pairs`` sample, points outside).
    """

    def __init__(
        self, records: Sequence[PairRecord], load_size: int, *, dataset: str, split: str, root: PathLike, **options: Any
    ) -> None:
        opts = RecordOptions(**options)
        super().__init__(load_size, opts.max_points)
        self.records = finalize_records(
            records,
            dataset=dataset,
            split=split,
            root=root,
            strict=opts.strict,
            max_pairs=opts.max_pairs,
            sample_seed=opts.sample_seed,
        )

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec = self.records[index]
        src_img, trg_img = load_image(rec.source_path), load_image(rec.target_path)
        src_size, trg_size = src_img.size, trg_img.size  # (W, H)
        return self.pack(
            source_image=resize_for_backbone(src_img, self.load_size, self.resample),  # (3, L, L)
            target_image=resize_for_backbone(trg_img, self.load_size, self.resample),  # (3, L, L)
            source_points=rescale_points(rec.source_points, src_size, (self.load_size, self.load_size)),
            target_points=rescale_points(rec.target_points, trg_size, (self.load_size, self.load_size)),
            valid=rec.valid,
            source_size=src_size,
            target_size=trg_size,
            target_points_orig=rec.target_points,
            target_bbox=rec.target_bbox,
            category=rec.category,
            pair_id=rec.pair_id,
        )


def pad_points(tensor: torch.Tensor, n: int) -> torch.Tensor:
    """Pad (zeros / False) or truncate the first dim of (N, ...) to n."""
    if tensor.shape[0] >= n:
        return tensor[:n]
    pad = torch.zeros((n - tensor.shape[0],) + tuple(tensor.shape[1:]), dtype=tensor.dtype)
    return torch.cat([tensor, pad])


def collate_pairs(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch pair items; points are padded to the batch's largest N with valid=False.

    Returns images (B, 3, L, L), points (B, N, 2), valid (B, N), sizes (B, 2) long (W, H),
    target_bbox (B, 4), and category / pair_id as lists of str.
    """
    if not items:
        raise DataError("collate_pairs got an empty batch")
    n = max(int(item["valid"].shape[0]) for item in items)
    batch: dict[str, Any] = {
        "source_image": torch.stack([it["source_image"] for it in items]),  # (B, 3, L, L)
        "target_image": torch.stack([it["target_image"] for it in items]),  # (B, 3, L, L)
    }
    for key in ("source_points", "target_points", "target_points_orig", "valid"):
        batch[key] = torch.stack([pad_points(it[key], n) for it in items])  # (B, N, 2) / (B, N)
    for key in ("source_size", "target_size"):
        batch[key] = torch.tensor([list(it[key]) for it in items], dtype=torch.long)  # (B, 2)
    batch["target_bbox"] = torch.stack([it["target_bbox"] for it in items])  # (B, 4)
    batch["category"] = [it["category"] for it in items]
    batch["pair_id"] = [it["pair_id"] for it in items]
    return batch
