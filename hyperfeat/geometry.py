"""TODO docstring (hyperfeat.matching, hyperfeat.video, hyperfeat.data.pairs)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from hyperfeat.errors import DataError


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
        raise DataError(f"{name} must be an (N, 2) array of (x, y) numbers; got {type(points).__name__}: {err}") from None
    if tensor.ndim == 1 and tensor.numel() == 2:
        tensor = tensor[None]
    if tensor.ndim != 2 or tensor.shape[1] != 2:
        raise DataError(f"{name} must be an (N, 2) array of (x, y) points; got shape {tuple(tensor.shape)}")
    if tensor.shape[0] == 0:
        raise DataError(f"{name} is empty: give at least one (x, y) point")
    return _check_points(tensor.float(), name)


def _check_size(size: tuple[int, int], name: str) -> tuple[int, int]:
    if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
        raise DataError(f"{name} must be two positive integers; got {size!r}")
    return int(size[0]), int(size[1])




# ---------------------------------------------------------------------------- points


def points_to_indices(points_xy: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """Flat indices ``y·w + x`` of points (..., 2) on an (h, w) grid: rounded, clipped → (...) long."""
    points_xy = _check_points(points_xy, "points_xy")
    h, w = _check_size(size_hw, "size_hw")
    xy = torch.round(points_xy)
    x = xy[..., 0].clamp(0, w - 1).long()
    y = xy[..., 1].clamp(0, h - 1).long()
    return y * w + x




def indices_to_points(indices: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """(x, y) float points (..., 2) of flat indices (...) on an (h, w) grid."""
    _, w = _check_size(size_hw, "size_hw")
    return torch.stack([indices % w, torch.div(indices, w, rounding_mode="floor")], dim=-1).float()




def rescale_points(
    points_xy: torch.Tensor, from_size_wh: tuple[int, int], to_size_wh: tuple[int, int]
) -> torch.Tensor:
    """Points (..., 2) of a (W, H) frame in a (W', H') frame: ``x·W'/W, y·H'/H``."""
    points_xy = _check_points(points_xy, "points_xy")
    (w0, h0), (w1, h1) = _check_size(from_size_wh, "from_size_wh"), _check_size(to_size_wh, "to_size_wh")
    scale = points_xy.new_tensor([w1 / w0, h1 / h0])
    return points_xy * scale




def pixels_to_cells(points: torch.Tensor, image_size: Sequence[int], grid: tuple[int, int]) -> torch.Tensor:
    """(..., 2) xy pixels of a (W, H) frame → cell coordinates of an (h, w) grid."""
    width, height = image_size
    h, w = grid
    return points * points.new_tensor([w / width, h / height])




def cells_to_pixels(cells: torch.Tensor, image_size: Sequence[int], grid: tuple[int, int]) -> torch.Tensor:
    """(..., 2) cell coordinates of an (h, w) grid → xy pixels of a (W, H) frame."""
    width, height = image_size
    h, w = grid
    return cells * cells.new_tensor([width / w, height / h])




def scale_points(points: np.ndarray, size: tuple[int, int], load_size: int) -> np.ndarray:
    """(N, 2) points in an image of size (W, H) → the load_size × load_size frame."""
    w, h = size
    return points * np.array([load_size / w, load_size / h])
