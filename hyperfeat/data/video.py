"""Video input: frames from a folder or a video file, resizing, and per-frame descriptors.

Coordinate convention (shared by every video module of hyperfeat):

* A point is (x, y) in pixels of the frame it belongs to: x to the right, y down, the centre
  of pixel (row i, column j) at (x, y) = (j, i). A frame of width W covers x in [-0.5, W - 0.5].
* A query is (t, x, y): t is a frame index (0-based), (x, y) a point in that frame.
* Tracks are (N, T, 2) xy; visibility is (N, T) bool, True = visible.
* Going between two sizes of the same frame (e.g. the original frame and the resized one, or
  a frame and its descriptor grid) is plain scaling: x' = x · W' / W, y' = y · H' / H.
* Sizes are written (W, H) when they are image sizes, as PIL does; tensors are (…, H, W).

Frames are float tensors (T, 3, H, W) in [0, 1]; descriptors are (T, D, h, w).
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from hyperfeat.checkpoint import atomic_save
from hyperfeat.errors import DataError
from hyperfeat.images import load_image, pil_to_tensor

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
VIDEO_SUFFIXES = (".mp4", ".avi", ".gif", ".mov", ".mkv", ".webm")
CACHE_VERSION = 1

Describe = Callable[[torch.Tensor], torch.Tensor]  # (B, 3, H, W) in [0, 1] → (B, D, h, w)
PathLike = Union[str, os.PathLike]


@dataclass
class VideoFrames:
    """Frames of one video after resizing.

    ``frames`` is (T, 3, H, W) float32 in [0, 1]; ``original_size`` and ``size`` are (W, H)
    before and after resizing; ``scale`` is size / original_size (the longer side's ratio);
    ``files`` are the files the frames came from (one per frame for a folder, the video file
    once for a video), used as the cache key.
    """

    frames: torch.Tensor
    original_size: tuple[int, int]
    size: tuple[int, int]
    scale: float
    files: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.frames.shape[0])


def natural_key(path: Path) -> list:
    """Sort key comparing digit runs as numbers: frame2 < frame10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def list_frames(folder: PathLike) -> list[Path]:
    """Frame files (jpg/png) directly inside ``folder``, sorted by name (numbers by value)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"frame folder not found: {folder}")
    files = sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES), key=natural_key)
    if not files:
        raise DataError(f"empty video: no frames ({', '.join(FRAME_SUFFIXES)}) in folder {folder}")
    return files


def resized_size(size: tuple[int, int], frame_size: Optional[int]) -> tuple[int, int]:
    """(W, H) scaled so that the longer side is ``frame_size`` (None: unchanged)."""
    width, height = size
    if frame_size is None:
        return width, height
    if int(frame_size) < 1:
        raise DataError(f"frame_size must be a positive integer; got {frame_size!r}")
    scale = frame_size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def rescale_points(points: torch.Tensor, from_size: tuple[int, int], to_size: tuple[int, int]) -> torch.Tensor:
    """Points (..., 2) xy in a frame of size ``from_size`` (W, H) → the same points at ``to_size``."""
    factor = torch.tensor(
        [to_size[0] / from_size[0], to_size[1] / from_size[1]], dtype=points.dtype, device=points.device
    )
    return points * factor


def resize_frames(frames: torch.Tensor, frame_size: Optional[int]) -> tuple[torch.Tensor, float]:
    """Resize (T, 3, H, W) frames so the longer side is ``frame_size`` (bilinear, antialiased).

    Returns the resized frames and the scale (new longer side / old longer side).
    """
    height, width = frames.shape[-2:]
    new_w, new_h = resized_size((width, height), frame_size)
    if (new_w, new_h) == (width, height):
        return frames, 1.0
    out = F.interpolate(frames.float(), size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
    return out.clamp_(0, 1), max(new_w, new_h) / max(width, height)  # (T, 3, H', W')


def frames_from_uint8(frames: Union[np.ndarray, torch.Tensor]) -> torch.Tensor:
    """(T, H, W, 3) uint8 frames → (T, 3, H, W) float32 in [0, 1]."""
    array = torch.as_tensor(frames)
    if array.ndim != 4 or array.shape[-1] != 3:
        raise DataError(f"expected frames of shape (T, H, W, 3); got {tuple(array.shape)}")
    return array.permute(0, 3, 1, 2).float().div_(255.0).contiguous()


def _pil_frame(image: Image.Image, frame_size: Optional[int]) -> torch.Tensor:
    size = resized_size(image.size, frame_size)
    if size != image.size:
        image = image.resize(size, Image.BILINEAR)
    return pil_to_tensor(image)  # (3, H, W)


def read_frame_files(
    files: Sequence[PathLike], frame_size: Optional[int] = None, max_frames: Optional[int] = None
) -> VideoFrames:
    """Read the given frame files (in this order); every frame must have the first one's size."""
    paths = [Path(p) for p in files][: max_frames if max_frames else None]
    if not paths:
        raise DataError("empty video: no frame files given")
    tensors: list[torch.Tensor] = []
    original: Optional[tuple[int, int]] = None
    for path in paths:
        image = load_image(path)  # raises ImageError naming the file
        if original is None:
            original = image.size
        elif image.size != original:
            raise DataError(f"frame {path} has size {image.size} (W, H); the first frame has {original}")
        tensors.append(_pil_frame(image, frame_size))
    frames = torch.stack(tensors)  # (T, 3, H, W)
    size = (int(frames.shape[-1]), int(frames.shape[-2]))
    return VideoFrames(frames, original, size, max(size) / max(original), paths)


def read_video_file(path: PathLike, frame_size: Optional[int] = None, max_frames: Optional[int] = None) -> VideoFrames:
    """Decode a video file (mp4, avi, gif, … through PyAV) into RGB frames."""
    import av  # imported here: only video files need it

    path = Path(path)
    if not path.is_file():
        raise DataError(f"video file not found: {path}")
    tensors: list[torch.Tensor] = []
    original: Optional[tuple[int, int]] = None
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"video file {path} has no video stream")
            for frame in container.decode(video=0):
                image = frame.to_image().convert("RGB")
                if original is None:
                    original = image.size
                tensors.append(_pil_frame(image, frame_size))
                if max_frames and len(tensors) >= max_frames:
                    break
    except DataError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise DataError(f"cannot read video file {path}: {err} (corrupt or not a video?)") from err
    if not tensors:
        raise DataError(f"empty video: no frames could be decoded from {path}")
    frames = torch.stack(tensors)  # (T, 3, H, W)
    size = (int(frames.shape[-1]), int(frames.shape[-2]))
    return VideoFrames(frames, original, size, max(size) / max(original), [path])


