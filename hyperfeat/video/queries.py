"""Query sets and track files, CoTracker-style: the one home of grid, mask and query parsing and
of the track-file writers and readers (the commands, the page and the state-change analysis all
come here).

* :func:`grid_points` / :func:`grid_queries`: an ``n × n`` grid of points over a frame (cell
  centres of an even grid, so no point sits on the border), as (x, y) or as queries (t, x, y).
* :func:`read_mask_png` / :func:`mask_pixels`: a mask PNG, and any mask checked against the frame
  size → (H, W) bool.
* :func:`mask_queries`: points inside a segmentation mask (``segm_mask``): the grid points that
  fall inside it, or, with ``num_points``, points drawn inside it with a seeded generator.
* :func:`parse_queries`: ``'t,x,y;t,x,y'`` text → (N, 3) queries (one line naming a bad row).
* :func:`save_tracks` / :func:`load_tracks`: one file per result, by suffix — ``.json``
  (everything, lists), ``.csv`` (one row per point and frame: point, t, x, y, visible,
  confidence) and ``.npz`` in the TAP-Vid layout (``query_points`` (N, 3) as (t, y, x),
  ``tracks`` (N, T, 2) xy, ``occluded`` (N, T) bool, plus ``confidence`` and ``video_size``),
  all in pixels of the original frames. Files are written atomically.
"""

from __future__ import annotations

import csv
import io as _io
import json
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from hyperfeat.errors import DataError
from hyperfeat.io import PathLike, atomic_write

TRACK_SUFFIXES = (".json", ".csv", ".npz")


def grid_points(size: tuple[int, int], grid_size: int) -> torch.Tensor:
    """(grid_size², 2) float32 points (x, y) at the cell centres of an even grid over a (W, H)
    frame, row by row."""
    width, height = int(size[0]), int(size[1])
    if isinstance(grid_size, bool) or not isinstance(grid_size, (int, np.integer)) or grid_size < 1:
        raise DataError(f"grid size must be a positive integer; got {grid_size!r}")
    n = int(grid_size)
    if n > min(width, height):
        raise DataError(
            f"a {n}×{n} grid does not fit a {width}×{height} frame: the grid size must be at most "
            f"{min(width, height)} (the frame's shorter side, one point per pixel)"
        )
    xs = (torch.arange(n, dtype=torch.float32) + 0.5) * width / n - 0.5
    ys = (torch.arange(n, dtype=torch.float32) + 0.5) * height / n - 0.5
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx.flatten(), gy.flatten()], 1)


def grid_queries(grid_size: int, size: tuple[int, int], grid_query_frame: int = 0) -> torch.Tensor:
    """(grid_size², 3) queries (t, x, y) at the centres of an even grid over a (W, H) frame."""
    xy = grid_points(size, grid_size)
    return torch.cat([torch.full((len(xy), 1), float(grid_query_frame)), xy], 1)


def parse_rows(text: str, width: int, form: str, meaning: str = "") -> list[list[float]]:
    """'a,b;c,d' → rows of ``width`` finite floats; a one-line error showing ``form`` otherwise."""
    items = [item for item in str(text).replace(" ", "").split(";") if item]
    try:
        rows = [[float(v) for v in item.split(",")] for item in items]
    except ValueError as err:
        raise DataError(f"points must look like '{form}'{meaning}; got {text!r}") from err
    if not rows or any(len(r) != width for r in rows):
        raise DataError(f"points must look like '{form}'{meaning}; got {text!r}")
    if any(v != v or v in (float("inf"), float("-inf")) for r in rows for v in r):
        raise DataError(f"points must be finite numbers{meaning}; got {text!r}")
    return rows


def parse_queries(text: str) -> torch.Tensor:
    """'t,x,y;t,x,y' → (N, 3) float tensor (t a frame index, x and y pixels)."""
    rows = parse_rows(text, 3, "t,x,y;t,x,y", " (frame, x, y in pixels)")
    bad = [r for r in rows if r[0] != int(r[0])]
    if bad:
        raise DataError(f"the frame index t of a point must be an integer; got {bad[0]}")
    return torch.tensor(rows, dtype=torch.float32)


