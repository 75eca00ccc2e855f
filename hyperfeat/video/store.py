"""Per-video descriptor store: describe frames in batches and keep the result in a file keyed by
the frames (their files' contents or the tensor's bytes) and the describer's identity, so a
second run, or another task on the same video, reads instead of recomputing.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence

import torch

from hyperfeat.errors import DataError
from hyperfeat.io import PathLike, atomic_save, safe_torch_load
from hyperfeat.video.frames import FRAME_TRANSFORM, VideoFrames

if TYPE_CHECKING:
    from hyperfeat.describe.base import Describer


def descriptor_key(describer: "Describer") -> str:
    """Cache key naming the descriptor model: the describer's :meth:`~Describer.identity` (for
    hyperfeatures: every value that decides the raw maps, the aggregation block and the sha256
    of the network's weights) and the frame transform's name."""
    return json.dumps({**describer.identity(), "transform": FRAME_TRANSFORM}, sort_keys=True, default=str)


CACHE_VERSION = 1


Describe = Callable[[torch.Tensor], torch.Tensor]  # (B, 3, H, W) in [0, 1] → (B, D, h, w)


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
        entry = safe_torch_load(path, "descriptor cache file", ValueError)
        descriptors = entry["descriptors"]
        if entry.get("key") != digest or not isinstance(descriptors, torch.Tensor):
            raise ValueError("key mismatch or no descriptor tensor")
        if descriptors.ndim != 4 or descriptors.shape[0] != num_frames:
            raise ValueError(f"descriptors of shape {tuple(descriptors.shape)} for {num_frames} frames")
        if not bool(torch.isfinite(descriptors).all()):
            raise ValueError("it holds NaN/inf descriptors")
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
                raise DataError(
                    f"describe must return (B, D, h, w) for a batch of {batch.shape[0]} frames; got {shape}"
                )
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
