"""PF-WILLOW: the 900 ordered intra-class pairs (10 classes × 10 images × 9 others).

Layout: ``PF-dataset-WILLOW/<class>/<name>.png`` with ``<name>.mat`` holding ``pts_coord``
(2 × K: row 0 = x, row 1 = y, in the file's own pixel coordinates, used as they are). ``root``
may be the folder holding ``PF-dataset-WILLOW`` or that folder itself. Pairs are ordered by
class name, then source image name, then target image name.

``target_bbox`` is the tight box of the *target keypoints* [min x, min y, max x, max y], not an
object box: PF-WILLOW is evaluated with PCK@α·max(h, w) of the keypoints' bounding box, so the
usual bbox threshold computed from ``target_bbox`` gives exactly that protocol.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hyperfeat.data.mat import read_mat_field
from hyperfeat.data.pairs.base import RecordPairDataset, make_record
from hyperfeat.errors import DataError
from hyperfeat.io import PathLike

FOLDER = "PF-dataset-WILLOW"


SPLITS = ("test", "all")  # PF-WILLOW has one evaluation set
IMAGES_PER_CLASS = 10


def willow_folder(root: PathLike) -> Path:
    """``root/PF-dataset-WILLOW`` when present, else ``root``; it must hold class folders."""
    root = Path(root)
    folder = root / FOLDER if (root / FOLDER).is_dir() else root
    if not folder.is_dir() or not any(p.is_dir() for p in folder.iterdir()):
        raise DataError(f"PF-WILLOW folder not found: expected class folders in {root / FOLDER} or {root}")
    return folder


def read_keypoints(path: Path) -> np.ndarray:
    """(K, 2) (x, y) keypoints of one PF-WILLOW .mat file."""
    pts = read_mat_field(path, "pts_coord", "PF-WILLOW annotation")
    if pts.ndim != 2 or pts.shape[0] != 2:
        raise DataError(f"{path}: pts_coord must be 2×K (row 0 x, row 1 y); got shape {pts.shape}")
    return pts.T  # (K, 2)


def keypoint_box(points: np.ndarray) -> np.ndarray:
    """(4,) tight [x1, y1, x2, y2] box of (N, 2) points (NaN for no points)."""
    if len(points) == 0:
        return np.full(4, np.nan)
    return np.concatenate([points.min(axis=0), points.max(axis=0)])


class PFWillowPairs(RecordPairDataset):
    """The 900 ordered PF-WILLOW pairs; target_bbox is the target keypoints' tight box."""

    def __init__(
        self,
        root: PathLike,
        load_size: int,
        split: str = "test",
        **options: Any,
    ) -> None:
        """``options``: :class:`~hyperfeat.data.pairs.base.RecordOptions` keys."""
        if split not in SPLITS:
            raise DataError(f"PF-WILLOW split must be one of {', '.join(SPLITS)}; got {split!r} (root {root})")
        folder = willow_folder(root)
        records = []
        short: dict[str, int] = {}
        for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            stems = sorted({p.stem for p in class_dir.iterdir() if p.suffix.lower() in (".png", ".mat")})
            images = sum((class_dir / f"{s}.png").is_file() for s in stems)
            if images != IMAGES_PER_CLASS:
                short[class_dir.name] = images
            for stem in stems:
                if (class_dir / f"{stem}.png").is_file() and not (class_dir / f"{stem}.mat").is_file():
                    raise DataError(f"PF-WILLOW annotation file not found: {class_dir / stem}.mat (for {stem}.png)")
            points = {s: read_keypoints(class_dir / f"{s}.mat") for s in stems}
            for src in stems:
                for trg in stems:
                    if src == trg:
                        continue
                    records.append(
                        make_record(
                            f"{src}-{trg}:{class_dir.name}",
                            class_dir.name,
                            class_dir / f"{src}.png",
                            class_dir / f"{trg}.png",
                            points[src],
                            points[trg],
                            where=f"{class_dir / src}.mat / {trg}.mat",
                            target_bbox=keypoint_box(points[trg]),
                        )
                    )
        if short:  # a missing image (and its .mat) would otherwise just make fewer pairs
            import warnings

            from hyperfeat.data.pairs.base import DataWarning

            listed = ", ".join(f"{name}: {n}" for name, n in list(short.items())[:5])
            warnings.warn(
                f"PF-WILLOW under {folder}: {len(short)} class folder(s) do not hold the benchmark's "
                f"{IMAGES_PER_CLASS} images ({listed}{', ...' if len(short) > 5 else ''}): "
                f"{len(records)} pairs are listed instead of 900, so the numbers are not comparable "
                f"with the benchmark's (missing files?)",
                DataWarning,
                stacklevel=2,
            )
        super().__init__(records, load_size, dataset="PF-WILLOW", split=split, root=folder, **options)
