"""Video tasks over any :class:`~hyperfeat.describe.base.Describer`: per-frame descriptors,
point tracking, mask propagation and keypoint propagation, with the settings of the config's
``video`` block.

How a video frame becomes a descriptor (:func:`hyperfeat.video.frames.frame_describer`): the
describer sees square ``features.load_size`` (L) images, as in the reference transform, which
resizes without keeping the aspect ratio. A frame (3, H, W) is resized to L × L (bilinear,
antialiased), scaled to [-1, 1] and described; its descriptor grid (R × R) covers the whole
frame, stretched, so going between frame pixels and grid cells is plain per-axis scaling
(:func:`hyperfeat.geometry.pixels_to_cells`). All functions here take and return points in
pixels of the *original* frames, and masks at the original frame size.

Frames are read (:func:`hyperfeat.video.frames.load_frames`) with their longer side resized to
``video.frame_size`` (aspect kept; null = original size) only to bound memory. With L = 512 and
16:9 frames, ``frame_size: 512`` makes the short side 288, upsampled to 512 on the way to the
backbone: set ``frame_size`` to at least L · (long side / short side), or null, to keep all of
the frame's detail. Descriptors are cached per video in ``video.cache_dir`` under a key naming
the describer's identity and the frame transform (:func:`hyperfeat.video.store.descriptor_key`).

    from hyperfeat.api import Hyperfeatures
    from hyperfeat.video.run import track, propagate

    hf = Hyperfeatures.from_checkpoint("checkpoints/last.ckpt")
    tracks, visible = track(hf, "clip.mp4", [[0, 120, 80], [0, 300, 200]])  # (N, T, 2), (N, T)
    masks = propagate(hf, "frames/", first_mask)                           # (T, H, W)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch

from hyperfeat.describe.base import Describer
from hyperfeat.errors import DataError
from hyperfeat.geometry import check_inside
from hyperfeat.io import PathLike
from hyperfeat.video.frames import (
    FrameSource,
    VideoFrames,
    frame_describer,
    load_frames,
)
from hyperfeat.video.store import compute_descriptors, descriptor_key


def describe_frames(
    describer: Describer,
    video_frames_or_source: FrameSource,
    cache_dir: Optional[PathLike] = None,
    progress: bool = True,
) -> torch.Tensor:
    """Descriptors (T, D, R, R) on the CPU of every frame of a video (see :func:`load_frames`).

    ``cache_dir`` (default: ``video.cache_dir``; null: no cache) keeps one file per video keyed
    by the frames (their files' contents, or the tensor's bytes), their size and
    :func:`descriptor_key`.
    """
    video = load_frames(describer, video_frames_or_source)
    if cache_dir is None:
        cache_dir = describer.cfg.video.get("cache_dir")
    return compute_descriptors(
        video.frames,
        frame_describer(describer),
        batch_size=int(describer.cfg.video.batch_size),
        cache_dir=cache_dir,
        key=descriptor_key(describer) if cache_dir is not None else "",
        files=video.files,
        progress=progress,
    )


# ---------------------------------------------------------------------------------------------
# config → keyword arguments of hyperfeat.video


def propagation_kwargs(cfg) -> dict:
    """``queue_length``, ``radius``, ``topk``, ``temperature`` from the ``video`` block."""
    v = cfg.video
    radius = v.get("radius")
    return {
        "queue_length": int(v.queue_length),
        "radius": None if radius is None else int(radius),
        "topk": int(v.topk),
        "temperature": float(v.temperature),
    }


def _device(describer: Describer) -> torch.device:
    return describer.device


def _descriptors(
    describer: Describer, video: VideoFrames, descriptors: Optional[torch.Tensor], progress: bool
) -> torch.Tensor:
    if descriptors is None:
        descriptors = describe_frames(describer, video, progress=progress)
    elif descriptors.ndim != 4 or descriptors.shape[0] != len(video):
        raise DataError(
            f"descriptors {tuple(descriptors.shape)} do not fit a video of {len(video)} frames (T, D, h, w)"
        )
    return descriptors.to(_device(describer))


# ---------------------------------------------------------------------------------------------
# tracking and propagation


def check_queries(queries: torch.Tensor, num_frames: int, size: tuple[int, int]) -> torch.Tensor:
    """Queries as an (N, 3) float tensor of (t, x, y) with t in [0, T) and (x, y) inside the frame
    of ``size`` (W, H); a :class:`DataError` names the first bad one."""
    from hyperfeat.correspond.track.base import check_query_rows

    queries = torch.as_tensor(queries, dtype=torch.float32)
    if queries.ndim == 1 and queries.numel() == 3:
        queries = queries[None]
    if queries.numel() == 0:
        raise DataError("no query points given: expected (N, 3) rows of (t, x, y)")
    check_query_rows(queries, num_frames, size)
    return queries


def track(
    describer: Describer,
    frames: FrameSource,
    queries,
    descriptors: Optional[torch.Tensor] = None,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Track query points through a video.

    ``queries`` (N, 3) rows of (t, x, y): frame index and pixels of the original frames.
    Returns tracks (N, T, 2) xy in those pixels and visible (N, T) bool (CPU), with the tracker
    ``video.tracker`` and its settings. Queries are checked before any descriptor is computed.
    ``descriptors`` (T, D, h, w) skips describing the frames. See :func:`track_video` for the
    per-point confidence too.
    """
    result = track_video(describer, frames, queries, descriptors=descriptors, progress=progress)
    return result.tracks, result.visible