def read_video(source: PathLike, frame_size: Optional[int] = None, max_frames: Optional[int] = None) -> VideoFrames:
    """A folder of frames (sorted jpg/png) or a video file → :class:`VideoFrames`.

    The frames are resized so the longer side is ``frame_size`` (aspect ratio kept; None:
    original size) and cut to the first ``max_frames`` (None: all).
    """
    path = Path(source)
    if path.is_dir():
        return read_frame_files(list_frames(path), frame_size, max_frames)
    if not path.exists():
        raise DataError(f"video not found: {path} (expected a folder of frames or a video file)")
    if path.suffix.lower() in FRAME_SUFFIXES:
        raise DataError(f"{path} is a single image; give the folder of frames or a video file")
    return read_video_file(path, frame_size, max_frames)


# ---------------------------------------------------------------------------------------------
# descriptors, in batches, with an optional disk cache


def _file_digest(path: Path, hasher: "hashlib._Hash") -> None:
    stat = path.stat()
    hasher.update(f"{path.name}|{stat.st_size}|{stat.st_mtime_ns}|".encode())
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)


def cache_key(frames: torch.Tensor, files: Sequence[PathLike] = (), key: str = "") -> str:
    """Hex digest naming a descriptor cache entry.

    It covers the frame files' names, sizes, mtimes and contents (or, with no files, the frame
    tensor's bytes), the frames' shape (so another ``frame_size`` is another entry) and the
    caller's ``key`` (which must name the descriptor model and its settings).
    """
    hasher = hashlib.sha256(f"v{CACHE_VERSION}|{tuple(frames.shape)}|{key}|".encode())
    if files:
        for path in files:
            _file_digest(Path(path), hasher)
    else:
        hasher.update(frames.detach().cpu().contiguous().numpy().tobytes())
    return hasher.hexdigest()


