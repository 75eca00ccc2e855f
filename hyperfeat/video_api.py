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

import hashlib
import json
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from PIL import Image

from hyperfeat.data.video import PathLike, VideoFrames, compute_descriptors, read_video
from hyperfeat.errors import DataError, HyperfeatError

FrameSource = Union[VideoFrames, torch.Tensor, str, Path, Sequence]  # Sequence: of images (paths, PIL, arrays, tensors)
FRAME_TRANSFORM = "resize-LxL-bilinear-antialias-v1"  # part of the cache key: change it if the transform changes


# ---------------------------------------------------------------------------------------------
# frames → descriptors


def frame_describer(hf) -> Callable[[torch.Tensor], torch.Tensor]:
    """The per-frame descriptor of ``hf``: frames (T, 3, H, W) in [0, 1] → (T, D, R, R) float32.

    Each frame is resized to L × L (L = ``features.load_size``; bilinear, antialiased, aspect
    not kept), mapped to [-1, 1] and passed to ``hf.describe_batch``. The R × R grid covers the
    full frame: pixel (x, y) of a (W, H) frame lies at cell (x · R / W, y · R / H).
    """
    size = int(hf.load_size)

    def describe(frames: torch.Tensor) -> torch.Tensor:
        if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[1] != 3:
            shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
            raise DataError(f"frames must be a (T, 3, H, W) tensor in [0, 1]; got {shape}")
        batch = frames.float()
        if tuple(batch.shape[-2:]) != (size, size):
            batch = F.interpolate(batch, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        batch = batch.clamp(0, 1) * 2.0 - 1.0  # (T, 3, L, L) in [-1, 1]
        return hf.describe_batch(batch)

    return describe


def network_digest(network: torch.nn.Module) -> str:
    """sha256 of a network's state dict (names, shapes, dtypes and values)."""
    hasher = hashlib.sha256()
    for name, tensor in sorted(network.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        hasher.update(f"{name}|{tuple(value.shape)}|{value.dtype}|".encode())
        hasher.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return hasher.hexdigest()


def descriptor_key(hf) -> str:
    """Cache key naming the descriptor model: feature config, network weights, frame transform.

    JSON of :func:`hyperfeat.cache.feature_identity` (every value that decides the raw maps,
    with the backbone's actual compute dtype), the ``aggregation`` block, the sha256 of the
    aggregation network's state dict and the frame transform's name.
    """
    from hyperfeat.cache import feature_identity

    identity = feature_identity(hf.cfg)
    identity.pop("cache_dtype")  # the training cache's storage type: not part of descriptors
    identity["backbone"]["compute_dtype"] = str(getattr(hf.backbone, "dtype", identity["backbone"]["compute_dtype"]))
    identity.update({
        "aggregation": OmegaConf.to_container(hf.cfg.aggregation, resolve=True),
        "network": network_digest(hf.network),
        "transform": FRAME_TRANSFORM,
    })
    return json.dumps(identity, sort_keys=True, default=str)


def frames_from_images(images: Sequence, frame_size: Optional[int] = None,
                       max_frames: Optional[int] = None) -> VideoFrames:
    """A list of frames → :class:`VideoFrames`, read like a folder of frames (longer side at
    ``frame_size``, aspect kept; None: original size). Items are image paths, PIL images, uint8
    (H, W, 3) arrays or (3, H, W) tensors in [0, 1]; all must have the first one's size. A list of
    paths is keyed by its files in the descriptor cache, other lists by the frames' bytes."""
    from hyperfeat.data.video import read_frame_files, resized_size
    from hyperfeat.images import load_image, pil_to_tensor

    items = list(images)[: max_frames if max_frames else None]
    if not items:
        raise DataError("empty video: the list of frames is empty")
    if all(isinstance(item, (str, Path)) for item in items):
        return read_frame_files(items, frame_size, max_frames)
    tensors: list[torch.Tensor] = []
    original: Optional[tuple[int, int]] = None
    for index, item in enumerate(items):
        image = load_image(item)  # ImageError names a bad path or shape
        if original is None:
            original = image.size
        elif image.size != original:
            raise DataError(f"frame {index} of the list has size {image.size} (W, H); frame 0 has {original}")
        size = resized_size(image.size, frame_size)
        tensors.append(pil_to_tensor(image.resize(size, Image.BILINEAR) if size != image.size else image))
    frames = torch.stack(tensors)  # (T, 3, H, W)
    size = (int(frames.shape[-1]), int(frames.shape[-2]))
    return VideoFrames(frames, original, size, max(size) / max(original), [])


def load_frames(hf, source: FrameSource, max_frames: Optional[int] = None) -> VideoFrames:
    """A video as :class:`VideoFrames`: a folder of frames or a video file (read with the longer
    side at ``video.frame_size``), a list of frames (image paths, PIL images, arrays or (3, H, W)
    tensors; read like a folder, see :func:`frames_from_images`), a (T, 3, H, W) tensor in [0, 1]
    (taken as is), or :class:`VideoFrames` (returned as is)."""
    if isinstance(source, VideoFrames):
        return source
    frame_size = int(hf.cfg.video.frame_size) if hf.cfg.video.get("frame_size") else None
    if isinstance(source, (list, tuple)):
        return frames_from_images(source, frame_size, max_frames)
    if isinstance(source, torch.Tensor):
        if source.ndim != 4 or source.shape[1] != 3:
            raise DataError(f"frames must be a (T, 3, H, W) tensor in [0, 1]; got shape {tuple(source.shape)}")
        if source.shape[0] == 0:
            raise DataError("empty video: the frame tensor has T = 0 frames")
        size = (int(source.shape[-1]), int(source.shape[-2]))
        return VideoFrames(source.float(), size, size, 1.0, [])
    if isinstance(source, (str, Path)):
        return read_video(source, frame_size, max_frames)
    raise DataError(f"a video must be a folder of frames, a video file, a list of frames, a (T, 3, H, W) tensor "
                    f"or VideoFrames; "
                    f"got {type(source).__name__}")


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
    from hyperfeat.video import _check_queries

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
    from hyperfeat.video import track_points

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
    from hyperfeat.video import propagate_mask

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
    from hyperfeat.video import propagate_keypoints

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


# ---------------------------------------------------------------------------------------------
# commands


def precheck_source(source: PathLike) -> None:
    """Fail early, with the path, on a missing video, an empty frame folder or a single image."""
    from hyperfeat.data.video import FRAME_SUFFIXES, list_frames

    path = Path(source)
    if path.is_dir():
        list_frames(path)  # DataError "empty video: …" when it holds no frames
    elif not path.exists():
        raise DataError(f"video not found: {path} (expected a folder of frames or a video file)")
    elif path.suffix.lower() in FRAME_SUFFIXES:
        raise DataError(f"{path} is a single image; give the folder of frames or a video file")


def parse_queries(text: str) -> torch.Tensor:
    """'t,x,y;t,x,y' → (N, 3) float tensor (t a frame index, x and y pixels)."""
    items = [item for item in str(text).replace(" ", "").split(";") if item]
    try:
        rows = [[float(v) for v in item.split(",")] for item in items]
    except ValueError as err:
        raise HyperfeatError(f"points must look like 't,x,y;t,x,y' (frame, x, y in pixels); got {text!r}") from err
    if not rows or any(len(r) != 3 for r in rows):
        raise HyperfeatError(f"points must look like 't,x,y;t,x,y' (frame, x, y in pixels); got {text!r}")
    bad = [r for r in rows if r[0] != int(r[0])]
    if bad:
        raise HyperfeatError(f"the frame index t of a point must be an integer; got {bad[0]}")
    return torch.tensor(rows, dtype=torch.float32)


def _check_out_video(out: PathLike) -> Path:
    from hyperfeat.viz import VIDEO_SUFFIXES

    path = Path(out)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise HyperfeatError(f"output video {path} must end in one of {', '.join(VIDEO_SUFFIXES)}")
    return path


def frames_as_uint8(frames: torch.Tensor) -> np.ndarray:
    """(T, 3, H, W) in [0, 1] → (T, H, W, 3) uint8."""
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def draw_video_tracks(video: VideoFrames, tracks: torch.Tensor, visible: torch.Tensor, tail_length: int = 10):
    """Track pictures on the frames as read: tracks (N, T, 2) in original pixels are scaled to the
    frames' size."""
    from hyperfeat.data.video import rescale_points
    from hyperfeat.viz import draw_tracks

    xy = rescale_points(tracks.float(), video.original_size, video.size)
    return draw_tracks(frames_as_uint8(video.frames), xy, visible, tail_length=tail_length)


def overlay_video_frames(video: VideoFrames, masks: torch.Tensor, alpha: float = 0.5):
    """Overlay pictures: masks (T, H, W) at the original size, resized (nearest) to the frames'
    size, blended into the frames as read."""
    from PIL import Image

    from hyperfeat.viz import overlay_masks

    images = []
    width, height = video.size
    for frame, mask in zip(frames_as_uint8(video.frames), masks):
        ids = mask.cpu().numpy()
        if ids.size and (ids.min() < 0 or ids.max() > 255):
            raise HyperfeatError(f"mask ids must lie in 0…255 to be drawn; got {ids.min()}…{ids.max()}")
        ids = ids.astype(np.uint8)
        if ids.shape != (height, width):
            ids = np.asarray(Image.fromarray(ids).resize((width, height), Image.NEAREST))
        images.append(overlay_masks(frame, ids, alpha=alpha))
    return images


def run_track_command(
    checkpoint: PathLike,
    video: PathLike,
    points_text: str,
    out: PathLike,
    overrides: Sequence[str] = (),
    fps: float = 10,
    tail_length: int = 10,
    hf=None,
) -> dict:
    """``hyperfeat track``: track the points ``'t,x,y;…'`` (original pixels) through ``video``
    (folder of frames or a video file) and write ``out`` (.mp4 or .gif): every point in its own
    colour with a fading tail, a filled dot where visible, a ring where occluded. Also writes
    ``out`` with suffix ``.json``: the queries, tracks (N, T, 2) xy and visible (N, T) in pixels
    of the original frames. Returns {"video": path, "json": path, "tracks", "visible"}.

    ``hf``: an already loaded :class:`Hyperfeatures` (then ``checkpoint`` and ``overrides`` are
    only recorded).
    """
    from hyperfeat.viz import write_video

    out_path = _check_out_video(out)
    queries = parse_queries(points_text)
    precheck_source(video)  # a missing or empty video fails before the backbone loads
    if hf is None:
        from hyperfeat.api import Hyperfeatures

        hf = Hyperfeatures.from_checkpoint(checkpoint, overrides=list(overrides))
    frames = load_frames(hf, video)
    tracks, visible = track(hf, frames, queries)  # checks the queries before describing the frames
    written = write_video(draw_video_tracks(frames, tracks, visible, tail_length), out_path, fps=fps)
    json_path = out_path.with_suffix(".json")
    record = {
        "video": str(video),
        "checkpoint": str(checkpoint),
        "frame_size_wh": list(frames.original_size),
        "num_frames": len(frames),
        "coordinates": "(x, y) pixels of the original frames, pixel centres at integers",
        "queries": queries.tolist(),
        "tracks": tracks.tolist(),
        "visible": visible.tolist(),
    }
    json_path.write_text(json.dumps(record))
    return {"video": written, "json": json_path, "tracks": tracks, "visible": visible}


def run_propagate_command(
    checkpoint: PathLike,
    frames: PathLike,
    mask_png: PathLike,
    out_dir: PathLike,
    overrides: Sequence[str] = (),
    fps: float = 10,
    hf=None,
) -> dict:
    """``hyperfeat propagate``: propagate the first-frame mask ``mask_png`` (a DAVIS palette PNG of
    object ids, the frames' original size) through ``frames`` (folder or video file).

    Writes one DAVIS-format palette PNG per frame into ``out_dir`` (named after the frame files,
    else ``%05d.png``) and ``out_dir/overlay.mp4`` (the masks blended into the frames). Returns
    {"masks": [paths], "overlay": path, "num_frames": T}.
    """
    from hyperfeat.data.davis import read_mask
    from hyperfeat.viz import palette_mask, write_video

    mask = read_mask(mask_png)  # (H, W) object ids; a missing file fails before the backbone loads
    precheck_source(frames)
    if hf is None:
        from hyperfeat.api import Hyperfeatures

        hf = Hyperfeatures.from_checkpoint(checkpoint, overrides=list(overrides))
    video = load_frames(hf, frames)
    masks = propagate(hf, video, mask)  # (T, H, W); checks the mask size before describing the frames
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    one_file_per_frame = len(video.files) == len(video)
    written = []
    for t, frame_mask in enumerate(masks):
        name = f"{video.files[t].stem}.png" if one_file_per_frame else f"{t:05d}.png"
        path = out / name
        palette_mask(frame_mask.numpy()).save(path)
        written.append(path)
    overlay = write_video(overlay_video_frames(video, masks), out / "overlay.mp4", fps=fps)
    return {"masks": written, "overlay": overlay, "num_frames": len(video)}
