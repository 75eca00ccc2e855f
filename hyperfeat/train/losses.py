"""Training losses: the reference's correspondence loss and the temporal cycle-walk loss.

:func:`correspondence_loss` is the reference's symmetric cross-entropy over cosine similarities.

For each annotated point of image A, the logits are the cosine similarities of A's descriptor at
that point with every cell of B's map, times 1/temperature; the label is the cell of the matching
point in B. The same from B to A; the loss is the mean of the two directions. Points are given in
the ``load_size`` frame and reach the descriptor grid by plain scaling, rounding and clipping
(:func:`hyperfeat.geometry.points_to_indices`), as the reference does. Video frame pairs with
exact tracks train with the same loss (occluded points are ``valid=False``).

:func:`cycle_walk_loss` needs no labels: the contrastive random walk over a palindrome of frames
of a clip (Jabri et al. 2020), for training on unlabelled video and for test-time adaptation.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from hyperfeat.correspond.matching import EPS
from hyperfeat.errors import DataError, HyperfeatError
from hyperfeat.geometry import points_to_indices, rescale_points


def _check_inputs(
    desc_a: torch.Tensor,
    desc_b: torch.Tensor,
    points_a: torch.Tensor,
    points_b: torch.Tensor,
    valid: torch.Tensor,
) -> None:
    if desc_a.dim() != 4 or desc_b.dim() != 4 or desc_a.shape[:2] != desc_b.shape[:2]:
        raise DataError(
            f"desc_a and desc_b must be (B, D, h, w) with the same B and D; "
            f"got {tuple(desc_a.shape)} and {tuple(desc_b.shape)}"
        )
    b = desc_a.shape[0]
    for name, pts in (("points_a", points_a), ("points_b", points_b)):
        if pts.dim() != 3 or pts.shape[0] != b or pts.shape[2] != 2:
            raise DataError(f"{name} must be (B={b}, N, 2) (x, y) points; got {tuple(pts.shape)}")
    if points_a.shape != points_b.shape or valid.shape != points_a.shape[:2]:
        raise DataError(
            f"points_a {tuple(points_a.shape)}, points_b {tuple(points_b.shape)} and valid "
            f"{tuple(valid.shape)} must be (B, N, 2), (B, N, 2) and (B, N)"
        )


def _grid_indices(points: torch.Tensor, valid: torch.Tensor, load_size: int, size_hw: tuple[int, int]) -> torch.Tensor:
    """Flat cell indices (B, N) of load-frame points (B, N, 2); invalid points (may be NaN) → 0."""
    h, w = size_hw
    points = torch.where(valid[..., None], points.float(), torch.zeros((), device=points.device))
    scaled = rescale_points(points, (load_size, load_size), (w, h))  # load frame → grid cells
    return points_to_indices(scaled, (h, w))


def _directional_ce(
    query: torch.Tensor,
    keys: torch.Tensor,
    query_idx: torch.Tensor,
    key_idx: torch.Tensor,
    valid: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Cross-entropy from the query cells to the key cells, over the valid points of the batch.

    query, keys: (B, h·w, D) unit vectors; query_idx, key_idx, valid: (B, N).
    """
    d = query.shape[2]
    vectors = torch.gather(query, 1, query_idx[..., None].expand(-1, -1, d))  # (B, N, D)
    logits = vectors @ keys.transpose(1, 2) / temperature  # (B, N, h'·w')
    return F.cross_entropy(logits[valid], key_idx[valid])


def _unit_cells(desc: torch.Tensor) -> torch.Tensor:
    return F.normalize(desc.flatten(2), dim=1, eps=EPS).transpose(1, 2)  # (B, h·w, D)


def correspondence_loss(
    desc_a: torch.Tensor,
    desc_b: torch.Tensor,
    points_a: torch.Tensor,
    points_b: torch.Tensor,
    valid: torch.Tensor,
    load_size: int,
    temperature: float = 0.07,
) -> torch.Tensor:
    """Symmetric correspondence cross-entropy, pooled over all valid points of the batch.

    desc_a, desc_b: (B, D, h, w) descriptor maps (the two grids may differ in size);
    points_a[i, k] ↔ points_b[i, k]: (B, N, 2) (x, y) in the load_size × load_size frame;
    valid: (B, N) bool, False for padding (those points may hold anything, NaN included).
    A batch without a valid point gives a zero that keeps the graph.
    """
    _check_inputs(desc_a, desc_b, points_a, points_b, valid)
    if not temperature > 0 or not load_size > 0:
        raise HyperfeatError(f"temperature and load_size must be > 0; got {temperature} and {load_size}")
    device = desc_a.device
    points_a, points_b, valid = points_a.to(device), points_b.to(device), valid.to(device).bool()
    if not valid.any():
        return (desc_a.sum() + desc_b.sum()) * 0.0
    idx_a = _grid_indices(points_a, valid, load_size, tuple(desc_a.shape[2:]))
    idx_b = _grid_indices(points_b, valid, load_size, tuple(desc_b.shape[2:]))
    cells_a, cells_b = _unit_cells(desc_a), _unit_cells(desc_b)
    loss_ab = _directional_ce(cells_a, cells_b, idx_a, idx_b, valid, temperature)
    loss_ba = _directional_ce(cells_b, cells_a, idx_b, idx_a, valid, temperature)
    return (loss_ab + loss_ba) / 2