def check_mask(first_mask, size: tuple[int, int]) -> torch.Tensor:
    """A first-frame mask as (H, W) int64 object ids of the frame size ``size`` (W, H)."""
    mask = torch.as_tensor(np.asarray(first_mask) if not isinstance(first_mask, torch.Tensor) else first_mask)
    if mask.ndim != 2:
        raise DataError(f"first-frame mask must be (H, W) object ids; got shape {tuple(mask.shape)}")
    if mask.is_floating_point() and not torch.equal(mask, mask.round()):
        raise DataError("first-frame mask must hold integer object ids; got fractional values")
    if mask.numel() and (int(mask.min()) < 0 or int(mask.max()) > 255):
        bad = sorted({int(v) for v in torch.unique(mask).tolist() if not 0 <= v <= 255})
        raise DataError(
            f"first-frame mask holds object ids {bad[:5]}{' …' if len(bad) > 5 else ''} outside "
            f"0…255 (0 = background, 255 = void, as in a DAVIS palette PNG); renumber the objects"
        )
    found = (int(mask.shape[1]), int(mask.shape[0]))
    if found != tuple(size):
        raise DataError(
            f"first-frame mask is {found[0]}×{found[1]} (W×H) but the video frames are "
            f"{size[0]}×{size[1]}: give a mask of the frames' original size"
        )
    return mask.long()


def check_first_points(first_points, size: tuple[int, int]) -> torch.Tensor:
    """Keypoints of frame 0 as a (J, 2) float tensor of finite xy inside the frame of ``size`` (W, H)."""
    points = torch.as_tensor(first_points, dtype=torch.float32)
    if points.ndim != 2 or points.shape[-1] != 2 or points.shape[0] == 0:
        raise DataError(f"first_points must be (J, 2) xy with J ≥ 1; got shape {tuple(points.shape)}")
    if not torch.isfinite(points).all():
        raise DataError("first_points has non-finite values")
    check_inside(points, size, "frame 0 (first_points)")
    return points


def _propagated(
    describer: Describer,
    frames: FrameSource,
    first,
    check: Callable,
    run: Callable,
    descriptors: Optional[torch.Tensor],
    progress: bool,
) -> torch.Tensor:
    """``run(descriptors, checked first-frame labels, original size)`` on the CPU; ``check``
    (labels, original size) runs before any descriptor is computed."""
    video = load_frames(describer, frames)
    checked = check(first, video.original_size)
    desc = _descriptors(describer, video, descriptors, progress)  # (T, D, h, w)
    return run(desc, checked.to(desc.device), video.original_size).cpu()


def propagate(
    describer: Describer,
    frames: FrameSource,
    first_mask,
    descriptors: Optional[torch.Tensor] = None,
    progress: bool = True,
) -> torch.Tensor:
    """Propagate a first-frame object-id mask (H, W) (original frame size) → masks (T, H, W) int64.

    Label propagation with the ``video.queue_length/radius/topk/temperature`` settings; frame 0
    is the given mask. The mask is checked before any descriptor is computed.
    """
    from hyperfeat.correspond.propagation import propagate_mask

    settings = propagation_kwargs(describer.cfg)
    return _propagated(
        describer,
        frames,
        first_mask,
        check_mask,
        lambda desc, mask, size: propagate_mask(desc, mask, size, **settings),
        descriptors,
        progress,
    )


def propagate_joints(
    describer: Describer,
    frames: FrameSource,
    first_points,
    descriptors: Optional[torch.Tensor] = None,
    progress: bool = True,
) -> torch.Tensor:
    """Propagate keypoints (J, 2) xy of frame 0 (original pixels) → (T, J, 2) xy.

    Heat-map propagation (std ``video.keypoint_sigma`` cells) with the propagation settings and
    a sub-cell soft-argmax per frame. The points are checked before any descriptor is computed.
    """
    from hyperfeat.correspond.propagation import propagate_keypoints

    settings = dict(propagation_kwargs(describer.cfg), sigma=float(describer.cfg.video.get("keypoint_sigma", 1.0)))
    return _propagated(
        describer,
        frames,
        first_points,
        check_first_points,
        lambda desc, points, size: propagate_keypoints(desc, points, size, **settings),
        descriptors,
        progress,
    )


