"""State-change analysis of a video over any describer: pick points (queries, a grid or a
mask), track them, and read their descriptors along the tracks
(:func:`hyperfeat.correspond.changes.analyse_changes`).

    from hyperfeat.video.changes import video_changes
    result = video_changes(hf, "clip.mp4", grid=12)
    for e in result.events:
        print(e.frame, len(e.points), e.strength)

Points given or returned are in pixels of the original frames (:mod:`hyperfeat.geometry`).
"""

from __future__ import annotations

from typing import Optional

import torch

from hyperfeat.correspond.changes import (
    MIN_FRAMES,
    ChangeSettings,
    StateChanges,
    analyse_changes,
)
from hyperfeat.describe.base import Describer
from hyperfeat.errors import DataError
from hyperfeat.geometry import inside_image
from hyperfeat.video.frames import FrameSource, load_frames
from hyperfeat.video.queries import grid_points, in_mask, mask_pixels

MIN_OBJECT_POINTS = 16  # fewer lattice points on the object: a finer lattice on it ...
REFINE = 4  # ... up to this many times finer


def change_queries(mask, size: tuple[int, int], grid: int, frame: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Points of a ``grid`` × ``grid`` lattice, split by a (H, W) mask of the frame size (nonzero:
    the object) → queries (N, 3) at ``frame`` and is_reference (N,) (True: outside the mask, the
    background points that normalise the drift). Grid points inside the mask come first; an
    object with fewer than ``MIN_OBJECT_POINTS`` of them gets a lattice up to ``REFINE`` times
    finer, and when even that misses the mask, its pixels are sampled directly."""
    fg = mask_pixels(mask, size)
    pts = grid_points(size, grid)
    inside = in_mask(fg, pts)
    obj = pts[inside]
    finer = grid
    while obj.shape[0] < MIN_OBJECT_POINTS and finer < REFINE * grid and 2 * finer <= min(size):
        finer *= 2  # a small object: a finer lattice on it, so that a change of a part has points on that part
        dense = grid_points(size, finer)
        obj = dense[in_mask(fg, dense)]
    if obj.shape[0] < 3:  # a small object: take up to 9 of its own pixels, evenly spread
        ys, xs = fg.nonzero(as_tuple=True)
        pick = torch.linspace(0, len(xs) - 1, min(9, len(xs))).round().long()
        obj = torch.stack([xs[pick], ys[pick]], dim=1).float()
    bg = pts[~inside]
    xy = torch.cat([obj, bg])
    queries = torch.cat([torch.full((len(xy), 1), float(frame)), xy], dim=1)
    is_ref = torch.cat([torch.zeros(len(obj), dtype=torch.bool), torch.ones(len(bg), dtype=torch.bool)])
    return queries, is_ref


def track_for_changes(
    desc: torch.Tensor, queries: torch.Tensor, size: tuple[int, int], cfg, settings: ChangeSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    """Track points for the state-change analysis with the registered tracker ``changes.tracker``
    and its ``video.trackers.<name>`` settings. desc (T, D, h, w) → tracks (N, T, 2), visible
    (N, T). The analysis then carries points that slipped by their neighbours' motion
    (``changes.coherent``).

    ``visible`` is True wherever the track is on the frame (:func:`hyperfeat.geometry.inside_image`): a tracker's visibility is how
    much the point still looks like its query — exactly what a change of state breaks, so it
    would hide the changed points (measured on the tuning half: F1 0.61 with it, 0.64 without,
    and fewer false events). Occluders that pass do not last, and the analysis keeps only
    changes that do."""
    from hyperfeat.correspond.track import settings_from_config, track_descriptors

    tracks, _, _ = track_descriptors(desc, queries, size, settings.tracker, settings_from_config(cfg, settings.tracker))
    return tracks, inside_image(tracks, size)


def video_changes(
    describer: Describer,
    frames: FrameSource,
    queries=None,
    grid: Optional[int] = None,
    mask=None,
    tracks: Optional[torch.Tensor] = None,
    visible: Optional[torch.Tensor] = None,
    descriptors: Optional[torch.Tensor] = None,
    settings: Optional[ChangeSettings] = None,
    progress: bool = False,
    is_reference: Optional[torch.Tensor] = None,
) -> StateChanges:
    """Changes of state of points of a video.

    Exactly one of ``queries`` (N, 3) rows of (t, x, y), ``grid`` (an n × n lattice on frame 0,
    every point also a reference) or ``mask`` (H, W) of frame 0 (object points inside it, the
    lattice of ``grid`` points — default 16 — outside it as background references). ``tracks``
    (N, T, 2) and ``visible`` (N, T): skip tracking (ground truth, or another tracker's tracks of
    the queries: ``hyperfeat changes --tracks``); otherwise the points are tracked with
    :func:`track_for_changes` on the same descriptors. ``is_reference`` (N,) with ``queries``:
    which points are background references (e.g. outside an object mask; default: the
    ``reference`` setting). ``settings``: default from the config's ``changes`` block.
    """
    from hyperfeat.video.run import _descriptors, check_queries

    video = load_frames(describer, frames)
    if len(video) < MIN_FRAMES:
        raise DataError(
            f"a change of state needs at least {MIN_FRAMES} frames (a before and an after); the video has {len(video)}"
        )
    given = [
        name
        for name, v in (("queries", queries), ("grid", None if mask is not None else grid), ("mask", mask))
        if v is not None
    ]
    if len(given) != 1:
        raise DataError(f"give exactly one of queries, grid or mask; got {given or 'none'}")
    if is_reference is not None and queries is None:
        raise DataError("is_reference goes with queries (a mask or grid sets its own references)")
    if mask is not None:
        queries, is_reference = change_queries(mask, video.original_size, int(grid or 16))
    elif grid is not None:
        xy = grid_points(video.original_size, int(grid))
        queries = torch.cat([torch.zeros(len(xy), 1), xy], dim=1)
    queries = check_queries(queries, len(video), video.original_size)
    if tracks is not None and tuple(tracks.shape) != (len(queries), len(video), 2):
        raise DataError(
            f"tracks must be (N, T, 2) = ({len(queries)}, {len(video)}, 2) for {len(queries)} queries "
            f"and {len(video)} frames; got {tuple(tracks.shape)}"
        )
    if is_reference is not None:
        is_reference = torch.as_tensor(is_reference).bool()
        if tuple(is_reference.shape) != (len(queries),):
            raise DataError(
                f"is_reference must be ({len(queries)},), one flag per query; got {tuple(is_reference.shape)}"
            )
    if settings is None:
        block = describer.cfg.get("changes")
        settings = ChangeSettings.from_config(block) if block is not None else ChangeSettings()
    if settings.reference == "all":
        is_reference = None  # every point (auto: the background points a mask or the caller names)
    desc = _descriptors(describer, video, descriptors, progress)
    if tracks is None:
        tracks, visible = track_for_changes(desc, queries, video.original_size, describer.cfg, settings)
    elif visible is None:
        visible = torch.ones(tracks.shape[:2], dtype=torch.bool)
    return analyse_changes(desc, queries, tracks, visible, video.original_size, is_reference, settings)