def walk_transitions(desc_from: torch.Tensor, desc_to: torch.Tensor, temperature: float) -> torch.Tensor:
    """Row-stochastic transition matrices (B, n, m) of a walk from the cells of one frame to the
    cells of the next: softmax over the next frame's cells of cosine similarity / temperature.

    desc_from: (B, D, h, w), desc_to: (B, D, h', w').
    """
    logits = _unit_cells(desc_from) @ _unit_cells(desc_to).transpose(1, 2) / temperature  # (B, n, m)
    return logits.softmax(dim=-1)


def shift_maps(maps: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``maps`` (..., H, W) moved by (dy, dx) cells: what was at (y, x) is at (y + dy, x + dx); the
    cells moved in from outside are zero. The input of a walk's shifted home (:func:`cycle_walk_loss`):
    the network sees the moved maps, so what it knows of the frame's edges stays where it was."""
    height, width = maps.shape[-2:]
    if abs(dy) >= height or abs(dx) >= width:
        raise DataError(f"a shift of ({dy}, {dx}) cells moves the whole {height}×{width} map out of view")
    moved = torch.zeros_like(maps)
    moved[..., max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = maps[
        ..., max(-dy, 0) : height + min(-dy, 0), max(-dx, 0) : width + min(-dx, 0)
    ]
    return moved


def draw_shift(rng: np.random.Generator, size: int, pool: int, share: float) -> tuple[int, int]:
    """A random (dy, dx) for a walk's shifted home (:func:`cycle_walk_loss`): each up to ``share``
    of the ``size``-cell grid, a multiple of ``pool`` cells, not both zero."""
    if not 0 < share < 1 or size < 1 or pool < 1:
        raise HyperfeatError(f"a walk's shift needs share in (0, 1), size and pool >= 1; got {share}, {size}, {pool}")
    most = max(1, int(share * size) // pool)  # pooled cells
    dy, dx = 0, 0
    while dy == 0 and dx == 0:
        dy, dx = (int(v) * pool for v in rng.integers(-most, most + 1, size=2))
    return dy, dx


def cycle_walk_loss(
    frames: torch.Tensor,
    temperature: float = 0.07,
    pool: int = 1,
    edge_dropout: float = 0.0,
    generator: Optional[torch.Generator] = None,
    across_batch: bool = False,
    mirrored_home: Optional[torch.Tensor] = None,
    shifted_home: Optional[tuple[torch.Tensor, int, int]] = None,
) -> torch.Tensor:
    """The contrastive random walk (Jabri et al., NeurIPS 2020) on a palindrome of frames.

    frames: (B, K, D, h, w) descriptors of K frames of a clip (K >= 2). Every cell of frame 0
    starts a walk t0 → t1 → … → tk → … → t1 → t0 (transitions :func:`walk_transitions`, the
    way back computed from the later frame), for each k = 1 … K-1; the loss is the mean over
    the cells and the k of −log P(walk returns to its start). It is ≈ 0 when every cell has a
    distinct descriptor found again in the other frames, and log(n) for featureless frames.
    ``pool``: average-pool the maps by this factor first (fewer cells: n² memory);
    ``edge_dropout``: zero this fraction of the forward transitions before renormalising (the
    paper's edge dropout, drawn from ``generator``); ``across_batch``: every step may go to the
    cells of the next frame of *every* clip of the batch (one graph of B·n cells per time step), so
    descriptors that only encode position cannot find their way home (each clip's cell (i, j)
    looks alike: at best 1/B of the walk returns), only content tells the clips apart.

    ``mirrored_home``: (B, D, h, w) descriptors of frame 0 of each clip computed from its
    left–right mirrored image. The last step of every walk then goes to these cells instead of
    frame 0's own, and "home" is the mirrored cell (row y, column w'−1−x). Descriptors that only
    encode position come back to the wrong side (the shortcut fails); descriptors of what is
    there come home. The mirror also asks the network to describe a thing and its mirror image
    alike, which a describer of oriented structure (the classical bank's x-derivatives, the
    left/right halves of its histograms) can only do by dropping what tells them apart.

    ``shifted_home``: (descriptors (B, D, h, w), dy, dx) of frame 0 computed from its maps moved
    by (dy, dx) cells of the unpooled grid (:func:`shift_maps`; multiples of ``pool``). The last
    step goes there and home is the moved cell (y + dy, x + dx); walks whose home left the frame
    are not counted. Position alone misses home by the shift, as with the mirror, but the content
    is the same content, so nothing but position has to be given up.
    """
    if frames.dim() != 5 or frames.shape[1] < 2:
        raise DataError(f"frames must be (B, K >= 2, D, h, w) descriptors; got {tuple(frames.shape)}")
    if not temperature > 0 or int(pool) < 1 or not 0.0 <= edge_dropout < 1.0:
        raise HyperfeatError(
            f"temperature must be > 0, pool >= 1 and edge_dropout in [0, 1); got "
            f"{temperature}, {pool} and {edge_dropout}"
        )
    b, k = frames.shape[:2]
    pool = int(pool)
    maps = frames.flatten(0, 1)  # (B·K, D, h, w)
    if pool > 1:
        maps = F.avg_pool2d(maps, pool, ceil_mode=True)
    maps = maps.unflatten(0, (b, k))  # (B, K, D, h', w')
    height, width = maps.shape[-2:]
    rows = torch.arange(height, device=frames.device)[:, None]  # (h', 1)
    cols = torch.arange(width, device=frames.device)[None, :]  # (1, w')
    home, home_cells, counted = None, None, None  # where the last step goes, each walk's home cell there, walks counted
    if mirrored_home is not None and shifted_home is not None:
        raise HyperfeatError("a walk ends on the mirrored or on the shifted first frame, not both")
    if shifted_home is not None:
        home, dy, dx = shifted_home
        if tuple(home.shape) != (b, *frames.shape[2:]) or dy % pool or dx % pool:
            raise DataError(
                f"shifted_home must be (B, D, h, w) = {(b, *frames.shape[2:])} descriptors moved by multiples of "
                f"pool={pool} cells; got {tuple(home.shape)} moved by ({dy}, {dx})"
            )
        rows, cols = rows + dy // pool, cols + dx // pool
        counted = ((rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)).flatten()  # (n,)
        if not counted.any():
            raise DataError(f"shifted_home moved by ({dy}, {dx}) cells leaves no cell of the {height}×{width} grid")
        home_cells = (rows.clamp(0, height - 1) * width + cols.clamp(0, width - 1)).flatten()  # (n,)
    if mirrored_home is not None:
        if tuple(mirrored_home.shape) != (b, *frames.shape[2:]):
            raise DataError(
                f"mirrored_home must be (B, D, h, w) = {(b, *frames.shape[2:])}; got {tuple(mirrored_home.shape)}"
            )
        home = mirrored_home
        home_cells = (rows * width + (width - 1 - cols)).flatten()  # (n,): the mirrored cell of each cell
    if home is not None:
        home = F.avg_pool2d(home, pool, ceil_mode=True) if pool > 1 else home  # (B, D, h', w')
        if across_batch:  # the B clips' home cells side by side, as the frames' below
            home = home.permute(1, 0, 2, 3).flatten(2)[None]  # (1, D, B, h'·w')
            offsets = torch.arange(b, device=frames.device)[:, None] * len(home_cells)  # (B, 1)
            home_cells = (offsets + home_cells[None]).flatten()  # (B·n,)
            counted = None if counted is None else counted.repeat(b)
    if across_batch:  # one graph per time step: the B clips' cells side by side
        maps = maps.permute(1, 2, 0, 3, 4).flatten(3)[None]  # (1, K, D, B, h'·w')
    forward = [walk_transitions(maps[:, i], maps[:, i + 1], temperature) for i in range(k - 1)]  # (B, n, n) each
    if edge_dropout > 0:
        dropped = []
        for a in forward:
            keep = (torch.rand(a.shape, generator=generator).to(a.device) >= edge_dropout).to(a.dtype)
            a = a * keep
            dropped.append(a / a.sum(-1, keepdim=True).clamp_min(EPS))
        forward = dropped
    backward = [walk_transitions(maps[:, i + 1], maps[:, i], temperature) for i in range(k - 1)]
    n = forward[0].shape[1]
    start = torch.arange(n, device=frames.device)
    target = start  # the cell each walk must end on
    if home is not None:  # the last step lands on the mirrored or shifted frame 0
        backward[0] = walk_transitions(maps[:, 1], home, temperature)
        target = home_cells
    losses = []
    there = None
    for i in range(k - 1):
        there = forward[i] if there is None else there @ forward[i]  # (B, n, n): frame 0 → frame i+1
        walk = there
        for j in range(i, -1, -1):
            walk = walk @ backward[j]  # … → back to frame 0
        returned = walk[:, start, target].clamp_min(1e-20)  # (B, n): P(back at the start)
        losses.append(-returned.log().mean() if counted is None else -returned[:, counted].log().mean())
    return torch.stack(losses).mean()
