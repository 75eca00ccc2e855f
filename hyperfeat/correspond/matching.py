"""Correspondence from descriptor maps: cosine similarity, nearest neighbour, mutual NN, soft-argmax.

Coordinate convention (the whole project)
-----------------------------------------
A point is ``(x, y)`` in pixels of the frame it belongs to: x to the right, y down, integer
values at pixel centres (pixel (0, 0) has its centre at (0, 0)). A descriptor map ``(D, h, w)``
is a frame of its own: cell (i, j) has centre (x=j, y=i). Rescaling a point between two frame
sizes is plain scaling, ``x' = x·W'/W, y' = y·H'/H``, as the reference implementation does
(not the centre-aligned ``(x + 0.5)·W'/W − 0.5``). A flat index into an ``(h, w)`` grid is
``y·w + x`` after rounding (half to even, like ``np.round``) and clipping to the grid.

Sizes are passed as ``size_wh = (W, H)`` for image frames and ``size_hw = (h, w)`` for grids;
the suffix says which.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple, overload

import torch
import torch.nn.functional as F

from hyperfeat.errors import DataError, HyperfeatError
from hyperfeat.geometry import (
    _check_points,
    _check_size,
    indices_to_points,
    points_to_indices,
    rescale_points,
)

EPS = 1e-8


CHUNK = 64  # query points per similarity chunk: 64 × 512 × 512 float32 = 64 MiB


# Default soft-argmax temperature over cosine similarities: the value of the config's
# ``eval.softmax_temperature`` (runs pass the config value; these defaults agree with it).
# Cosines lie in [-1, 1]: at 0.02 a peak 0.25 above the rest outweighs a 512 × 512 map of
# background pixels (e^12.5 ≈ 262k); at 0.07 (the training loss's temperature) the background
# mass would drag the estimate towards the map's centre.
SOFTMAX_TEMPERATURE = 0.02


Method = Literal["nn", "mutual_nn", "soft_argmax"]


METHODS = ("nn", "mutual_nn", "soft_argmax")


# ---------------------------------------------------------------------------- validation


def _check_desc(desc: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(desc, torch.Tensor) or desc.dim() != 3 or min(desc.shape) < 1:
        shape = tuple(desc.shape) if isinstance(desc, torch.Tensor) else type(desc).__name__
        raise DataError(f"{name} must be a (D, h, w) descriptor map; got {shape}")
    return desc


def _check_pair(src_desc: torch.Tensor, tgt_desc: torch.Tensor) -> None:
    _check_desc(src_desc, "src_desc")
    _check_desc(tgt_desc, "tgt_desc")
    if src_desc.shape[0] != tgt_desc.shape[0]:
        raise DataError(f"descriptor dims differ: src_desc has {src_desc.shape[0]}, tgt_desc {tgt_desc.shape[0]}")


def _check_sim(sim: torch.Tensor) -> torch.Tensor:
    if not isinstance(sim, torch.Tensor) or sim.dim() != 3 or min(sim.shape[1:]) < 1:
        shape = tuple(sim.shape) if isinstance(sim, torch.Tensor) else type(sim).__name__
        raise DataError(f"sim must be an (N, h, w) similarity map; got {shape}")
    return sim


# ---------------------------------------------------------------------------- descriptors


def cosine_similarity(src_vectors: torch.Tensor, tgt_desc: torch.Tensor) -> torch.Tensor:
    """Cosine similarity (N, h, w) of N vectors (N, D) with every cell of a (D, h, w) map."""
    d, h, w = _check_desc(tgt_desc, "tgt_desc").shape
    if src_vectors.dim() != 2 or src_vectors.shape[1] != d:
        raise DataError(f"src_vectors must be (N, {d}) to match tgt_desc; got {tuple(src_vectors.shape)}")
    src = F.normalize(src_vectors, dim=1, eps=EPS)  # (N, D)
    tgt = F.normalize(tgt_desc.reshape(d, h * w), dim=0, eps=EPS)  # (D, h·w)
    return (src @ tgt).view(-1, h, w)


def descriptors_at(
    desc: torch.Tensor, points_xy: torch.Tensor, mode: Literal["nearest", "bilinear"] = "nearest"
) -> torch.Tensor:
    """Descriptors (N, D) at points (N, 2) given in the grid frame of ``desc`` (D, h, w).

    ``nearest`` rounds and clips (as :func:`points_to_indices`); ``bilinear`` clamps the point to
    the grid and interpolates the four surrounding cells (differentiable in ``desc``).
    """
    d, h, w = _check_desc(desc, "desc").shape
    points_xy = _check_points(points_xy, "points_xy").reshape(-1, 2).to(desc.device)
    flat = desc.reshape(d, h * w)  # (D, h·w)
    if mode == "nearest":
        return flat[:, points_to_indices(points_xy, (h, w))].T
    if mode != "bilinear":
        raise HyperfeatError(f"mode must be 'nearest' or 'bilinear'; got {mode!r}")
    x = points_xy[:, 0].clamp(0, w - 1)
    y = points_xy[:, 1].clamp(0, h - 1)
    x0, y0 = x.floor().long(), y.floor().long()
    x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)
    fx, fy = (x - x0).to(desc.dtype), (y - y0).to(desc.dtype)  # (N,)
    out = (
        flat[:, y0 * w + x0] * ((1 - fx) * (1 - fy))
        + flat[:, y0 * w + x1] * (fx * (1 - fy))
        + flat[:, y1 * w + x0] * ((1 - fx) * fy)
        + flat[:, y1 * w + x1] * (fx * fy)
    )  # (D, N)
    return out.T


# ---------------------------------------------------------------------------- argmax


def nearest_neighbour(sim: torch.Tensor) -> torch.Tensor:
    """(x, y) of the maximum of each of N similarity maps (N, h, w) → (N, 2) float."""
    n, h, w = _check_sim(sim).shape
    return indices_to_points(sim.reshape(n, h * w).argmax(dim=1), (h, w))


def soft_argmax(sim: torch.Tensor, temperature: float = SOFTMAX_TEMPERATURE, window: int | None = None) -> torch.Tensor:
    """Softmax(sim / temperature)-weighted mean (x, y) of each map (N, h, w) → (N, 2) float.

    With ``window = r`` only the (2r+1)×(2r+1) cells around the argmax (clipped at the border)
    take part: a distant second mode then cannot pull the estimate between the two.
    """
    n, h, w = _check_sim(sim).shape
    if not temperature > 0:
        raise HyperfeatError(f"temperature must be > 0; got {temperature}")
    if window is not None and (int(window) != window or window < 0):
        raise HyperfeatError(f"window must be None or an integer >= 0; got {window!r}")
    logits = sim.reshape(n, h * w).float() / temperature  # (N, h·w)
    grid = indices_to_points(torch.arange(h * w, device=sim.device), (h, w))  # (h·w, 2)
    if window is not None:
        peak = indices_to_points(logits.argmax(dim=1), (h, w))  # (N, 2)
        inside = ((grid[None] - peak[:, None]).abs() <= window).all(dim=-1)  # (N, h·w)
        logits = logits.masked_fill(~inside, float("-inf"))
    return torch.softmax(logits, dim=1) @ grid


def _nn_indices(query: torch.Tensor, keys: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Index of the most similar key (M, D) for each query (N, D); both already normalised."""
    return torch.cat([(q @ keys.T).argmax(dim=1) for q in query.split(chunk)])


