"""Descriptor-grid helpers shared by the trackers (:mod:`hyperfeat.correspond.track`) and
propagation (:mod:`hyperfeat.correspond.propagation`): checks, bilinear sampling at cell xy,
search windows, arg-max cells and the sub-cell soft-argmax, and the per-frame standardisation.

Cells follow :mod:`hyperfeat.geometry`: cell (i, j) of an (h, w) grid is centred at (u, v) =
(j, i); descriptors are (T, D, h, w) or one frame's (D, h, w), L2-normalised over D (cosine).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from hyperfeat.errors import DataError

# ---------------------------------------------------------------------------------------------
# helpers


def check_descriptors(desc: torch.Tensor) -> torch.Tensor:
    """Validate (T, D, h, w) and L2-normalise over D (float32)."""
    if not isinstance(desc, torch.Tensor) or desc.ndim != 4:
        shape = tuple(desc.shape) if isinstance(desc, torch.Tensor) else type(desc).__name__
        raise DataError(f"descriptors must be a (T, D, h, w) tensor; got {shape}")
    if desc.shape[0] == 0:
        raise DataError("empty video: descriptors have T = 0 frames")
    if min(desc.shape[1:]) == 0:
        raise DataError(f"descriptors have an empty dimension: {tuple(desc.shape)} (T, D, h, w)")
    return F.normalize(desc.float(), dim=1)


def check_image_size(image_size: Sequence[int]) -> tuple[int, int]:
    if len(image_size) != 2 or min(int(image_size[0]), int(image_size[1])) < 1:
        raise DataError(f"image_size must be (W, H) with positive sides; got {tuple(image_size)}")
    return int(image_size[0]), int(image_size[1])


def sample_descriptors(desc: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of one frame's (D, h, w) descriptors at (n, 2) cell xy → (n, D), L2-normalised."""
    _, h, w = desc.shape
    scale = cells.new_tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)])
    grid = (cells * scale - 1.0).view(1, 1, -1, 2)  # align_corners=True: -1 is cell 0's centre
    out = F.grid_sample(desc[None], grid, mode="bilinear", padding_mode="border", align_corners=True)
    return F.normalize(out[0, :, 0].T, dim=1)  # (n, D)


def window_mask(centres: torch.Tensor, grid: tuple[int, int], radius: int) -> torch.Tensor:
    """(n, 2) integer cell xy → (n, h, w) bool: cells within ``radius`` (Chebyshev) of each centre."""
    h, w = grid
    rows = torch.arange(h, device=centres.device)
    cols = torch.arange(w, device=centres.device)
    near_rows = (rows[None, :] - centres[:, 1:2]).abs() <= radius  # (n, h)
    near_cols = (cols[None, :] - centres[:, 0:1]).abs() <= radius  # (n, w)
    return near_rows[:, :, None] & near_cols[:, None, :]


def argmax_cell(scores: torch.Tensor) -> torch.Tensor:
    """(n, h, w) → (n, 2) integer cell xy of each maximum."""
    flat = scores.flatten(1).argmax(dim=1)
    w = scores.shape[-1]
    return torch.stack([flat % w, flat // w], dim=1)


def refine_cells(scores: torch.Tensor, cells: torch.Tensor, radius: int, temperature: Optional[float]) -> torch.Tensor:
    """Sub-cell position: weighted mean of the cells within ``radius`` of each integer cell
    (the window shrinks near a border to stay symmetric).

    scores (n, h, w), cells (n, 2) integer xy. Weights are softmax(score / temperature), or the
    scores themselves (clamped at 0) when ``temperature`` is None. Returns (n, 2) float xy.
    """
    if radius <= 0:
        return cells.float()
    h, w = scores.shape[-2:]
    offsets = torch.arange(-radius, radius + 1, device=scores.device)
    oy, ox = torch.meshgrid(offsets, offsets, indexing="ij")
    ox, oy = ox.flatten()[None], oy.flatten()[None]  # (1, M)
    xs, ys = cells[:, 0:1] + ox, cells[:, 1:2] + oy  # (n, M)
    # a window symmetric about the cell (narrowed at the borders), so borders pull no position
    reach_x = torch.minimum(cells[:, 0:1], w - 1 - cells[:, 0:1]).clamp(max=radius)
    reach_y = torch.minimum(cells[:, 1:2], h - 1 - cells[:, 1:2]).clamp(max=radius)
    valid = (ox.abs() <= reach_x) & (oy.abs() <= reach_y)
    index = ys.clamp(0, h - 1) * w + xs.clamp(0, w - 1)
    values = scores.flatten(1).gather(1, index)  # (n, M)
    if temperature is None:
        weights = values.clamp(min=0).masked_fill(~valid, 0)
        total = weights.sum(dim=1, keepdim=True)
        centre = ((ox == 0) & (oy == 0)).float()
        weights = torch.where(total > 0, weights / total.clamp(min=1e-12), centre)
    else:
        weights = torch.softmax((values / temperature).masked_fill(~valid, float("-inf")), dim=1)
    return torch.stack([(weights * xs).sum(1), (weights * ys).sum(1)], dim=1)


def standardise_frames(desc: torch.Tensor) -> torch.Tensor:
    """desc (T, D, h, w) → (T, D, h, w): each frame's channels centred and scaled to unit standard
    deviation over its cells, then L2-normalised over D.

    A change that hits the whole frame (lighting, exposure, white balance) moves every cell's
    descriptor the same way; cosines between frames then read it as an appearance change of every
    point. After this per-frame, per-channel standardisation a per-channel gain and offset common
    to the frame cancels exactly, so a tracker on these descriptors follows points through it."""
    desc = desc.float()
    mean = desc.mean(dim=(2, 3), keepdim=True)  # (T, D, 1, 1)
    std = desc.std(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    return F.normalize((desc - mean) / std, dim=1)


def clamp_cells(xy: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(n, 2) cell xy → (n, 2) clamped onto the (h, w) grid's cell centres [0, w − 1] × [0, h − 1]."""
    h, w = grid
    return torch.stack([xy[:, 0].clamp(0, w - 1), xy[:, 1].clamp(0, h - 1)], dim=1)


def squared_distance(centres: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(n, 2) cell xy → (n, h, w): the squared distance, in cells, of every cell to each centre."""
    h, w = grid
    ys = torch.arange(h, dtype=centres.dtype, device=centres.device)[None, :, None]
    xs = torch.arange(w, dtype=centres.dtype, device=centres.device)[None, None, :]
    return (xs - centres[:, 0, None, None]) ** 2 + (ys - centres[:, 1, None, None]) ** 2


def scores_at(scores: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """scores (n, h, w) read at (n, 2) integer cell xy → (n,)."""
    w = scores.shape[-1]
    return scores.flatten(1).gather(1, (cells[:, 1] * w + cells[:, 0])[:, None])[:, 0]


def cycle_error(
    found: torch.Tensor, query_flat: torch.Tensor, grid: tuple[int, int], start: torch.Tensor
) -> torch.Tensor:
    """Found descriptors (n, D) matched back into the query frame (``query_flat`` (D, h·w), nearest
    cell) → (n,) distance in cells to where each point started (``start`` (n, 2) cell xy)."""
    back = (found @ query_flat).view(-1, *grid)  # (n, h, w)
    return (argmax_cell(back).float() - start).norm(dim=1)
