"""CUB-200-2011 pairs: two images of the same species with their commonly visible parts.

Files read (below ``root``, or below ``root/CUB_200_2011``): ``images.txt``,
``train_test_split.txt`` (1 = train, 0 = test), ``image_class_labels.txt``,
``bounding_boxes.txt`` ([x, y, w, h] → target_bbox [x, y, x + w, y + h]) and
``parts/part_locs.txt`` (``<image> <part> <x> <y> <visible>``, 15 parts).

Pair protocol: every ordered pair (a, b), a ≠ b, of the split's images within one class is a
candidate; candidates are shuffled with ``numpy.random.default_rng(seed)`` and taken in that
order, keeping those with at least ``min_common_parts`` parts visible in both images, until
``num_pairs`` (None: all). The points of a pair are the parts visible in both, by part id.
Images listed but absent on disk are left out of the sampling with one warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from hyperfeat.data.pairs.base import (
    RecordPairDataset,
    make_record,
    warn_missing_images,
)
from hyperfeat.errors import DataError
from hyperfeat.io import PathLike

SPLITS = {"train": (1,), "test": (0,), "all": (0, 1)}


@dataclass
class CUBTables:
    """The annotation tables of CUB-200-2011, keyed by image id."""

    folder: Path
    images: dict[int, str]  # id → relative path below images/
    is_train: dict[int, int]
    labels: dict[int, int]
    boxes: dict[int, np.ndarray]  # id → (4,) xyxy
    parts: dict[int, np.ndarray]  # id → (P, 3) x, y, visible; row p = part id p + 1
    num_parts: int


def _rows(path: Path, width: int) -> list[list[str]]:
    if not path.is_file():
        raise DataError(f"CUB annotation file not found: {path}")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != width:
            raise DataError(f"{path} line {n}: expected {width} fields; got {len(fields)}: {line!r}")
        rows.append(fields)
    return rows


def _number(value: str, path: Path, kind: type = float) -> float:
    try:
        return kind(value)
    except ValueError as err:
        raise DataError(f"{path}: expected a number; got {value!r}") from err


def cub_folder(root: PathLike) -> Path:
    """``root`` itself or ``root/CUB_200_2011``, whichever holds images.txt."""
    root = Path(root)
    for folder in (root, root / "CUB_200_2011"):
        if (folder / "images.txt").is_file():
            return folder
    raise DataError(f"CUB annotation file not found: {root / 'images.txt'} (nor below {root / 'CUB_200_2011'})")


def read_cub(root: PathLike) -> CUBTables:
    """Parse the CUB-200-2011 tables below ``root``."""
    folder = cub_folder(root)
    path = folder / "images.txt"
    images = {int(_number(i, path, int)): name for i, name in _rows(path, 2)}
    path = folder / "train_test_split.txt"
    is_train = {int(_number(i, path, int)): int(_number(t, path, int)) for i, t in _rows(path, 2)}
    path = folder / "image_class_labels.txt"
    labels = {int(_number(i, path, int)): int(_number(c, path, int)) for i, c in _rows(path, 2)}
    path = folder / "bounding_boxes.txt"
    boxes = {}
    for row in _rows(path, 5):
        x, y, w, h = (_number(v, path) for v in row[1:])
        boxes[int(_number(row[0], path, int))] = np.array([x, y, x + w, y + h])
    path = folder / "parts" / "part_locs.txt"
    rows = _rows(path, 5)
    num_parts = max(int(_number(r[1], path, int)) for r in rows) if rows else 0
    parts: dict[int, np.ndarray] = {}
    for row in rows:
        image, part = int(_number(row[0], path, int)), int(_number(row[1], path, int))
        table = parts.setdefault(image, np.zeros((num_parts, 3)))
        table[part - 1] = [_number(row[2], path), _number(row[3], path), _number(row[4], path)]
    return CUBTables(folder, images, is_train, labels, boxes, parts, num_parts)


def sample_pairs(
    by_class: dict[int, list[int]],
    visible: dict[int, np.ndarray],
    num_pairs: Optional[int],
    seed: int,
    min_common_parts: int = 1,
) -> list[tuple[int, int]]:
    """Deterministic intra-class pairs (see the module docstring). ``visible``: id → (P,) bool."""
    candidates = [(a, b) for c in sorted(by_class) for a in sorted(by_class[c]) for b in sorted(by_class[c]) if a != b]
    order = np.random.default_rng(seed).permutation(len(candidates))
    pairs = []
    for k in order:
        a, b = candidates[k]
        if int((visible[a] & visible[b]).sum()) >= min_common_parts:
            pairs.append((a, b))
            if num_pairs is not None and len(pairs) >= num_pairs:
                break
    return pairs


class CUBPairs(RecordPairDataset):
    """CUB-200-2011 intra-class pairs with their commonly visible parts; bbox from bounding_boxes.txt."""

    def __init__(
        self,
        root: PathLike,
        load_size: int,
        split: str = "test",
        *,
        num_pairs: Optional[int] = 1000,
        seed: int = 0,
        min_common_parts: int = 1,
        **options: Any,
    ) -> None:
        """``options``: :class:`~hyperfeat.data.pairs.base.RecordOptions` keys."""
        if split not in SPLITS:
            raise DataError(f"CUB split must be one of {', '.join(SPLITS)}; got {split!r} (root {root})")
        tables = read_cub(root)
        ids = sorted(i for i in tables.images if tables.is_train.get(i) in SPLITS[split])
        for i in ids:
            for table, name in ((tables.labels, "image_class_labels.txt"), (tables.boxes, "bounding_boxes.txt")):
                if i not in table:
                    raise DataError(f"CUB image id {i} ({tables.images[i]}) has no line in {tables.folder / name}")
        paths = {i: tables.folder / "images" / tables.images[i] for i in ids}
        missing = [i for i in ids if not paths[i].is_file()]
        if missing:
            warn_missing_images(
                "CUB-200-2011", split, tables.folder, [paths[i] for i in missing], len(missing), len(ids)
            )
            ids = [i for i in ids if paths[i].is_file()]
        if not ids:
            raise DataError(f"CUB-200-2011 split {split!r} under {tables.folder}: no image with a file on disk")
        empty = np.zeros((tables.num_parts, 3))
        visible = {i: tables.parts.get(i, empty)[:, 2] > 0 for i in ids}
        by_class: dict[int, list[int]] = {}
        for i in ids:
            by_class.setdefault(tables.labels[i], []).append(i)
        records = []
        for a, b in sample_pairs(by_class, visible, num_pairs, seed, min_common_parts):
            common = visible[a] & visible[b]  # (P,)
            category = Path(tables.images[a]).parent.name or str(tables.labels[a])
            records.append(
                make_record(
                    f"{paths[a].stem}-{paths[b].stem}:{category}",
                    category,
                    paths[a],
                    paths[b],
                    tables.parts[a][common, :2],
                    tables.parts[b][common, :2],
                    where=str(tables.folder / "parts" / "part_locs.txt"),
                    target_bbox=tables.boxes[b],
                )
            )
        if not records:
            raise DataError(
                f"CUB-200-2011 split {split!r} under {tables.folder}: no intra-class pair of its {len(ids)} images "
                f"shares at least min_common_parts={min_common_parts} visible parts"
            )
        super().__init__(records, load_size, dataset="CUB-200-2011", split=split, root=tables.folder, **options)