def _normalised_cells(desc: torch.Tensor) -> torch.Tensor:
    d = desc.shape[0]
    return F.normalize(desc.reshape(d, -1).float(), dim=0, eps=EPS).T  # (h·w, D)


def mutual_nearest_neighbours(src_desc: torch.Tensor, tgt_desc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All mutual nearest-neighbour cell pairs of two maps (D, h, w), (D, h', w').

    Returns ``(src_xy (M, 2), tgt_xy (M, 2))`` in the two grid frames, ordered by source index.
    """
    _check_pair(src_desc, tgt_desc)
    (h, w), (ht, wt) = src_desc.shape[1:], tgt_desc.shape[1:]
    src, tgt = _normalised_cells(src_desc), _normalised_cells(tgt_desc)
    forward = _nn_indices(src, tgt)  # (h·w,) target index of each source cell
    backward = _nn_indices(tgt, src)  # (h'·w',)
    src_idx = torch.arange(h * w, device=forward.device)
    keep = backward[forward] == src_idx
    return indices_to_points(src_idx[keep], (h, w)), indices_to_points(forward[keep], (ht, wt))


# ---------------------------------------------------------------------------- upsampled frames


@dataclass
class _Frame:
    """A descriptor map seen in a (H, W) frame, as if bilinearly upsampled (align_corners=False).

    Bilinear upsampling is linear, so dot products with an upsampled map equal the upsampled dot
    products; only the per-pixel norms need the upsampled map, built a few channels at a time.
    Nothing of size D × H × W is ever held in memory.
    """

    desc: torch.Tensor  # (D, h, w) float32
    size_hw: tuple[int, int]
    norms: torch.Tensor  # (H, W) L2 norm of the upsampled descriptors

    @classmethod
    def build(cls, desc: torch.Tensor, size_hw: tuple[int, int], channel_chunk: int = 32) -> "_Frame":
        desc = desc.float()
        if tuple(size_hw) == tuple(desc.shape[1:]):
            return cls(desc, size_hw, desc.norm(dim=0))
        sq = torch.zeros(size_hw, device=desc.device)
        for part in desc.split(channel_chunk):
            up = F.interpolate(part[None], size=size_hw, mode="bilinear", align_corners=False)[0]
            sq += up.square().sum(dim=0)
        return cls(desc, size_hw, sq.sqrt())

    def vectors(self, points_xy: torch.Tensor) -> torch.Tensor:
        """Upsampled descriptors (N, D) at integer frame pixels (N, 2)."""
        (h, w), (hh, ww) = self.desc.shape[1:], self.size_hw
        # align_corners=False source coordinate of each frame pixel; bilinear clamps at the edges
        scale = points_xy.new_tensor([w / ww, h / hh])
        return descriptors_at(self.desc, (points_xy + 0.5) * scale - 0.5, mode="bilinear")

    def similarity(self, vectors: torch.Tensor) -> torch.Tensor:
        """Cosine similarity (n, H, W) of vectors (n, D) with every pixel of the frame."""
        d, h, w = self.desc.shape
        dots = F.normalize(vectors.float(), dim=1, eps=EPS) @ self.desc.reshape(d, h * w)
        dots = dots.view(-1, h, w)  # (n, h, w)
        if tuple(self.size_hw) != (h, w):
            dots = F.interpolate(dots[None], size=self.size_hw, mode="bilinear", align_corners=False)[0]
        return dots / self.norms.clamp_min(EPS)

    def cell_size_xy(self) -> tuple[float, float]:
        """Size in frame pixels of one descriptor cell."""
        return self.size_hw[1] / self.desc.shape[2], self.size_hw[0] / self.desc.shape[1]


def _best_positions(
    query: _Frame, key: _Frame, points_xy: torch.Tensor, how: str, temperature: float, window: int | None
) -> torch.Tensor:
    """Position in ``key``'s frame matching each query pixel (N, 2), chunked over points."""
    out = []
    for part in points_xy.split(CHUNK):
        sim = key.similarity(query.vectors(part))  # (n, H, W)
        out.append(soft_argmax(sim, temperature, window) if how == "soft_argmax" else nearest_neighbour(sim))
    return torch.cat(out) if out else points_xy.new_zeros((0, 2))


def _mutual_flags(src: _Frame, tgt: _Frame, src_xy: torch.Tensor, tgt_xy: torch.Tensor) -> torch.Tensor:
    """Whether the NN back from ``tgt_xy`` lands within one descriptor cell of ``src_xy`` (N,)."""
    back = _best_positions(tgt, src, tgt_xy, "nn", 1.0, None)  # (N, 2) in src frame
    return ((back - src_xy).abs() <= back.new_tensor(src.cell_size_xy())).all(dim=1)


def _frames(
    src_desc: torch.Tensor,
    tgt_desc: torch.Tensor,
    src_points_xy: torch.Tensor,
    src_size_wh: tuple[int, int],
    tgt_size_wh: tuple[int, int],
    upsample: bool,
) -> tuple[_Frame, _Frame, torch.Tensor]:
    """The two matching frames and the query pixels (N, 2), integer, in the source frame."""
    _check_pair(src_desc, tgt_desc)
    src_wh, tgt_wh = _check_size(src_size_wh, "src_size_wh"), _check_size(tgt_size_wh, "tgt_size_wh")
    points = _check_points(src_points_xy, "src_points_xy").reshape(-1, 2).to(src_desc.device)
    if upsample:
        src_hw, tgt_hw = (src_wh[1], src_wh[0]), (tgt_wh[1], tgt_wh[0])
    else:
        src_hw, tgt_hw = tuple(src_desc.shape[1:]), tuple(tgt_desc.shape[1:])
        points = rescale_points(points, src_wh, (src_hw[1], src_hw[0]))
    query = indices_to_points(points_to_indices(points, src_hw), src_hw)
    return _Frame.build(src_desc, src_hw), _Frame.build(tgt_desc, tgt_hw), query


def is_mutual(
    src_desc: torch.Tensor,
    tgt_desc: torch.Tensor,
    src_points_xy: torch.Tensor,
    src_size_wh: tuple[int, int] | None = None,
    tgt_size_wh: tuple[int, int] | None = None,
    upsample: bool = True,
) -> torch.Tensor:
    """Per query point (N, 2): does its nearest neighbour map back within one descriptor cell?

    Without sizes the points are in the source grid frame and matching is cell to cell; with
    sizes the frames are those of :func:`match_points` (same arguments). The query is rounded and
    clipped to its frame; "within one cell" is |Δx| ≤ one cell and |Δy| ≤ one cell (the
    8-neighbourhood on the grid) between the query and the back-matched position. → (N,) bool.
    """
    if (src_size_wh is None) != (tgt_size_wh is None):
        raise HyperfeatError("is_mutual needs both src_size_wh and tgt_size_wh, or neither")
    _check_pair(src_desc, tgt_desc)
    if src_size_wh is None:
        src_size_wh, tgt_size_wh = (src_desc.shape[2], src_desc.shape[1]), (tgt_desc.shape[2], tgt_desc.shape[1])
    src, tgt, query = _frames(src_desc, tgt_desc, src_points_xy, src_size_wh, tgt_size_wh, upsample)
    return _mutual_flags(src, tgt, query, _best_positions(src, tgt, query, "nn", 1.0, None))


# ---------------------------------------------------------------------------- the protocol


class MutualMatches(NamedTuple):
    """What ``match_points(method="mutual_nn")`` returns."""

    points_xy: torch.Tensor  # (N, 2) nearest neighbour of each query, target pixels
    mutual: torch.Tensor  # (N,) bool: the NN maps back within one descriptor cell of the query


@overload
def match_points(
    src_desc: torch.Tensor,
    tgt_desc: torch.Tensor,
    src_points_xy: torch.Tensor,
    src_size_wh: tuple[int, int],
    tgt_size_wh: tuple[int, int],
    method: Literal["nn", "soft_argmax"] = ...,
    upsample: bool = ...,
    temperature: float = ...,
    window: int | None = ...,
) -> torch.Tensor: ...


@overload
def match_points(
    src_desc: torch.Tensor,
    tgt_desc: torch.Tensor,
    src_points_xy: torch.Tensor,
    src_size_wh: tuple[int, int],
    tgt_size_wh: tuple[int, int],
    method: Literal["mutual_nn"],
    upsample: bool = ...,
    temperature: float = ...,
    window: int | None = ...,
) -> MutualMatches: ...


def match_points(
    src_desc: torch.Tensor,
    tgt_desc: torch.Tensor,
    src_points_xy: torch.Tensor,
    src_size_wh: tuple[int, int],
    tgt_size_wh: tuple[int, int],
    method: Method = "nn",
    upsample: bool = True,
    temperature: float = SOFTMAX_TEMPERATURE,
    window: int | None = None,
) -> torch.Tensor | MutualMatches:
    """Match source keypoints (N, 2), in pixels of a ``src_size_wh`` frame, into the target frame.

    The evaluation protocol: with ``upsample`` both maps are bilinearly upsampled
    (align_corners=False) to their frame sizes, each keypoint is rounded and clipped to a frame
    pixel, and its descriptor is compared (cosine) with every target pixel. Pass the load size as
    both sizes, as the reference does, and rescale the result to the original target size.
    Without ``upsample`` keypoints are scaled to the source grid, matched cell to cell, and the
    matched cells scaled back to target pixels.

    ``method``: ``"nn"`` argmax; ``"soft_argmax"`` (``temperature``, default
    :data:`SOFTMAX_TEMPERATURE`; ``window`` in units of the matching frame: image pixels with
    ``upsample``, grid cells without; see :func:`soft_argmax`);
    ``"mutual_nn"`` the NN as a :class:`MutualMatches` with a flag per point, True when the NN
    of the match, back in the source frame, lies within one descriptor cell (per axis) of the
    query. Returns (N, 2) float target pixels, or ``MutualMatches`` for ``"mutual_nn"``.
    Memory: O(CHUNK · H · W) for the similarities; no upsampled D × H × W map is built.
    """
    if method not in METHODS:
        raise HyperfeatError(f"method must be one of {METHODS}; got {method!r}")
    src, tgt, query = _frames(src_desc, tgt_desc, src_points_xy, src_size_wh, tgt_size_wh, upsample)
    best = _best_positions(src, tgt, query, "nn" if method == "mutual_nn" else method, temperature, window)
    grid_wh = (tgt.size_hw[1], tgt.size_hw[0])
    out = best if upsample else rescale_points(best, grid_wh, tgt_size_wh)  # (N, 2) target pixels
    if method == "mutual_nn":
        return MutualMatches(out, _mutual_flags(src, tgt, query, best))
    return out
