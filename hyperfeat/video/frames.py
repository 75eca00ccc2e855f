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

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from hyperfeat.errors import DataError
from hyperfeat.images import load_image, pil_to_tensor
from hyperfeat.io import FRAME_SUFFIXES, PathLike, list_frames

if TYPE_CHECKING:
    from hyperfeat.describe.base import Describer

FRAME_TRANSFORM = "resize-LxL-bilinear-antialias-v1"  # part of the cache key: change it if the transform changes


# ---------------------------------------------------------------------------------------------
# frames → descriptors


def frames_to_backbone(frames: torch.Tensor, size: int) -> torch.Tensor:
    """The frame transform (``FRAME_TRANSFORM``): frames (T, 3, H, W) in [0, 1] → (T, 3, L, L) in
    [-1, 1], resized to L × L = ``size`` (bilinear, antialiased, aspect not kept)."""
    batch = frames.float()
    if tuple(batch.shape[-2:]) != (size, size):
        batch = F.interpolate(batch, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return batch.clamp(0, 1) * 2.0 - 1.0


def frame_describer(describer: "Describer") -> Callable[[torch.Tensor], torch.Tensor]:
    """The per-frame descriptor of ``hf``: frames (T, 3, H, W) in [0, 1] → (T, D, R, R) float32.

    Each frame is resized to L × L (L = ``features.load_size``; bilinear, antialiased, aspect
    not kept), mapped to [-1, 1] and passed to ``describer.describe_batch``. The R × R grid covers the
    full frame: pixel (x, y) of a (W, H) frame lies at cell (x · R / W, y · R / H).
    """
    size = int(describer.load_size)

    def describe(frames: torch.Tensor) -> torch.Tensor:
        if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[1] != 3:
            shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
            raise DataError(f"frames must be a (T, 3, H, W) tensor in [0, 1]; got {shape}")
        return describer.describe_batch(frames_to_backbone(frames, size))  # from (T, 3, L, L) in [-1, 1]

    return describe


def frames_from_images(
    images: Sequence, frame_size: Optional[int] = None, max_frames: Optional[int] = None
) -> VideoFrames:
    """A list of frames → :class:`VideoFrames`, read like a folder of frames (longer side at
    ``frame_size``, aspect kept; None: original size). Items are image paths, PIL images, uint8
    (H, W, 3) arrays or (3, H, W) tensors in [0, 1]; all must have the first one's size. A list of
    paths is keyed by its files in the descriptor cache, other lists by the frames' bytes."""
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


def load_frames(describer: "Describer", source: FrameSource, max_frames: Optional[int] = None) -> VideoFrames:
    """A video as :class:`VideoFrames`: a folder of frames or a video file (read with the longer
    side at ``video.frame_size``), a list of frames (image paths, PIL images, arrays or (3, H, W)
    tensors; read like a folder, see :func:`frames_from_images`), a (T, 3, H, W) tensor in [0, 1]
    (taken as is), or :class:`VideoFrames` (returned as is)."""
    if isinstance(source, VideoFrames):
        return source
    frame_size = int(describer.cfg.video.frame_size) if describer.cfg.video.get("frame_size") else None
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
    raise DataError(
        f"a video must be a folder of frames, a video file, a list of frames, a (T, 3, H, W) tensor "
        f"or VideoFrames; "
        f"got {type(source).__name__}"
    )


# ---------------------------------------------------------------------------------------------
# commands


def precheck_source(source: PathLike) -> None:
    """Fail early, with the path, on a missing video, an empty frame folder or a single image."""
    from hyperfeat.io import FRAME_SUFFIXES, list_frames

    path = Path(source)
    if path.is_dir():
        list_frames(path)  # DataError "empty video: …" when it holds no frames
    elif not path.exists():
        raise DataError(f"video not found: {path} (expected a folder of frames or a video file)")
    elif path.suffix.lower() in FRAME_SUFFIXES:
        raise DataError(f"{path} is a single image; give the folder of frames or a video file")


def frames_as_uint8(frames: torch.Tensor) -> np.ndarray:
    """(T, 3, H, W) in [0, 1] → (T, H, W, 3) uint8."""
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


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


FrameSource = Union[VideoFrames, torch.Tensor, str, Path, Sequence]  # Sequence: of images (paths, PIL, arrays, tensors)


def resized_size(size: tuple[int, int], frame_size: Optional[int]) -> tuple[int, int]:
    """(W, H) scaled so that the longer side is ``frame_size`` (None: unchanged)."""
    width, height = size
    if frame_size is None:
        return width, height
    if int(frame_size) < 1:
        raise DataError(f"frame_size must be a positive integer; got {frame_size!r}")
    scale = frame_size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


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


GIF_TRAILER = b"\x3b"  # the byte every complete GIF ends with


def decode_video_file(path: PathLike, max_frames: Optional[int] = None) -> Iterator[Image.Image]:
    """The RGB frames of a video file (mp4, avi, gif, … through PyAV), decoded one at a time: the one
    decoder of :func:`read_video_file` and :class:`hyperfeat.video.stream.FrameStream`.

    Unreadable files raise :class:`DataError` naming them. A file that decodes to its end but ends
    early warns once, naming it and the frames it gave: fewer frames than its container declares, or
    a GIF without its trailer byte (a cut GIF decodes without any error, its lost frames silently
    gone).
    """
    import av  # imported here: only video files need it

    path = Path(path)
    count = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"video file {path} has no video stream (cut short, or not a video?)")
            declared = int(container.streams.video[0].frames or 0)
            for frame in container.decode(video=0):
                if max_frames and count >= max_frames:
                    return
                count += 1
                yield frame.to_image().convert("RGB")
    except DataError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise DataError(f"cannot read video file {path}: {err} (corrupt or not a video?)") from err
    if declared and count < declared:
        warnings.warn(f"video file {path} ended after {count} of the {declared} frames it declares (cut short?)")
    elif path.suffix.lower() == ".gif" and count and not _ends_with(path, GIF_TRAILER):
        warnings.warn(f"GIF {path} ends without its trailer (cut short?): read its first {count} frames only")


def _ends_with(path: Path, tail: bytes) -> bool:
    with open(path, "rb") as handle:
        handle.seek(0, 2)
        handle.seek(max(0, handle.tell() - len(tail)))
        return handle.read() == tail


def read_video_file(path: PathLike, frame_size: Optional[int] = None, max_frames: Optional[int] = None) -> VideoFrames:
    """Decode a video file (mp4, avi, gif, … through PyAV, :func:`decode_video_file`) into RGB frames."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"video file not found: {path}")
    tensors: list[torch.Tensor] = []
    original: Optional[tuple[int, int]] = None
    for image in decode_video_file(path, max_frames):
        if original is None:
            original = image.size
        tensors.append(_pil_frame(image, frame_size))
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