def read_mask_png(path: PathLike) -> torch.Tensor:
    """A mask PNG → (H, W) int64 (nonzero: the object): palette or gray values as they are (object
    ids), any non-black pixel of a colour PNG."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"mask file not found: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("P", "L", "I", "I;16"):
                array = np.array(image, dtype=np.int64)  # (H, W) ids, not colours
            else:
                array = (np.array(image.convert("L")) > 0).astype(np.int64)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DataError(f"cannot read mask {path}: {err} (corrupt or not an image?)") from err
    return torch.from_numpy(array)


def mask_pixels(mask, size: tuple[int, int], allow_empty: bool = False) -> torch.Tensor:
    """A mask (H, W) of the (W, H) frame size (nonzero: inside; an (H, W, 3/4) array: any
    non-black pixel) → (H, W) bool; another size, or an empty mask unless ``allow_empty``, is a
    one-line DataError."""
    array = np.asarray(mask.cpu().numpy() if isinstance(mask, torch.Tensor) else mask)
    if array.ndim == 3:  # an RGB(A) PNG: any non-black pixel
        array = array[..., :3].max(-1)
    if array.ndim != 2:
        raise DataError(f"segmentation mask must be (H, W); got shape {array.shape}")
    if (array.shape[1], array.shape[0]) != tuple(int(v) for v in size):
        raise DataError(
            f"segmentation mask is {array.shape[1]}×{array.shape[0]} (W×H) but the video frames are "
            f"{size[0]}×{size[1]}: give a mask of the frames' original size"
        )
    inside = torch.from_numpy(np.ascontiguousarray(array != 0))
    if not allow_empty and not bool(inside.any()):
        raise DataError("segmentation mask is empty: no pixel is set, so there is no point to track")
    return inside


def in_mask(fg: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """(N, 2) xy pixel points → (N,) bool: the (H, W) ``fg`` pixel nearest each (clamped to the frame)."""
    ij = xy.round().long()
    return fg[ij[:, 1].clamp(0, fg.shape[0] - 1), ij[:, 0].clamp(0, fg.shape[1] - 1)]


def mask_queries(
    mask,
    size: tuple[int, int],
    grid_size: Optional[int] = None,
    num_points: Optional[int] = None,
    grid_query_frame: int = 0,
    seed: int = 0,
) -> torch.Tensor:
    """Queries (t, x, y) inside ``mask``: the points of a ``grid_size`` grid that fall inside it,
    or ``num_points`` pixels drawn inside it (seeded, without repeats while there are enough)."""
    inside = mask_pixels(mask, size)
    if grid_size is not None:
        grid = grid_queries(grid_size, size, grid_query_frame)
        keep = in_mask(inside, grid[:, 1:])
        if not keep.any():
            raise DataError(f"no point of the {grid_size}×{grid_size} grid falls inside the mask: use a finer grid")
        return grid[keep]
    count = int(num_points or 64)
    rows, cols = np.nonzero(inside.numpy())
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(rows), size=count, replace=count > len(rows))
    pick.sort()
    t = np.full(count, float(grid_query_frame))
    return torch.from_numpy(np.stack([t, cols[pick], rows[pick]], 1).astype(np.float32))


def _check_result(queries, tracks, visible, confidence):
    queries = torch.as_tensor(queries, dtype=torch.float32).cpu()
    tracks = torch.as_tensor(tracks, dtype=torch.float32).cpu()
    visible = torch.as_tensor(visible).bool().cpu()
    confidence = visible.float() if confidence is None else torch.as_tensor(confidence, dtype=torch.float32).cpu()
    n, t = visible.shape
    if tracks.shape != (n, t, 2) or queries.shape != (n, 3) or confidence.shape != (n, t):
        raise DataError(
            f"tracks {tuple(tracks.shape)}, visible {tuple(visible.shape)}, queries "
            f"{tuple(queries.shape)} and confidence {tuple(confidence.shape)} do not agree"
        )
    return queries, tracks, visible, confidence


def save_tracks(
    path: PathLike,
    queries,
    tracks,
    visible,
    confidence=None,
    size: Optional[tuple[int, int]] = None,
    meta: Optional[dict] = None,
) -> Path:
    """Write one track file (``.json``, ``.csv`` or ``.npz`` by suffix; see the module docstring)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TRACK_SUFFIXES:
        raise DataError(f"track file {path} must end in one of {', '.join(TRACK_SUFFIXES)}")
    queries, tracks, visible, confidence = _check_result(queries, tracks, visible, confidence)
    size_list = [int(s) for s in size] if size is not None else None
    if suffix == ".json":
        record = {
            **(meta or {}),
            "frame_size_wh": size_list,
            "num_frames": int(visible.shape[1]),
            "coordinates": "(x, y) pixels of the original frames, pixel centres at integers",
            "queries": queries.tolist(),
            "tracks": tracks.tolist(),
            "visible": visible.tolist(),
            "confidence": confidence.tolist(),
        }
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(record)))
    elif suffix == ".csv":
        buffer = _io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["point", "t", "x", "y", "visible", "confidence", "query_t", "query_x", "query_y"])
        for n in range(tracks.shape[0]):
            q = queries[n].tolist()
            for t in range(tracks.shape[1]):
                writer.writerow(
                    [
                        n,
                        t,
                        f"{tracks[n, t, 0]:.4f}",
                        f"{tracks[n, t, 1]:.4f}",
                        int(visible[n, t]),
                        f"{confidence[n, t]:.4f}",
                        int(q[0]),
                        f"{q[1]:.4f}",
                        f"{q[2]:.4f}",
                    ]
                )
        atomic_write(path, lambda tmp: Path(tmp).write_text(buffer.getvalue()))
    else:
        arrays = {
            "query_points": queries[:, [0, 2, 1]].numpy(),
            "tracks": tracks.numpy(),
            "occluded": (~visible).numpy(),
            "confidence": confidence.numpy(),
            "video_size": np.asarray(size_list if size_list else [-1, -1], np.int64),
        }

        def write(tmp):
            with open(tmp, "wb") as handle:
                np.savez(handle, **arrays)

        atomic_write(path, write)
    return path