# ---------------------------------------------------------------------------------------------
# long videos: frames read lazily, descriptors in a store, the tracker chosen by video.tracker


def frame_stream(describer: Describer, source, max_frames: Optional[int] = None):
    """A lazy :class:`~hyperfeat.video.stream.FrameStream` of a path (longer side at
    ``video.frame_size``) or of frames already in memory (taken as they are)."""
    from hyperfeat.video.stream import FrameStream

    if isinstance(source, (list, tuple)):
        source = load_frames(describer, source, max_frames)
    frame_size = int(describer.cfg.video.frame_size) if describer.cfg.video.get("frame_size") else None
    return FrameStream(source, frame_size, max_frames)


def describe_store(describer: Describer, stream, progress: bool = True):
    """Descriptors of every frame of ``stream`` in a :class:`~hyperfeat.video.stream.DescriptorStore`,
    described in chunks of ``video.batch_size`` frames (only one chunk of frames is held).

    The store is ``video.store_dtype`` on the CPU while it needs at most
    ``video.store_max_memory_mb``; beyond that it is a memory-mapped file: in ``video.cache_dir``
    (named by the frames and the describer, reused by a later call) or a temporary file.
    """
    from pathlib import Path

    from hyperfeat.video.stream import (
        DescriptorStore,
        describe_stream,
        temporary_store_path,
    )

    v = describer.cfg.video
    dtype = str(v.get("store_dtype", "float16"))
    num_frames = len(stream)
    cache_dir = v.get("cache_dir")
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{stream.key(descriptor_key(describer))}.{dtype}.npy"
        if path.is_file():
            try:
                store = DescriptorStore.open(path, describer.device)
                if len(store) == num_frames:
                    return store
            except (OSError, ValueError) as err:
                import warnings

                warnings.warn(f"descriptor cache file {path} is unreadable ({err}); recomputing it", stacklevel=2)
            path.unlink(missing_ok=True)
    else:
        # one frame's descriptors: describe the first frame's shape from the grid the describer makes
        probe = next(iter(stream.chunks(1)))
        out_shape = frame_describer(describer)(probe).shape  # (1, D, h, w)
        per_frame = int(np.prod(out_shape[1:])) * (2 if dtype == "float16" else 4)
        if per_frame * num_frames > float(v.get("store_max_memory_mb", 1024)) * 2**20:
            path = temporary_store_path()
    return describe_stream(
        stream, frame_describer(describer), num_frames, int(v.batch_size), dtype, path, describer.device, progress
    )


@dataclass
class TrackResult:
    """Tracks (N, T, 2) xy pixels of the original frames, visible (N, T) bool, confidence (N, T)
    in [0, 1], the queries (N, 3) (t, x, y), the original frame size (W, H) and T."""

    tracks: torch.Tensor
    visible: torch.Tensor
    confidence: torch.Tensor
    queries: torch.Tensor
    size: tuple[int, int]
    num_frames: int


def configured_tracker(cfg) -> tuple[str, Any]:
    """The tracker ``video.tracker`` and its settings from ``video.trackers.<name>`` (checked: a
    bad name or value is one line, before any work)."""
    from hyperfeat.correspond.track import settings_from_config

    name = str(cfg.video.tracker)
    return name, settings_from_config(cfg, name)


def track_video(
    describer: Describer,
    frames: FrameSource,
    queries,
    descriptors=None,
    progress: bool = True,
) -> TrackResult:
    """Track ``queries`` (N, 3) (t, x, y) through a video with bounded memory: a path is read
    lazily and described in chunks into a store (see :func:`describe_store`); frames already in
    memory are described as by :func:`describe_frames`. ``descriptors``: a (T, D, h, w) tensor or
    a store, skipping the describing. Queries and the tracker's settings are checked before any
    descriptor is computed."""
    from hyperfeat.correspond.track import track_descriptors
    from hyperfeat.video.stream import as_store

    tracker, settings = configured_tracker(describer.cfg)
    if isinstance(frames, (VideoFrames, torch.Tensor, list, tuple)):
        video = load_frames(describer, frames)
        num_frames, size = len(video), video.original_size
        queries = check_queries(queries, num_frames, size)
        if descriptors is None:
            descriptors = describe_frames(describer, video, progress=progress)
        store = as_store(descriptors, describer.device)
    else:
        stream = frame_stream(describer, frames)
        num_frames, size = len(stream), stream.original_size
        queries = check_queries(queries, num_frames, size)
        store = (
            as_store(descriptors, describer.device)
            if descriptors is not None
            else describe_store(describer, stream, progress)
        )
    if len(store) != num_frames:
        raise DataError(f"descriptors of {len(store)} frames do not fit a video of {num_frames} frames (T, D, h, w)")
    tracks, visible, confidence = track_descriptors(store, queries, size, tracker, settings)
    return TrackResult(tracks.cpu(), visible.cpu(), confidence.cpu(), queries.cpu(), tuple(size), num_frames)
