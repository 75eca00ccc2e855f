"""The coordinate convention, written once.

A point is ``(x, y)`` in pixels of the image it belongs to: x to the right, y down, integer
values at pixel centres, so a (W, H) image covers x in [-0.5, W - 0.5] and y in [-0.5, H - 0.5].
Every change of frame is plain per-axis scaling, ``x' = x · W'/W``, ``y' = y · H'/H``
(:func:`rescale_points`): between an image and its resized copy (original ↔ ``load_size``),
between a frame and a descriptor grid (pixels ↔ cells, :func:`pixels_to_cells`), between a
grid and a finer one. A descriptor grid of (h, w) cells over a (W, H) image puts cell (u, v) at
pixel (u · W / w, v · H / h). Points land on grid cells by rounding and clipping
(:func:`points_to_indices`). Video queries are ``(t, x, y)`` with ``t`` a frame index.

Sizes are (W, H) for images and frames, (h, w) for grids (the shape of a tensor's last two
dimensions), as the argument names say.
"""

from __future__ import annotations

from typing import Sequence, TypeVar, Union

import numpy as np
import torch

from hyperfeat.errors import DataError

Points = TypeVar("Points", torch.Tensor, np.ndarray)


def _check_points(points: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(points, torch.Tensor) or points.shape[-1:] != (2,):
        shape = tuple(points.shape) if isinstance(points, torch.Tensor) else type(points).__name__
        raise DataError(f"{name} must be a (..., 2) tensor of (x, y) points; got {shape}")
    points = points.float() if not points.is_floating_point() else points
    if not torch.isfinite(points).all():
        raise DataError(f"{name} must be finite; got NaN or inf in {points.numel() // 2} points")
    return points


def as_points(points, name: str = "points") -> torch.Tensor:
    """Anything point-like (tensor, array, nested lists) → a checked (N, 2) float32 tensor of
    (x, y): one clear line for another shape (e.g. (N, 3)), no points, or NaN/inf."""
    try:
        tensor = torch.as_tensor(np.asarray(points, dtype=np.float32) if not torch.is_tensor(points) else points)
    except (TypeError, ValueError) as err:
        raise DataError(
            f"{name} must be an (N, 2) array of (x, y) numbers; got {type(points).__name__}: {err}"
        ) from None
    if tensor.ndim == 1 and tensor.numel() == 2:
        tensor = tensor[None]
    if tensor.ndim != 2 or tensor.shape[1] != 2:
        raise DataError(f"{name} must be an (N, 2) array of (x, y) points; got shape {tuple(tensor.shape)}")
    if tensor.shape[0] == 0:
        raise DataError(f"{name} is empty: give at least one (x, y) point")
    return _check_points(tensor.float(), name)


def inside_image(points: torch.Tensor, size_wh: Sequence[int]) -> torch.Tensor:
    """(N,) bool: which of ``points`` (N, 2) xy lie on the (W, H) image, x in [-0.5, W - 0.5] and
    y in [-0.5, H - 0.5] (the pixel area; NaN is outside)."""
    w, h = int(size_wh[0]), int(size_wh[1])
    x, y = points[..., 0], points[..., 1]
    return (x >= -0.5) & (x <= w - 0.5) & (y >= -0.5) & (y <= h - 0.5)


def check_inside(points: torch.Tensor, size_wh: Sequence[int], where: str = "image") -> torch.Tensor:
    """``points`` (N, 2) xy, unchanged, when every one lies on the (W, H) image (:func:`inside_image`);
    else a DataError listing the first ones outside (index, (x, y))."""
    w, h = int(size_wh[0]), int(size_wh[1])
    xy = torch.as_tensor(points).reshape(-1, 2)
    bad = (~inside_image(xy, (w, h))).nonzero().flatten().tolist()
    outside = [(i, tuple(xy[i].tolist())) for i in bad]
    if outside:
        raise DataError(
            f"points outside the {w}×{h} {where} (x in [-0.5, {w - 0.5:g}], y in [-0.5, {h - 0.5:g}]; "
            f"index, (x, y)): {outside[:5]}" + (f" … ({len(outside) - 5} more)" if len(outside) > 5 else "")
        )
    return points


def _check_size(size: Sequence[Union[int, float]], name: str) -> tuple[int, int]:
    if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
        raise DataError(f"{name} must be two positive integers; got {tuple(size)!r}")
    return int(size[0]), int(size[1])


def rescale_points(points_xy: Points, from_size_wh: Sequence[int], to_size_wh: Sequence[int]) -> Points:
    """Points (..., 2) of a (W, H) frame in a (W', H') frame: ``x·W'/W, y·H'/H``.

    Tensors are checked (shape, finite values) and keep their dtype and device; numpy arrays
    (the data loaders' annotations, which may hold NaN for missing points) are scaled as they are.
    """
    (w0, h0), (w1, h1) = _check_size(from_size_wh, "from_size_wh"), _check_size(to_size_wh, "to_size_wh")
    if isinstance(points_xy, np.ndarray):
        return points_xy * np.array([w1 / w0, h1 / h0])
    return _scale(_check_points(points_xy, "points_xy"), (w0, h0), (w1, h1))


def _scale(points: torch.Tensor, from_size_wh: Sequence[int], to_size_wh: Sequence[int]) -> torch.Tensor:
    """The scaling of :func:`rescale_points` without the checks of the points: the trackers carry
    NaN for points that have no position yet."""
    (w0, h0), (w1, h1) = _check_size(from_size_wh, "from_size_wh"), _check_size(to_size_wh, "to_size_wh")
    return points * points.new_tensor([w1 / w0, h1 / h0])


def pixels_to_cells(points: torch.Tensor, image_size_wh: Sequence[int], grid_hw: Sequence[int]) -> torch.Tensor:
    """(..., 2) xy pixels of a (W, H) frame → cell coordinates of an (h, w) grid (NaN stays NaN)."""
    return _scale(points, image_size_wh, (grid_hw[1], grid_hw[0]))


def cells_to_pixels(cells: torch.Tensor, image_size_wh: Sequence[int], grid_hw: Sequence[int]) -> torch.Tensor:
    """(..., 2) cell coordinates of an (h, w) grid → xy pixels of a (W, H) frame (NaN stays NaN)."""
    return _scale(cells, (grid_hw[1], grid_hw[0]), image_size_wh)


def points_to_indices(points_xy: torch.Tensor, size_hw: Sequence[int]) -> torch.Tensor:
    """Flat indices ``y·w + x`` of points (..., 2) on an (h, w) grid: rounded, clipped → (...) long."""
    points_xy = _check_points(points_xy, "points_xy")
    h, w = _check_size(size_hw, "size_hw")
    xy = torch.round(points_xy)
    x = xy[..., 0].clamp(0, w - 1).long()
    y = xy[..., 1].clamp(0, h - 1).long()
    return y * w + x


def indices_to_points(indices: torch.Tensor, size_hw: Sequence[int]) -> torch.Tensor:
    """(x, y) float points (..., 2) of flat indices (...) on an (h, w) grid."""
    _, w = _check_size(size_hw, "size_hw")
    return torch.stack([indices % w, torch.div(indices, w, rounding_mode="floor")], dim=-1).float()