def _load_cache(path: Path, digest: str, num_frames: int) -> Optional[torch.Tensor]:
    if not path.is_file():
        return None
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
        descriptors = entry["descriptors"]
        if entry.get("key") != digest or not isinstance(descriptors, torch.Tensor):
            raise ValueError("key mismatch or no descriptor tensor")
        if descriptors.ndim != 4 or descriptors.shape[0] != num_frames:
            raise ValueError(f"descriptors of shape {tuple(descriptors.shape)} for {num_frames} frames")
        return descriptors
    except Exception as err:  # any unreadable entry is recomputed
        warnings.warn(f"descriptor cache file {path} is unreadable ({err}); recomputing it", stacklevel=3)
        return None


@torch.no_grad()
def compute_descriptors(
    frames: torch.Tensor,
    describe: Describe,
    batch_size: int = 4,
    cache_dir: Optional[PathLike] = None,
    key: str = "",
    files: Sequence[PathLike] = (),
    progress: bool = True,
) -> torch.Tensor:
    """Descriptors of every frame: ``describe`` on chunks of ``batch_size`` frames.

    frames: (T, 3, H, W) in [0, 1]. Returns (T, D, h, w) on the CPU. With ``cache_dir`` the
    result is stored in ``<cache_dir>/<digest>.pt`` (see :func:`cache_key`; pass the frame
    ``files`` and a ``key`` naming the descriptor model) and a later call loads it instead of
    calling ``describe``; a corrupt cache file is recomputed with a warning.
    """
    from tqdm.auto import tqdm

    if frames.ndim != 4 or frames.shape[1] != 3:
        raise DataError(f"frames must be (T, 3, H, W); got shape {tuple(frames.shape)}")
    num_frames = int(frames.shape[0])
    if num_frames == 0:
        raise DataError("empty video: no frames to describe")
    if int(batch_size) < 1:
        raise DataError(f"batch_size must be a positive integer; got {batch_size!r}")

    cache_path: Optional[Path] = None
    digest = ""
    if cache_dir is not None:
        digest = cache_key(frames, files, key)
        cache_path = Path(cache_dir) / f"{digest}.pt"
        cached = _load_cache(cache_path, digest, num_frames)
        if cached is not None:
            return cached

    chunks: list[torch.Tensor] = []
    with tqdm(total=num_frames, desc="descriptors", unit="frame", disable=not progress, leave=False) as bar:
        for start in range(0, num_frames, int(batch_size)):
            batch = frames[start : start + int(batch_size)]  # (B, 3, H, W)
            out = describe(batch)
            if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[0] != batch.shape[0]:
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise DataError(f"describe must return (B, D, h, w) for a batch of {batch.shape[0]} frames; got {shape}")
            chunks.append(out.detach().cpu())
            bar.update(batch.shape[0])
    descriptors = torch.cat(chunks)  # (T, D, h, w)
    if cache_path is not None:
        atomic_save({"key": digest, "descriptors": descriptors}, cache_path)
    return descriptors


def describe_video(
    video: VideoFrames,
    describe: Describe,
    batch_size: int = 4,
    cache_dir: Optional[PathLike] = None,
    key: str = "",
    progress: bool = True,
) -> torch.Tensor:
    """:func:`compute_descriptors` for a :class:`VideoFrames`, keyed by its files. (T, D, h, w)"""
    return compute_descriptors(video.frames, describe, batch_size, cache_dir, key, video.files, progress)
