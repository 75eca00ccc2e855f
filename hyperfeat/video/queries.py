"""Query sets and track files, CoTracker-style.

* :func:`grid_queries`: a ``grid_size × grid_size`` grid of points over the frame at
  ``grid_query_frame`` (cell centres of an even grid, so no point sits on the border).
* :func:`mask_queries`: points inside a segmentation mask (``segm_mask``): the grid points that
  fall inside it, or, with ``num_points``, points drawn inside it with a seeded generator.
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
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from hyperfeat.errors import DataError
from hyperfeat.io import PathLike, atomic_write

TRACK_SUFFIXES = (".json", ".csv", ".npz")


def grid_queries(grid_size: int, size: tuple[int, int], grid_query_frame: int = 0) -> torch.Tensor:
    """(grid_size², 3) queries (t, x, y) at the centres of an even grid over a (W, H) frame."""
    width, height = int(size[0]), int(size[1])
    n = int(grid_size)
    if n < 1:
        raise DataError(f"grid size must be a positive integer; got {grid_size!r}")
    if n > min(width, height):
        raise DataError(f"a {n}×{n} grid does not fit a {width}×{height} frame: the grid size must be at most "
                        f"{min(width, height)} (the frame's shorter side, one point per pixel)")
    xs = (torch.arange(n) + 0.5) * width / n - 0.5
    ys = (torch.arange(n) + 0.5) * height / n - 0.5
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    t = torch.full((n * n,), float(grid_query_frame))
    return torch.stack([t, gx.flatten(), gy.flatten()], 1)


def in_mask(fg: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """(N, 2) xy pixel points → (N,) bool: the (H, W) ``fg`` pixel nearest each (clamped to the frame)."""
    ij = xy.round().long()
    return fg[ij[:, 1].clamp(0, fg.shape[0] - 1), ij[:, 0].clamp(0, fg.shape[1] - 1)]


def check_segm_mask(mask, size: tuple[int, int]) -> np.ndarray:
    """A mask (H, W) of the frame size → bool (H, W); an empty mask or another size is a DataError."""
    array = np.asarray(mask.numpy() if isinstance(mask, torch.Tensor) else mask)
    if array.ndim == 3:  # an RGB(A) PNG: any non-black pixel
        array = array[..., :3].max(-1)
    if array.ndim != 2:
        raise DataError(f"segmentation mask must be (H, W); got shape {array.shape}")
    if (array.shape[1], array.shape[0]) != tuple(size):
        raise DataError(f"segmentation mask is {array.shape[1]}×{array.shape[0]} (W×H) but the video frames are "
                        f"{size[0]}×{size[1]}: give a mask of the frames' original size")
    inside = array > 0
    if not inside.any():
        raise DataError("segmentation mask is empty: no pixel is set, so there is no point to track")
    return inside


def mask_queries(mask, size: tuple[int, int], grid_size: Optional[int] = None, num_points: Optional[int] = None,
                 grid_query_frame: int = 0, seed: int = 0) -> torch.Tensor:
    """Queries (t, x, y) inside ``mask``: the points of a ``grid_size`` grid that fall inside it,
    or ``num_points`` pixels drawn inside it (seeded, without repeats while there are enough)."""
    inside = check_segm_mask(mask, size)
    if grid_size is not None:
        grid = grid_queries(grid_size, size, grid_query_frame)
        keep = in_mask(torch.from_numpy(inside), grid[:, 1:])
        if not keep.any():
            raise DataError(f"no point of the {grid_size}×{grid_size} grid falls inside the mask: use a finer grid")
        return grid[keep]
    count = int(num_points or 64)
    rows, cols = np.nonzero(inside)
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
        raise DataError(f"tracks {tuple(tracks.shape)}, visible {tuple(visible.shape)}, queries "
                        f"{tuple(queries.shape)} and confidence {tuple(confidence.shape)} do not agree")
    return queries, tracks, visible, confidence


def save_tracks(path: PathLike, queries, tracks, visible, confidence=None, size: Optional[tuple[int, int]] = None,
                meta: Optional[dict] = None) -> Path:
    """Write one track file (``.json``, ``.csv`` or ``.npz`` by suffix; see the module docstring)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TRACK_SUFFIXES:
        raise DataError(f"track file {path} must end in one of {', '.join(TRACK_SUFFIXES)}")
    queries, tracks, visible, confidence = _check_result(queries, tracks, visible, confidence)
    size_list = [int(s) for s in size] if size is not None else None
    if suffix == ".json":
        record = {**(meta or {}), "frame_size_wh": size_list, "num_frames": int(visible.shape[1]),
                  "coordinates": "(x, y) pixels of the original frames, pixel centres at integers",
                  "queries": queries.tolist(), "tracks": tracks.tolist(), "visible": visible.tolist(),
                  "confidence": confidence.tolist()}
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(record)))
    elif suffix == ".csv":
        buffer = _io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["point", "t", "x", "y", "visible", "confidence", "query_t", "query_x", "query_y"])
        for n in range(tracks.shape[0]):
            q = queries[n].tolist()
            for t in range(tracks.shape[1]):
                writer.writerow([n, t, f"{tracks[n, t, 0]:.4f}", f"{tracks[n, t, 1]:.4f}", int(visible[n, t]),
                                 f"{confidence[n, t]:.4f}", int(q[0]), f"{q[1]:.4f}", f"{q[2]:.4f}"])
        atomic_write(path, lambda tmp: Path(tmp).write_text(buffer.getvalue()))
    else:
        arrays = {"query_points": queries[:, [0, 2, 1]].numpy(), "tracks": tracks.numpy(),
                  "occluded": (~visible).numpy(), "confidence": confidence.numpy(),
                  "video_size": np.asarray(size_list if size_list else [-1, -1], np.int64)}

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
    except (ValueError, TypeError, RuntimeError, IndexError, OSError) as error:
        raise DataError(f"track file {path} is not a readable {suffix[1:].upper()} track file: {error}") from None
    if not all(bool(torch.isfinite(loaded[k]).all()) for k in ("queries", "tracks")):
        raise DataError(f"track file {path}: queries or tracks hold NaN/inf")
    return loaded


def _read_tracks(path: Path, suffix: str) -> dict:
    if suffix == ".json":
        record = json.loads(path.read_text())
        visible = torch.tensor(record["visible"]).bool()
        confidence = torch.tensor(record["confidence"], dtype=torch.float32) if "confidence" in record else visible.float()
        size = record.get("frame_size_wh")
        return {"queries": torch.tensor(record["queries"], dtype=torch.float32),
                "tracks": torch.tensor(record["tracks"], dtype=torch.float32), "visible": visible,
                "confidence": confidence, "size": tuple(int(v) for v in size) if size else None}
    if suffix == ".csv":
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        if not rows:
            raise ValueError("no rows")
        n = max(int(r["point"]) for r in rows) + 1
        t = max(int(r["t"]) for r in rows) + 1
        tracks, visible, confidence, queries = torch.zeros(n, t, 2), torch.zeros(n, t, dtype=torch.bool), torch.zeros(n, t), torch.zeros(n, 3)
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
        confidence = torch.from_numpy(np.asarray(data["confidence"], np.float32)) if "confidence" in data else visible.float()
        size = [int(v) for v in data["video_size"]] if "video_size" in data else None
        return {"queries": q[:, [0, 2, 1]], "tracks": torch.from_numpy(np.asarray(data["tracks"], np.float32)),
                "visible": visible, "confidence": confidence,
                "size": tuple(size) if size and min(size) > 0 else None}
