"""Video inference with a :class:`~hyperfeat.api.Hyperfeatures` object: per-frame descriptors,
point tracking, mask propagation, keypoint propagation, and the ``track`` / ``propagate``
commands that write pictures.

How a video frame becomes a descriptor (:func:`frame_describer`)
-----------------------------------------------------------------
The backbone sees square ``features.load_size`` (L) images, as in the reference transform,
which resizes without keeping the aspect ratio. A frame (3, H, W) is therefore resized to
L × L (bilinear, antialiased, aspect *not* kept), scaled to [-1, 1] and described; its
descriptor grid (R × R) covers the *whole* frame, stretched. Going between frame pixels and
grid cells is plain per-axis scaling, exactly the convention of :mod:`hyperfeat.video`
(``pixels_to_cells``: u = x · R / W, v = y · R / H): a point keeps its place whatever the
frame's aspect ratio, and any frame size can be used for the coordinates. So all functions
here take and return points in pixels of the *original* frames (before any resizing), and
masks at the original frame size.

Frames are read (:func:`load_frames`) with their longer side resized to ``video.frame_size``
(aspect kept; null = original size) only to bound memory, then resized again to L × L. With
L = 512 and 16:9 frames, ``frame_size: 512`` makes the short side 288, upsampled to 512 on the
way to the backbone: set ``frame_size`` to at least L · (long side / short side), or null, to
keep all of the frame's detail.

Descriptors are cached per video in ``video.cache_dir`` (or ``cache_dir``) under a key that
names the checkpoint's feature config, the aggregation network's weights and this frame
transform (:func:`descriptor_key`), so another checkpoint never reads stale descriptors.

    from hyperfeat.api import Hyperfeatures
    from hyperfeat.video_api import track, propagate

    hf = Hyperfeatures.from_checkpoint("checkpoints/last.ckpt")
    tracks, visible = track(hf, "clip.mp4", [[0, 120, 80], [0, 300, 200]])  # (N, T, 2), (N, T)
    masks = propagate(hf, "frames/", first_mask)                           # (T, H, W)
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from hyperfeat.errors import DataError
from hyperfeat.io import PathLike
from hyperfeat.video.frames import (
    FrameSource,
    VideoFrames,
    frame_describer,
    load_frames,
)
from hyperfeat.video.store import compute_descriptors, descriptor_key


def describe_frames(
    hf,
    video_frames_or_source: FrameSource,
    cache_dir: Optional[PathLike] = None,
    progress: bool = True,
) -> torch.Tensor:
    """Descriptors (T, D, R, R) on the CPU of every frame of a video (see :func:`load_frames`).

    ``cache_dir`` (default: ``video.cache_dir``; null: no cache) keeps one file per video keyed
    by the frames (their files' contents, or the tensor's bytes), their size and
    :func:`descriptor_key`.
    """
    video = load_frames(hf, video_frames_or_source)
    if cache_dir is None:
        cache_dir = hf.cfg.video.get("cache_dir")
    return compute_descriptors(
        video.frames,
        frame_describer(hf),
        batch_size=int(hf.cfg.video.batch_size),
        cache_dir=cache_dir,
        key=descriptor_key(hf) if cache_dir is not None else "",
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




def tracking_kwargs(cfg) -> dict:
    """The point-tracking keywords of :func:`hyperfeat.video.track_points` from the ``video`` block."""
    v = cfg.video
    return {
        "track_radius": int(v.track_radius),
        "cycle_threshold": float(v.cycle_threshold),
        "min_similarity": float(v.min_similarity),
        "refine_radius": int(v.refine_radius),
        "refine_temperature": float(v.refine_temperature),
        "reacquire_margin": float(v.reacquire_margin),
    }




def _device(hf) -> torch.device:
    return torch.device(getattr(hf.backbone, "device", "cpu"))




def _descriptors(hf, video: VideoFrames, descriptors: Optional[torch.Tensor], progress: bool) -> torch.Tensor:
    if descriptors is None:
        descriptors = describe_frames(hf, video, progress=progress)
    elif descriptors.ndim != 4 or descriptors.shape[0] != len(video):
        raise DataError(f"descriptors {tuple(descriptors.shape)} do not fit a video of {len(video)} frames (T, D, h, w)")
    return descriptors.to(_device(hf))




# ---------------------------------------------------------------------------------------------
# tracking and propagation


def check_queries(queries: torch.Tensor, num_frames: int, size: tuple[int, int]) -> torch.Tensor:
    """Queries as an (N, 3) float tensor of (t, x, y) with t in [0, T) and (x, y) inside the frame
    of ``size`` (W, H); a :class:`DataError` names the first bad one."""
    from hyperfeat.correspond.tracking import _check_queries

    queries = torch.as_tensor(queries, dtype=torch.float32)
    if queries.ndim == 1 and queries.numel() == 3:
        queries = queries[None]
    if queries.numel() == 0:
        raise DataError("no query points given: expected (N, 3) rows of (t, x, y)")
    _check_queries(queries, num_frames, size)
    return queries




def track(
    hf,
    frames: FrameSource,
    queries,
    descriptors: Optional[torch.Tensor] = None,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Track query points through a video.

    ``queries`` (N, 3) rows of (t, x, y): frame index and pixels of the original frames.
    Returns tracks (N, T, 2) xy in those pixels and visible (N, T) bool (CPU), with the
    ``video.track_radius`` … ``video.reacquire_margin`` settings. Queries are checked before
    any descriptor is computed. ``descriptors`` (T, D, h, w) skips describing the frames.
    """
    from hyperfeat.correspond.tracking import track_points

    video = load_frames(hf, frames)
    queries = check_queries(queries, len(video), video.original_size)
    desc = _descriptors(hf, video, descriptors, progress)
    tracks, visible = track_points(desc, queries, video.original_size, **tracking_kwargs(hf.cfg))
    return tracks.cpu(), visible.cpu()




