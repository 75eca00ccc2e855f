"""SPair-71k pairs, from the reference's pair-list JSON or from the release layout.

Two layouts, one output (``pair_id`` = ``<source stem>-<target stem>:<category>`` in both):

* ``format="dhf"``: the reference implementation's pair list, a JSON list of
  ``{source_path, target_path, source_points, target_points, category,
  source_bounding_box, target_bounding_box}`` with points (x, y) and boxes [x1, y1, x2, y2] in
  original pixels. ``split`` is the JSON file (relative to ``root`` or absolute); images are
  ``root/image_dir/<source_path>``, and when that is absent ``root/image_dir/<file name>``
  (so lists with ``<category>/<name>.jpg`` paths also read a flat image folder).
* ``format="native"``: the SPair-71k release. ``split`` is ``trn``, ``val`` or ``test``
  (``train`` is accepted for ``trn``); pair names come from ``Layout/<layout>/<split>.txt``,
  annotations from ``PairAnnotation/<split>/<name>.json`` (``src_kps``/``trg_kps``,
  ``src_bndbox``/``trg_bndbox``, ``src_imname``/``trg_imname``, ``category``), images from
  ``<image_dir>/<category>/<imname>`` (``image_dir`` defaults to ``JPEGImages``; for
  ``dhf`` it defaults to ``images``).

Pairs whose images are absent are skipped with one warning; see
:func:`hyperfeat.data.pairs.base.finalize_records` for points outside their image.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from hyperfeat.data.pairs.base import (
    PairRecord,
    RecordPairDataset,
    make_record,
)
from hyperfeat.errors import DataError
from hyperfeat.io import PathLike

DHF_FIELDS = ("source_path", "target_path", "source_points", "target_points", "category")


NATIVE_FIELDS = ("src_imname", "trg_imname", "src_kps", "trg_kps", "category")


NATIVE_SPLITS = {"trn": "trn", "train": "trn", "val": "val", "test": "test"}


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise DataError(f"SPair {what} file not found: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"SPair {what} file {path} is not valid JSON: {err}") from err


def _require(entry: Any, fields: tuple[str, ...], where: str) -> None:
    if not isinstance(entry, dict):
        raise DataError(f"{where}: expected a JSON object with fields {', '.join(fields)}; got {type(entry).__name__}")
    absent = [f for f in fields if f not in entry]
    if absent:
        raise DataError(f"{where}: missing field(s) {', '.join(absent)}; expected {', '.join(fields)}")


def pair_name(source: str, target: str, category: str) -> str:
    """The pair id used by both layouts: ``<source stem>-<target stem>:<category>``."""
    return f"{Path(source).stem}-{Path(target).stem}:{category}"


def read_dhf_pairs(annotation: Path, image_dir: Path) -> list[PairRecord]:
    """Records of a reference pair-list JSON; image paths resolved below ``image_dir``."""
    entries = _read_json(annotation, "pair-list annotation")
    if not isinstance(entries, list):
        raise DataError(f"SPair pair list {annotation} must hold a JSON list of pairs; got {type(entries).__name__}")

    def resolve(rel: str) -> Path:
        path = image_dir / rel
        flat = image_dir / Path(rel).name
        return flat if not path.is_file() and flat.is_file() else path

    records = []
    for i, entry in enumerate(entries):
        where = f"{annotation} entry {i}"
        _require(entry, DHF_FIELDS, where)
        src, trg, cat = str(entry["source_path"]), str(entry["target_path"]), str(entry["category"])
        records.append(
            make_record(
                pair_name(src, trg, cat),
                cat,
                resolve(src),
                resolve(trg),
                entry["source_points"],
                entry["target_points"],
                where=where,
                target_bbox=entry.get("target_bounding_box"),
            )
        )
    return records


def read_native_pairs(root: Path, split: str, layout: str = "large", image_dir: str = "JPEGImages") -> list[PairRecord]:
    """Records of the release layout for ``split`` (trn | val | test) under ``layout``."""
    if split not in NATIVE_SPLITS:
        raise DataError(f"SPair native split must be one of trn, val, test; got {split!r} (root {root})")
    split = NATIVE_SPLITS[split]
    listing = root / "Layout" / layout / f"{split}.txt"
    if not listing.is_file():
        raise DataError(
            f"SPair pair list not found: {listing} (expected the release layout Layout/<layout>/<split>.txt)"
        )
    names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    if not names:
        raise DataError(f"SPair split {split!r} under {root} is empty: {listing} lists no pairs")
    records = []
    for name in names:
        path = root / "PairAnnotation" / split / f"{name}.json"
        entry = _read_json(path, f"pair annotation (listed in {listing})")
        _require(entry, NATIVE_FIELDS, str(path))
        src, trg, cat = str(entry["src_imname"]), str(entry["trg_imname"]), str(entry["category"])
        images = root / image_dir / cat
        records.append(
            make_record(
                pair_name(src, trg, cat),
                cat,
                images / src,
                images / trg,
                entry["src_kps"],
                entry["trg_kps"],
                where=str(path),
                target_bbox=entry.get("trg_bndbox"),
            )
        )
    return records


class SPairDataset(RecordPairDataset):
    """SPair-71k pairs in either layout (see the module docstring); items as in ``pairs.PAIR_KEYS``."""

    def __init__(
        self,
        root: PathLike,
        split: str,
        load_size: int,
        *,
        format: str = "dhf",
        image_dir: Optional[str] = None,
        layout: str = "large",
        **options: Any,
    ) -> None:
        """``options``: :class:`~hyperfeat.data.pairs.base.RecordOptions` keys."""
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"SPair root folder not found: {root}")
        if format == "dhf":
            annotation = Path(split) if Path(split).is_absolute() else root / split
            records = read_dhf_pairs(annotation, root / (image_dir or "images"))
        elif format == "native":
            records = read_native_pairs(root, str(split), layout, image_dir or "JPEGImages")
        else:
            raise DataError(f"SPair format must be dhf or native; got {format!r}")
        super().__init__(records, load_size, dataset="SPair-71k", split=str(split), root=root, **options)


SPAIR_RELEASE_FOLDER = "SPair-71k"  # the folder SPair-71k.tar.gz unpacks to


def spair_release_missing(root: PathLike) -> list[str]:
    """What of the SPair-71k release layout is absent under ``root`` (empty: it is all there)."""
    root = Path(root)
    wanted = (
        ["JPEGImages"]
        + [f"PairAnnotation/{s}" for s in ("trn", "val", "test")]
        + [f"Layout/large/{s}.txt" for s in ("trn", "val", "test")]
    )
    return [w for w in wanted if not (root / w).exists()]