def load_tracks(path: PathLike) -> dict:
    """Read a file of :func:`save_tracks` (or a TAP-Vid-layout ``.npz`` with ``query_points``,
    ``tracks`` and ``occluded``) → {"queries" (N, 3) (t, x, y), "tracks" (N, T, 2), "visible"
    (N, T), "confidence" (N, T)} tensors and "size" (W, H) of the frames, or None where the file
    does not say. A missing or malformed field is one :class:`DataError` naming the file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TRACK_SUFFIXES:
        raise DataError(f"track file {path} must end in one of {', '.join(TRACK_SUFFIXES)}")
    if not path.is_file():
        raise DataError(f"track file not found: {path}")
    try:
        loaded = _read_tracks(path, suffix)
        _check_result(loaded["queries"], loaded["tracks"], loaded["visible"], loaded["confidence"])
    except DataError as error:
        raise DataError(f"track file {path}: {error}") from None
    except KeyError as error:
        raise DataError(f"track file {path} has no field {error}; expected queries, tracks and visibility") from None
    except (ValueError, TypeError, RuntimeError, IndexError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"track file {path} is not a readable {suffix[1:].upper()} track file: {error}") from None
    if not all(bool(torch.isfinite(loaded[k]).all()) for k in ("queries", "tracks")):
        raise DataError(f"track file {path}: queries or tracks hold NaN/inf")
    return loaded


def _read_tracks(path: Path, suffix: str) -> dict:
    if suffix == ".json":
        record = json.loads(path.read_text())
        visible = torch.tensor(record["visible"]).bool()
        confidence = (
            torch.tensor(record["confidence"], dtype=torch.float32) if "confidence" in record else visible.float()
        )
        size = record.get("frame_size_wh")
        return {
            "queries": torch.tensor(record["queries"], dtype=torch.float32),
            "tracks": torch.tensor(record["tracks"], dtype=torch.float32),
            "visible": visible,
            "confidence": confidence,
            "size": tuple(int(v) for v in size) if size else None,
        }
    if suffix == ".csv":
        text = path.read_text()
        if text and not text.endswith("\n"):
            raise ValueError("its last line is cut off (no line end): truncated?")
        rows = list(csv.DictReader(_io.StringIO(text, newline="")))
        if not rows:
            raise ValueError("no rows")
        n = max(int(r["point"]) for r in rows) + 1
        t = max(int(r["t"]) for r in rows) + 1
        if len({(r["point"], r["t"]) for r in rows}) != n * t or len(rows) != n * t:
            raise ValueError(f"{len(rows)} rows for {n} points × {t} frames (one row each): truncated or edited?")
        tracks, visible, confidence, queries = (
            torch.zeros(n, t, 2),
            torch.zeros(n, t, dtype=torch.bool),
            torch.zeros(n, t),
            torch.zeros(n, 3),
        )
        for r in rows:
            i, j = int(r["point"]), int(r["t"])
            tracks[i, j] = torch.tensor([float(r["x"]), float(r["y"])])
            visible[i, j] = bool(int(r["visible"]))
            confidence[i, j] = float(r.get("confidence") or int(r["visible"]))
            queries[i] = torch.tensor([float(r["query_t"]), float(r["query_x"]), float(r["query_y"])])
        return {"queries": queries, "tracks": tracks, "visible": visible, "confidence": confidence, "size": None}
    with np.load(path, allow_pickle=False) as data:
        q = torch.from_numpy(np.asarray(data["query_points"], np.float32))
        visible = ~torch.from_numpy(np.asarray(data["occluded"], bool))
        confidence = (
            torch.from_numpy(np.asarray(data["confidence"], np.float32)) if "confidence" in data else visible.float()
        )
        size = [int(v) for v in data["video_size"]] if "video_size" in data else None
        return {
            "queries": q[:, [0, 2, 1]],
            "tracks": torch.from_numpy(np.asarray(data["tracks"], np.float32)),
            "visible": visible,
            "confidence": confidence,
            "size": tuple(size) if size and min(size) > 0 else None,
        }