def check_mask(first_mask, size: tuple[int, int]) -> torch.Tensor:
    """A first-frame mask as (H, W) int64 object ids of the frame size ``size`` (W, H)."""
    mask = torch.as_tensor(np.asarray(first_mask) if not isinstance(first_mask, torch.Tensor) else first_mask)
    if mask.ndim != 2:
        raise DataError(f"first-frame mask must be (H, W) object ids; got shape {tuple(mask.shape)}")
    if mask.is_floating_point() and not torch.equal(mask, mask.round()):
        raise DataError("first-frame mask must hold integer object ids; got fractional values")
    found = (int(mask.shape[1]), int(mask.shape[0]))
    if found != tuple(size):
        raise DataError(f"first-frame mask is {found[0]}×{found[1]} (W×H) but the video frames are "
                        f"{size[0]}×{size[1]}: give a mask of the frames' original size")
    return mask.long()




def propagate(
    hf,
    frames: FrameSource,
    first_mask,
    descriptors: Optional[torch.Tensor] = None,
    progress: bool = True,
) -> torch.Tensor:
    """Propagate a first-frame object-id mask (H, W) (original frame size) → masks (T, H, W) int64.

    Label propagation with the ``video.queue_length/radius/topk/temperature`` settings; frame 0
    is the given mask. The mask size is checked before any descriptor is computed.
    """
    from hyperfeat.correspond.propagation import propagate_mask

    video = load_frames(hf, frames)
    mask = check_mask(first_mask, video.original_size)
    desc = _descriptors(hf, video, descriptors, progress)
    masks = propagate_mask(desc, mask.to(desc.device), video.original_size, **propagation_kwargs(hf.cfg))
    return masks.cpu()




def propagate_joints(
    hf,
    frames: FrameSource,
    first_points,
    descriptors: Optional[torch.Tensor] = None,
    progress: bool = True,
) -> torch.Tensor:
    """Propagate keypoints (J, 2) xy of frame 0 (original pixels) → (T, J, 2) xy.

    Heat-map propagation (std ``video.keypoint_sigma`` cells) with the propagation settings and
    a sub-cell soft-argmax per frame.
    """
    from hyperfeat.correspond.propagation import propagate_keypoints

    video = load_frames(hf, frames)
    points = torch.as_tensor(first_points, dtype=torch.float32)
    if points.ndim != 2 or points.shape[-1] != 2 or points.shape[0] == 0:
        raise DataError(f"first_points must be (J, 2) xy with J ≥ 1; got shape {tuple(points.shape)}")
    if not torch.isfinite(points).all():
        raise DataError("first_points has non-finite values")
    desc = _descriptors(hf, video, descriptors, progress)
    joints = propagate_keypoints(
        desc, points.to(desc.device), video.original_size,
        sigma=float(hf.cfg.video.get("keypoint_sigma", 1.0)), **propagation_kwargs(hf.cfg),
    )
    return joints.cpu()
