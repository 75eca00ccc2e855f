"""Frames read lazily, one at a time, and descriptors kept off the accelerator.

A :class:`FrameStream` reads a folder of frames or a video file frame by frame (nothing but the
frame being decoded is held), checks that every frame has the first one's size, and can be
iterated again (the track command reads it once to describe, once to draw). A
:class:`DescriptorStore` holds the (T, D, h, w) descriptors of a video on the CPU (fp16 by
default) or in a memory-mapped ``.npy`` file on disk (for long videos), and hands out one frame's
descriptors, L2-normalised float32 on the consumer's device, when it is asked for them. So the
memory of :func:`describe_stream` + tracking is one chunk of frames plus the store (on disk
when long), whatever the number of frames.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from hyperfeat.errors import DataError
from hyperfeat.io import FRAME_SUFFIXES, PathLike, list_frames, reserve_space
from hyperfeat.video.frames import VideoFrames, decode_video_file, resized_size

STORE_VERSION = 1


class FrameStream:
    """Frames (3, H, W) float32 in [0, 1] of a folder, a video file, or frames already in memory.

    ``original_size`` and ``size`` are (W, H) before and after resizing the longer side to
    ``frame_size`` (None: unchanged); both are known after the first frame (read at construction).
    Iterating decodes frame by frame; a frame whose size differs from the first raises
    :class:`DataError` naming it.
    """

    def __init__(
        self,
        source: Union[PathLike, VideoFrames, torch.Tensor],
        frame_size: Optional[int] = None,
        max_frames: Optional[int] = None,
    ):
        self.frame_size = frame_size
        self.max_frames = int(max_frames) if max_frames else None
        self._memory: Optional[torch.Tensor] = None
        self.files: list[Path] = []
        self.path: Optional[Path] = None
        if isinstance(source, VideoFrames):
            self._memory = source.frames
            self.original_size, self.files = tuple(source.original_size), list(source.files)
        elif isinstance(source, torch.Tensor):
            if source.ndim != 4 or source.shape[1] != 3:
                raise DataError(f"frames must be a (T, 3, H, W) tensor in [0, 1]; got shape {tuple(source.shape)}")
            self._memory = source.float()
            self.original_size = (int(source.shape[-1]), int(source.shape[-2]))
        else:
            path = Path(source)
            if path.is_dir():
                self.files = list_frames(path)[: self.max_frames]  # DataError when it holds no frames
            elif not path.exists():
                raise DataError(f"video not found: {path} (expected a folder of frames or a video file)")
            elif path.suffix.lower() in FRAME_SUFFIXES:
                raise DataError(f"{path} is a single image; give the folder of frames or a video file")
            else:
                self.path = path
            first = next(self._raw(), None)
            if first is None:
                raise DataError(f"empty video: no frames could be decoded from {path}")
            self.original_size = first.size
        if self._memory is not None:
            if self._memory.shape[0] == 0:
                raise DataError("empty video: the frame tensor has T = 0 frames")
            self._memory = self._memory[: self.max_frames]
            self.frame_size = None  # frames in memory are taken as they are
        self.size = (
            tuple(int(s) for s in (self._memory.shape[-1], self._memory.shape[-2]))
            if self._memory is not None
            else resized_size(self.original_size, frame_size)
        )
        self._length: Optional[int] = None

    # ------------------------------------------------------------------ reading
    def _raw(self) -> Iterator[Image.Image]:
        from hyperfeat.images import load_image

        if self.files:
            for path in self.files:
                yield load_image(path)
            return
        yield from decode_video_file(self.path, self.max_frames)

    def __iter__(self) -> Iterator[torch.Tensor]:
        from hyperfeat.images import pil_to_tensor

        if self._memory is not None:
            yield from self._memory
            return
        count = 0
        for index, image in enumerate(self._raw()):
            if image.size != self.original_size:
                where = self.files[index] if self.files else f"{self.path} frame {index}"
                raise DataError(
                    f"frame {where} has size {image.size} (W, H) but the first frame has "
                    f"{self.original_size}: every frame of a video must have one size"
                )
            if self.size != image.size:
                image = image.resize(self.size, Image.BILINEAR)
            count += 1
            yield pil_to_tensor(image)  # (3, H, W)
        self._length = count

    def chunks(self, size: int) -> Iterator[torch.Tensor]:
        """(B, 3, H, W) chunks of at most ``size`` frames."""
        batch: list[torch.Tensor] = []
        for frame in self:
            batch.append(frame)
            if len(batch) == size:
                yield torch.stack(batch)
                batch = []
        if batch:
            yield torch.stack(batch)

    def __len__(self) -> int:
        if self._memory is not None:
            return int(self._memory.shape[0])
        if self.files:
            return len(self.files)
        if self._length is None:  # count the packets of the video stream without decoding them
            import av

            with av.open(str(self.path)) as container:
                count = sum(1 for packet in container.demux(video=0) if packet.size)
            self._length = min(count, self.max_frames) if self.max_frames else count
        return self._length

    @property
    def scale(self) -> float:
        return max(self.size) / max(self.original_size)

    def key(self, extra: str = "") -> str:
        """A digest of the frames (their files' names, sizes, mtimes and contents; or the tensor's
        bytes), their resized size and ``extra`` (the describer's key)."""
        hasher = hashlib.sha256(f"stream-v{STORE_VERSION}|{self.size}|{self.max_frames}|{extra}|".encode())
        if self._memory is not None:
            hasher.update(self._memory.contiguous().numpy().tobytes())
        for path in self.files or ([self.path] if self.path else []):
            stat = path.stat()
            hasher.update(f"{path.name}|{stat.st_size}|{stat.st_mtime_ns}|".encode())
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    hasher.update(block)
        return hasher.hexdigest()


class DescriptorStore:
    """(T, D, h, w) descriptors off the accelerator: a CPU tensor, or a memory-mapped ``.npy``.

    ``store[t]`` → (D, h, w) float32, L2-normalised over D, on ``device``; ``store.frames(idx)``
    → (len(idx), D, h, w). Write with :meth:`write` in frame order, then :meth:`finish`.
    """

    def __init__(
        self,
        shape: Sequence[int],
        dtype: str = "float16",
        path: Optional[PathLike] = None,
        device: Union[str, torch.device] = "cpu",
    ):
        self.shape = tuple(int(s) for s in shape)
        if dtype not in ("float16", "float32"):
            raise DataError(f"video.store_dtype must be float16 or float32; got {dtype!r}")
        self.dtype = dtype
        self.device = torch.device(device)
        self.path = Path(path) if path is not None else None
        self._filled = 0
        if self.path is None:
            self._data = torch.empty(self.shape, dtype=getattr(torch, dtype))
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._partial = self.path.with_name(self.path.name + f".{os.getpid()}.partial")
            self._array = np.lib.format.open_memmap(self._partial, mode="w+", dtype=dtype, shape=self.shape)
            try:  # a memory map over a full disk dies of SIGBUS: take the blocks now, or fail with one line
                reserve_space(self._partial, os.path.getsize(self._partial))
            except BaseException:
                del self._array
                Path(self._partial).unlink(missing_ok=True)
                raise
            self._data = torch.from_numpy(self._array)

    @classmethod
    def open(cls, path: PathLike, device: Union[str, torch.device] = "cpu") -> "DescriptorStore":
        """A finished on-disk store (read-only memory map)."""
        array = np.load(path, mmap_mode="r")
        for start in range(0, array.shape[0], 64):  # a cached store is checked before it is trusted
            if not np.isfinite(array[start : start + 64]).all():
                raise ValueError(f"frames from {start} hold NaN/inf descriptors")
        store = cls.__new__(cls)
        store.shape, store.dtype, store.device, store.path = (
            tuple(array.shape),
            str(array.dtype),
            torch.device(device),
            Path(path),
        )
        store._array, store._filled = array, array.shape[0]
        store._data = None
        return store

    @classmethod
    def from_tensor(cls, desc: torch.Tensor, device: Union[str, torch.device] = "cpu") -> "DescriptorStore":
        """Wrap descriptors already in memory (kept at their own precision, as float32)."""
        store = cls(desc.shape, "float32", None, device)
        store._data = desc.detach().float().cpu()
        store._filled = store.shape[0]
        return store

    def write(self, chunk: torch.Tensor) -> None:
        """Append (B, D, h, w) descriptors of the next frames."""
        end = self._filled + chunk.shape[0]
        if end > self.shape[0] or tuple(chunk.shape[1:]) != self.shape[1:]:
            raise DataError(
                f"descriptor chunk {tuple(chunk.shape)} does not fit the store {self.shape} at frame {self._filled}"
            )
        self._data[self._filled : end] = chunk.detach().to("cpu", getattr(torch, self.dtype))
        self._filled = end

    def finish(self) -> "DescriptorStore":
        if self._filled != self.shape[0]:
            raise DataError(f"the video gave {self._filled} frames but {self.shape[0]} were expected")
        if self.path is not None and self._data is not None:
            self._array.flush()
            del self._data, self._array
            os.replace(self._partial, self.path)  # whole or nothing
            self._array = np.load(self.path, mmap_mode="r")
            self._data = None
        return self

    def discard(self) -> None:
        """Remove a half-written on-disk store."""
        if self.path is not None and getattr(self, "_partial", None) is not None and self._data is not None:
            self._data = None
            self._array = None
            Path(self._partial).unlink(missing_ok=True)

    def __len__(self) -> int:
        return self.shape[0]

    def raw(self, index) -> torch.Tensor:
        """Stored values of frames ``index`` (an int or a list), float32 on the CPU, not normalised."""
        if self._data is not None:
            return self._data[index].float()
        return torch.from_numpy(np.array(self._array[index], dtype=np.float32))

    def __getitem__(self, t: int) -> torch.Tensor:
        return F.normalize(self.raw(int(t)).to(self.device), dim=0)  # (D, h, w)

    def frames(self, index: Sequence[int]) -> torch.Tensor:
        return F.normalize(self.raw(list(index)).to(self.device), dim=1)  # (n, D, h, w)

    def tensor(self) -> torch.Tensor:
        """All descriptors (T, D, h, w) float32 on the CPU (only for short videos)."""
        return self.raw(slice(None))


def as_store(desc: Union[torch.Tensor, DescriptorStore], device: Optional[torch.device] = None) -> DescriptorStore:
    """A store over ``desc`` (a (T, D, h, w) tensor is wrapped, a store returned as is)."""
    if isinstance(desc, DescriptorStore):
        return desc
    if not isinstance(desc, torch.Tensor) or desc.ndim != 4:
        shape = tuple(desc.shape) if isinstance(desc, torch.Tensor) else type(desc).__name__
        raise DataError(f"descriptors must be a (T, D, h, w) tensor or a DescriptorStore; got {shape}")
    if desc.shape[0] == 0:
        raise DataError("empty video: descriptors have T = 0 frames")
    return DescriptorStore.from_tensor(desc, device or desc.device)


@torch.no_grad()
def describe_stream(
    frames: Iterable[torch.Tensor],
    describe: Callable[[torch.Tensor], torch.Tensor],
    num_frames: int,
    batch_size: int = 4,
    dtype: str = "float16",
    path: Optional[PathLike] = None,
    device: Union[str, torch.device] = "cpu",
    progress: bool = True,
) -> DescriptorStore:
    """Describe ``frames`` ((3, H, W) tensors, in order) in chunks of ``batch_size`` into a
    :class:`DescriptorStore` of ``num_frames`` frames (in memory, or at ``path`` on disk: a file
    that appears only when every frame has been described). Only one chunk of frames is held."""
    from tqdm.auto import tqdm

    if int(num_frames) < 1:
        raise DataError("empty video: no frames to describe")
    if int(batch_size) < 1:
        raise DataError(f"batch_size must be a positive integer; got {batch_size!r}")
    store: Optional[DescriptorStore] = None
    batch: list[torch.Tensor] = []
    try:
        with tqdm(total=int(num_frames), desc="descriptors", unit="frame", disable=not progress, leave=False) as bar:

            def flush():
                nonlocal store
                out = describe(torch.stack(batch))  # (B, D, h, w)
                if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[0] != len(batch):
                    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                    raise DataError(
                        f"describe must return (B, D, h, w) for a batch of {len(batch)} frames; got {shape}"
                    )
                if store is None:
                    store = DescriptorStore((int(num_frames), *out.shape[1:]), dtype, path, device)
                store.write(out)
                bar.update(len(batch))
                batch.clear()

            for frame in frames:
                batch.append(frame)
                if len(batch) == int(batch_size):
                    flush()
            if batch:
                flush()
        if store is None:
            raise DataError("empty video: no frames to describe")
        return store.finish()
    except BaseException:
        if store is not None:
            store.discard()
        raise


def temporary_store_path(prefix: str = "hyperfeat-desc-") -> Path:
    """A fresh path in the system's temporary folder for an on-disk store."""
    handle, name = tempfile.mkstemp(prefix=prefix, suffix=".npy")
    os.close(handle)
    os.unlink(name)
    return Path(name)
