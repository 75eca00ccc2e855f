"""Label and keypoint propagation along a video (the protocol of Jabri et al. 2020 / DINO's
video evaluation): each frame's labels are a top-k, temperature-softmax vote of its cells'
nearest cells in the first frame and a queue of recent frames, within a local window.
:func:`propagate_mask` carries DAVIS-style object-id masks, :func:`propagate_keypoints`
Gaussian heat maps of joints (JHMDB).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from hyperfeat.correspond.cells import (
    argmax_cell,
    check_descriptors,
    check_image_size,
    refine_cells,
)
from hyperfeat.errors import DataError
from hyperfeat.geometry import cells_to_pixels, pixels_to_cells

# Chunking bound: similarity entries held at once by propagate_labels (floats).
_MAX_SIM_ELEMENTS = 1 << 24

# ---------------------------------------------------------------------------------------------
# masks ↔ labels


def mask_to_labels(
    mask: torch.Tensor, size: Sequence[int], object_ids: Optional[Sequence[int]] = None
) -> tuple[torch.Tensor, list[int]]:
    """(H, W) int object ids → soft one-hot labels (K, h, w) at grid ``size`` = (w, h).

    Channel 0 is the background, channel k the object ``ids[k - 1]`` (``object_ids`` or the
    ids present in ``mask``, without 0 and 255); any other value counts as background. The
    one-hot map is resized with antialiased bilinear interpolation (area-like). Returns the
    labels and the ids.
    """
    if mask.ndim != 2:
        raise DataError(f"mask must be (H, W) object ids; got shape {tuple(mask.shape)}")
    ids = [int(i) for i in (object_ids if object_ids is not None else torch.unique(mask).tolist()) if i not in (0, 255)]
    onehot = torch.zeros(len(ids) + 1, *mask.shape, dtype=torch.float32, device=mask.device)  # (K, H, W)
    for k, obj in enumerate(ids, 1):
        onehot[k] = (mask == obj).float()
    onehot[0] = 1.0 - onehot[1:].sum(0).clamp(max=1)
    w, h = int(size[0]), int(size[1])
    labels = F.interpolate(onehot[None], size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0]
    return labels / labels.sum(0, keepdim=True).clamp(min=1e-6), ids  # (K, h, w)


def labels_to_mask(labels: torch.Tensor, image_size: Sequence[int], object_ids: Sequence[int]) -> torch.Tensor:
    """Soft labels (K, h, w) or (T, K, h, w) → object-id masks (H, W) or (T, H, W) int64.

    Bilinear upsampling (align_corners=False) to ``image_size`` (W, H), then argmax; channel 0
    is the background (id 0), channel k the id ``object_ids[k - 1]``.
    """
    width, height = check_image_size(image_size)
    single = labels.ndim == 3
    batch = labels[None] if single else labels  # (T, K, h, w)
    if batch.shape[1] != len(object_ids) + 1:
        raise DataError(
            f"labels have {batch.shape[1]} channels; expected {len(object_ids) + 1} (background + {list(object_ids)})"
        )
    lookup = torch.tensor([0, *object_ids], dtype=torch.int64, device=labels.device)
    masks = []
    for frame in batch:  # one frame at a time: (K, H, W) floats can be large
        up = F.interpolate(frame[None].float(), size=(height, width), mode="bilinear", align_corners=False)
        masks.append(lookup[up[0].argmax(dim=0)])
    out = torch.stack(masks)  # (T, H, W)
    return out[0] if single else out


# ---------------------------------------------------------------------------------------------
# label propagation


Band = tuple[int, int, int, int, Optional[torch.Tensor]]  # target rows r0:r1, source rows s0:s1, window mask


def _bands(grid: tuple[int, int], radius: Optional[int], num_queue: int, device: torch.device) -> list[Band]:
    """Split the target rows into bands whose similarity block (P, Q, S) stays small.

    Each band lists the source rows a target row can see and, with a radius, the (P, S) bool
    mask of the square window (the same for every frame, so it is built once).
    """
    h, w = grid
    reach = h if radius is None else 2 * radius  # extra source rows beyond a band
    band_rows = h
    while band_rows > 1 and band_rows * w * num_queue * min(h, band_rows + reach) * w > _MAX_SIM_ELEMENTS:
        band_rows = (band_rows + 1) // 2
    rows = torch.arange(h, device=device)
    cols = torch.arange(w, device=device)
    bands: list[Band] = []
    for r0 in range(0, h, band_rows):
        r1 = min(h, r0 + band_rows)
        if radius is None:
            bands.append((r0, r1, 0, h, None))
            continue
        s0, s1 = max(0, r0 - radius), min(h, r1 + radius)
        t_rows, t_cols = rows[r0:r1].repeat_interleave(w), cols.repeat(r1 - r0)
        s_rows, s_cols = rows[s0:s1].repeat_interleave(w), cols.repeat(s1 - s0)
        near = ((t_rows[:, None] - s_rows[None]).abs() <= radius) & ((t_cols[:, None] - s_cols[None]).abs() <= radius)
        bands.append((r0, r1, s0, s1, near))  # near: (P, S)
    return bands


def _propagate_frame(
    target: torch.Tensor,
    sources: torch.Tensor,
    source_labels: torch.Tensor,
    width: int,
    bands: list[Band],
    topk: int,
    temperature: float,
) -> torch.Tensor:
    """Labels of one frame from a queue of frames.

    target (D, h·w); sources (Q, D, h·w); source_labels (Q, K, h·w) → (K, h·w). Each target
    cell takes the top-k most similar cells among the queue frames' cells within the window
    (see :func:`_bands`), softmax(similarity / temperature) over those k, and their labels'
    weighted sum.
    """
    w = width
    num_queue = sources.shape[0]
    out = torch.empty(source_labels.shape[1], target.shape[1], device=target.device)  # (K, h·w)
    for r0, r1, s0, s1, near in bands:
        num_src = (s1 - s0) * w
        sim = torch.matmul(target[:, r0 * w : r1 * w].T[None], sources[:, :, s0 * w : s1 * w])  # (Q, P, S)
        if near is not None:
            sim = sim.masked_fill_(~near[None], float("-inf"))
        k = min(int(topk), num_src)
        values, index = sim.topk(k, dim=2)  # (Q, P, k): the best of each frame …
        index = index + (torch.arange(num_queue, device=sim.device) * num_src)[:, None, None]
        values = values.permute(1, 0, 2).flatten(1)  # (P, Q·k)
        index = index.permute(1, 0, 2).flatten(1)
        k = min(int(topk), values.shape[1])
        values, pick = values.topk(k, dim=1)  # (P, k): … then the best of the queue
        index = index.gather(1, pick)
        weights = torch.softmax(values / temperature, dim=1)  # (P, k); -inf → 0
        labels = source_labels[:, :, s0 * w : s1 * w].permute(1, 0, 2).flatten(1)  # (K, Q·S)
        out[:, r0 * w : r1 * w] = (labels[:, index] * weights[None]).sum(-1)  # (K, P)
    return out


@torch.no_grad()
def propagate_labels(
    desc: torch.Tensor,
    first_labels: torch.Tensor,
    queue_length: int = 20,
    radius: Optional[int] = 12,
    topk: int = 10,
    temperature: float = 0.05,
    progress: bool = False,
) -> torch.Tensor:
    """Propagate soft labels from the first frame through the video.

    desc (T, D, h, w); first_labels (K, h, w) one-hot or soft at descriptor resolution.
    Frame t's labels come from a queue of the first frame (its given labels) and the last
    ``queue_length`` frames before t (their predicted soft labels), each target cell looking at
    the queue frames' cells within ``radius`` cells (square window; None: everywhere), keeping
    the ``topk`` most similar over the whole queue, softmax(cosine / ``temperature``) over
    them, labels = the weighted sum (the STC / DINO / CRW protocol). Returns (T, K, h, w),
    frame 0 being ``first_labels``.
    """
    from tqdm.auto import tqdm

    desc = check_descriptors(desc)
    num_frames, _, h, w = desc.shape
    if first_labels.ndim != 3:
        raise DataError(f"first_labels must be (K, h, w); got shape {tuple(first_labels.shape)}")
    if tuple(first_labels.shape[-2:]) != (h, w):
        raise DataError(
            f"first-frame labels are {tuple(first_labels.shape[-2:])} (h, w) but the descriptors are {(h, w)}; "
            f"make them with mask_to_labels(mask, size=({w}, {h}))"
        )
    if int(topk) < 1 or float(temperature) <= 0 or int(queue_length) < 0:
        raise DataError(f"need topk ≥ 1, temperature > 0, queue_length ≥ 0; got {topk}, {temperature}, {queue_length}")
    radius = None if radius is None else int(radius)
    feats = desc.flatten(2)  # (T, D, h·w)
    out = torch.empty(num_frames, first_labels.shape[0], h * w, device=desc.device)  # (T, K, h·w)
    out[0] = first_labels.to(desc.device).float().flatten(1)
    bands = _bands((h, w), radius, int(queue_length) + 1, desc.device)
    for t in tqdm(range(1, num_frames), desc="propagate", disable=not progress, leave=False):
        queue = [0, *range(max(1, t - int(queue_length)), t)]
        out[t] = _propagate_frame(feats[t], feats[queue], out[queue], w, bands, int(topk), float(temperature))
    return out.view(num_frames, -1, h, w)


@torch.no_grad()
def propagate_mask(
    desc: torch.Tensor,
    first_mask: torch.Tensor,
    image_size: Optional[Sequence[int]] = None,
    object_ids: Optional[Sequence[int]] = None,
    **kwargs,
) -> torch.Tensor:
    """First-frame object-id mask (H, W) → masks (T, H, W) int64 of every frame.

    :func:`mask_to_labels` at descriptor resolution, :func:`propagate_labels` (``kwargs``),
    :func:`labels_to_mask` back at the mask's size; frame 0 is ``first_mask`` itself.
    ``image_size`` (W, H), when given, must be the mask's size.
    """
    desc_checked = check_descriptors(desc)
    if first_mask.ndim != 2:
        raise DataError(f"first-frame mask must be (H, W) object ids; got shape {tuple(first_mask.shape)}")
    size = (int(first_mask.shape[1]), int(first_mask.shape[0]))
    if image_size is not None and tuple(int(s) for s in image_size) != size:
        raise DataError(f"first-frame mask is {size} (W, H) but the frames are {tuple(image_size)} (W, H)")
    h, w = desc_checked.shape[-2:]
    labels, ids = mask_to_labels(first_mask, (w, h), object_ids)
    soft = propagate_labels(desc_checked, labels.to(desc_checked.device), **kwargs)  # (T, K, h, w)
    masks = labels_to_mask(soft, size, ids)  # (T, H, W)
    masks[0] = first_mask.to(masks.device)  # frame 0 is the annotation itself
    return masks


# ---------------------------------------------------------------------------------------------
# keypoint propagation


def keypoint_heatmaps(cells: torch.Tensor, grid: tuple[int, int], sigma: float = 1.0) -> torch.Tensor:
    """(J, 2) cell xy → (J, h, w) Gaussian maps of std ``sigma`` cells, peak 1 (centres clamped into the grid)."""
    h, w = grid
    centre = torch.stack([cells[:, 0].clamp(0, w - 1), cells[:, 1].clamp(0, h - 1)], dim=1)
    ys = torch.arange(h, dtype=torch.float32, device=cells.device)
    xs = torch.arange(w, dtype=torch.float32, device=cells.device)
    dy = (ys[None, :] - centre[:, 1:2]) ** 2  # (J, h)
    dx = (xs[None, :] - centre[:, 0:1]) ** 2  # (J, w)
    maps = torch.exp(-(dy[:, :, None] + dx[:, None, :]) / (2 * sigma**2))  # (J, h, w)
    return maps / maps.flatten(1).amax(1).clamp(min=1e-12)[:, None, None]


def heatmap_peaks(maps: torch.Tensor, soft: bool = True, window: int = 1) -> torch.Tensor:
    """(..., J, h, w) maps → (..., J, 2) cell xy: argmax, refined by the map-weighted mean
    over ``window`` cells around it when ``soft``."""
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, *maps.shape[-2:])  # (n, h, w)
    cells = argmax_cell(flat)
    pos = refine_cells(flat, cells, window, None) if soft else cells.float()
    return pos.view(*lead, 2)


@torch.no_grad()
def propagate_keypoints(
    desc: torch.Tensor,
    first_points: torch.Tensor,
    image_size: Sequence[int],
    queue_length: int = 20,
    radius: Optional[int] = 12,
    topk: int = 10,
    temperature: float = 0.05,
    sigma: float = 1.0,
    soft_argmax: bool = True,
) -> torch.Tensor:
    """Propagate keypoints (J, 2) xy of frame 0 (pixels of a ``image_size`` (W, H) frame).

    Each keypoint becomes a Gaussian heat map (std ``sigma`` cells) at descriptor resolution,
    the maps are propagated with :func:`propagate_labels`, and each frame's position is the
    map's argmax (refined to sub-cell by the map-weighted mean over its 3×3 neighbourhood when
    ``soft_argmax``), scaled back to pixels. Returns (T, J, 2) xy; frame 0 is ``first_points``.
    A keypoint outside the frame starts from the nearest cell.
    """
    desc = check_descriptors(desc)
    width, height = check_image_size(image_size)
    if first_points.ndim != 2 or first_points.shape[-1] != 2:
        raise DataError(f"first_points must be (J, 2) xy; got shape {tuple(first_points.shape)}")
    h, w = desc.shape[-2:]
    points = first_points.to(desc.device).float()
    maps = keypoint_heatmaps(pixels_to_cells(points, (width, height), (h, w)), (h, w), sigma)  # (J, h, w)
    soft = propagate_labels(desc, maps, queue_length, radius, topk, temperature)  # (T, J, h, w)
    tracks = cells_to_pixels(heatmap_peaks(soft, soft_argmax), (width, height), (h, w))  # (T, J, 2)
    tracks[0] = points
    return tracks
