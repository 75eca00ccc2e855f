"""File input and output that several stages share: atomic writes (a file appears whole or not
at all), the safe readers of every file the project loads (:func:`safe_torch_load`,
:func:`safe_unpickle`: neither can run code from a file), video and GIF encoding, and the listing
of images and frames with the suffixes the project reads (``IMAGE_SUFFIXES``, ``FRAME_SUFFIXES``,
``READABLE_VIDEO_SUFFIXES``) and writes (``WRITABLE_VIDEO_SUFFIXES``).
"""

from __future__ import annotations

import errno
import importlib
import os
import pathlib
import pickle
import re
import shutil
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from hyperfeat.errors import DataError, HyperfeatError, ImageError, StorageError
from hyperfeat.images import load_image

# ---------------------------------------------------------------------------- paths and suffixes

PathLike = Union[str, os.PathLike]


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")


READABLE_VIDEO_SUFFIXES = (".mp4", ".avi", ".gif", ".mov", ".mkv", ".webm")


WRITABLE_VIDEO_SUFFIXES = (".gif", ".mp4")

# ---------------------------------------------------------------------------- atomic writes


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """``write(tmp)`` a temporary file beside ``path``, then rename it into place: a crash or a
    reader never sees half a file. Creates the parent folder. An OS fault (no space, read-only,
    permission denied, a file where a folder should be) is a :class:`StorageError` naming
    ``path`` (see :func:`write_error`), and leaves neither ``path`` changed nor a temporary file."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600: give the file the mode any new file gets
        os.replace(tmp, path)
    except Exception as err:  # noqa: BLE001  (writers report a full disk in their own types)
        mapped = write_error(err, path)
        if mapped is not None:
            raise mapped from None
        raise
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


# errno → what went wrong writing a file, and what to do; {path} is the file being written
_WRITE_FAULTS = {
    errno.ENOSPC: "no space left on the device to write {path}{free}: free some space or write elsewhere",
    errno.EDQUOT: "no space left on the device to write {path}{free}: free some space or write elsewhere",
    errno.EROFS: "cannot write {path}: the file system is read-only; write elsewhere",
    errno.EACCES: "cannot write {path}: permission denied; write to a folder you may write to",
    errno.EPERM: "cannot write {path}: operation not permitted; write to a folder you may write to",
    errno.EEXIST: "cannot write {path}: {culprit} exists and is a file, where a folder is needed; name another folder",
    errno.ENOTDIR: "cannot write {path}: a part of its folder path is a file, where a folder is needed; name "
    "another folder",
    errno.EISDIR: "cannot write {path}: it is a folder; name a file",
    errno.ENAMETOOLONG: "cannot write {path}: the file name is too long",
    errno.EMFILE: "cannot write {path}: too many open files (raise `ulimit -n`)",
    errno.EIO: "cannot write {path}: input/output error of the device",
}


def write_error(err: BaseException, path: Optional[PathLike] = None, free: bool = True) -> Optional[StorageError]:
    """The project's one-line :class:`StorageError` for an OS fault met writing ``path`` (default:
    the error's own file name): no space or quota, a read-only file system, permission denied, a
    file where a folder is needed (EEXIST, ENOTDIR), a folder where a file is. None when ``err``
    is no such fault (the caller re-raises it). Every writer, and the command line for writes
    outside :func:`atomic_write`, goes through here, so each fault reads the same everywhere.
    ``free`` adds the space left to the no-space message."""
    folder = Path(path).parent if path is not None else Path(getattr(err, "filename", None) or ".").parent
    if isinstance(err, HyperfeatError):
        return None  # already the project's own line
    found = re.search(r"(?:os error|code:?) (\d+)", str(err))
    if isinstance(err, OSError) and err.errno is not None:
        code = err.errno
    elif found and int(found.group(1)) in _WRITE_FAULTS:
        code = int(found.group(1))  # safetensors: 'Os { code: 28, kind: StorageFull, ... }'
    elif (isinstance(err, RuntimeError) or type(err).__name__ == "SafetensorError") and _out_of_space(err, folder):
        code = errno.ENOSPC  # torch's stream writer: a full disk as a RuntimeError without an errno
    else:
        return None
    template = _WRITE_FAULTS.get(code)
    if template is None:
        return None
    target = path if path is not None else (getattr(err, "filename", None) or "a file")
    culprit = getattr(err, "filename", None) or Path(target).parent
    room = f" ({_free(folder)} free)" if free and code in (errno.ENOSPC, errno.EDQUOT) else ""
    return StorageError(template.format(path=target, free=room, culprit=culprit))


def _out_of_space(err: BaseException, folder: Path) -> bool:
    """Whether a failed write ran out of space: ENOSPC/EDQUOT, or (torch's stream writer reports a
    full disk as a RuntimeError without an errno) under 1 MiB left on the device."""
    if isinstance(err, OSError) and err.errno is not None:
        return err.errno in (errno.ENOSPC, errno.EDQUOT)
    try:
        return shutil.disk_usage(folder).free < 2**20
    except OSError:
        return False


def _free(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.1f} MiB"
    except OSError:
        return "? MiB"


def check_writable(path: PathLike) -> None:
    """Fail now, with :func:`write_error`'s line, when the file ``path`` could not be written (its
    folder is created if needed and probed with a temporary file): before a long run, not after."""
    folder = Path(path).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe-")
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise write_error(err, path, free=False) or err from None


def reserve_space(path: PathLike, nbytes: int) -> None:
    """Allocate the blocks of the existing file ``path`` up to ``nbytes``, so that writing through a
    memory map of it cannot die of SIGBUS when the disk fills: a full disk is a
    :class:`StorageError` now, before any work. Where the file system cannot allocate ahead, the
    free space is checked instead."""
    try:
        fd = os.open(path, os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, int(nbytes))
        finally:
            os.close(fd)
        return
    except AttributeError:  # no posix_fallocate on this platform
        pass
    except OSError as err:
        if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise write_error(err, path) or err from None
    free = shutil.disk_usage(Path(path).parent).free
    if free < int(nbytes):
        raise StorageError(
            f"no space left on the device to write {path} ({nbytes / 2**20:.1f} MiB needed, "
            f"{free / 2**20:.1f} MiB free): free some space or write elsewhere"
        )


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save ``obj`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


# ---------------------------------------------------------------------------- listing files


def natural_key(path: Path) -> list:
    """Sort key comparing digit runs as numbers: frame2 < frame10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def list_files(
    folder: PathLike,
    suffixes: Sequence[str],
    error: type,
    missing: str,
    empty: str,
    recursive: bool = False,
    natural: bool = False,
) -> list[Path]:
    """The files of ``folder`` (below it, when ``recursive``) whose suffix is one of ``suffixes``,
    sorted by path (digit runs by value when ``natural``: frame2 < frame10). The one lister of the
    project: a missing folder raises ``error(missing + folder)``, an empty one
    ``error(empty.format(suffixes=..., folder=...))``, so each caller keeps its own words."""
    folder = Path(folder)
    if not folder.is_dir():
        raise error(f"{missing}{folder}")
    found = folder.rglob("*") if recursive else folder.iterdir()
    files = [p for p in found if p.is_file() and p.suffix.lower() in suffixes]
    if not files:
        raise error(empty.format(suffixes=", ".join(suffixes), folder=folder))
    return sorted(files, key=natural_key) if natural else sorted(files)


def list_images(folder: Union[str, Path]) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name; errors on a missing or empty folder."""
    return list_files(
        folder, IMAGE_SUFFIXES, ImageError, "image folder not found: ", "no images ({suffixes}) in folder {folder}"
    )


def list_frames(folder: PathLike) -> list[Path]:
    """Frame files (jpg/png) directly inside ``folder``, sorted by name (numbers by value)."""
    return list_files(
        folder,
        FRAME_SUFFIXES,
        DataError,
        "frame folder not found: ",
        "empty video: no frames ({suffixes}) in folder {folder}",
        natural=True,
    )


def list_image_files(source: Union[PathLike, Sequence[PathLike]]) -> list[Path]:
    """Image files of a folder (recursively, sorted) or an explicit list of paths."""
    if isinstance(source, (str, Path)):
        return list_files(
            source,
            IMAGE_SUFFIXES,
            DataError,
            "synthetic pairs: image folder not found: ",
            "synthetic pairs: no images ({suffixes}) below {folder}",
            recursive=True,
        )
    files = [Path(p) for p in source]
    if not files:
        raise DataError("synthetic pairs: the image list is empty; expected at least one image path")
    absent = [str(p) for p in files if not p.is_file()]
    if absent:
        raise DataError(f"synthetic pairs: {len(absent)} listed image(s) not found: {', '.join(absent[:5])}")
    return files


class UnsafeFileError(HyperfeatError):
    """A file whose loading would run code, or build objects outside the safe set."""


def _numpy_allowed() -> dict[tuple[str, str], Any]:
    """numpy's array/scalar/dtype rebuilders by (module, name), under both spellings of numpy's
    core module (numpy 1 writes ``numpy.core``, numpy 2 ``numpy._core``)."""
    import warnings

    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mod = importlib.import_module(module)
        except ImportError:
            continue
        for name in ("_reconstruct", "scalar"):
            if hasattr(mod, name):
                allowed[(module, name)] = getattr(mod, name)
    dtypes = getattr(np, "dtypes", None)
    for name in dir(dtypes) if dtypes is not None else ():
        if name.endswith("DType"):
            allowed[("numpy.dtypes", name)] = getattr(dtypes, name)
    return allowed


def _numpy_safe_globals() -> list:
    return list({id(v): v for v in _numpy_allowed().values()}.values())


# The only globals a torch file may name beyond tensors and plain containers: paths and numpy
# values (older Lightning/numpy code stored them in checkpoints). Nothing here runs code.
SAFE_TORCH_GLOBALS = [pathlib.PosixPath, pathlib.PurePosixPath, pathlib.WindowsPath, pathlib.PureWindowsPath]


def _unsafe_name(err: BaseException) -> str:
    """The global a refused file named, out of torch's long weights-only message."""
    match = re.search(r"GLOBAL ([\w.]+)", str(err)) or re.search(r"global ([\w.]+)", str(err))
    return match.group(1) if match else type(err).__name__


def safe_torch_load(
    path: str | os.PathLike, what: str = "file", error: type = UnsafeFileError, mmap: bool = False
) -> Any:
    """``torch.load`` of ``path`` that cannot run code: ``weights_only=True`` with the small
    allowlist :data:`SAFE_TORCH_GLOBALS` (+ numpy values). A file that names anything else
    (an object whose unpickling would call a function) raises ``error`` with one line naming
    it; a corrupt file raises ``error`` too. Every torch file the project reads goes through here."""
    path = Path(path)
    safe = SAFE_TORCH_GLOBALS + _numpy_safe_globals()
    try:
        with torch.serialization.safe_globals(safe):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower() or "weights_only" in str(err):
            raise error(
                f"refusing to load {what} {path}: it names {_unsafe_name(err)!s}, which a safe load does not "
                f"build (a file that runs code when loaded, or one written by other software; only tensors, "
                f"numbers, strings, lists and dicts are read)"
            ) from None
        raise error(f"cannot read {what} {path}: {err} (corrupt or not a torch file?)") from None
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except Exception as err:  # zip/format errors
        raise error(
            f"cannot read {what} {path}: {str(err).splitlines()[0] if str(err) else type(err).__name__} "
            f"(corrupt or not a torch file?)"
        ) from None


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Builds only numpy arrays, dtypes and scalars besides plain Python containers and numbers."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = _numpy_allowed()
        if (module, name) in allowed:
            return allowed[(module, name)]
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")


def safe_unpickle(path: str | os.PathLike, what: str = "pickle", error: type = UnsafeFileError) -> Any:
    """A pickle of numpy arrays in dicts/lists/tuples (e.g. the TAP-Vid data files), read by an
    unpickler that refuses every other global, so a crafted file cannot run code."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            return _NumpyOnlyUnpickler(handle).load()
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except pickle.UnpicklingError as err:
        if "is not allowed" in str(err):
            raise error(
                f"refusing to load {what} {path}: it names {_unsafe_name(err)}; only numpy arrays and "
                f"plain containers are read (a file that runs code when loaded?)"
            ) from None
        raise error(f"cannot read {what} {path}: {err}") from None
    except Exception as err:  # truncated files raise EOFError, odd ones many types
        raise error(f"cannot read {what} {path}: {type(err).__name__}: {err}") from None


def gather_images(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Files and folders → image paths, checked to exist and to have distinct stems."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files.extend(list_images(path))
        elif path.is_file():
            files.append(path)
        else:
            raise ImageError(f"input not found: {path}")
    if not files:
        raise ImageError("no input images given")
    stems: dict[str, Path] = {}
    for f in files:
        if f.stem in stems:
            raise ImageError(f"two inputs would write the same output {f.stem}.pt: {stems[f.stem]} and {f}")
        stems[f.stem] = f
    return files


# ---------------------------------------------------------------------------- writing videos

MP4_CODECS = ("libx264", "h264", "mpeg4")  # first one this PyAV build can encode wins


def even_size(image: Image.Image) -> Image.Image:
    """Pad one column/row (copying the edge) so width and height are even, as yuv420p needs."""
    w, h = image.size
    if w % 2 == 0 and h % 2 == 0:
        return image
    array = np.asarray(image)
    array = np.pad(array, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return Image.fromarray(array)


def pick_mp4_codec() -> str:
    """The first encoder of ``MP4_CODECS`` this PyAV build has."""
    import av

    for name in MP4_CODECS:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - PyAV raises different types across versions
            continue
    raise HyperfeatError(f"no MP4 encoder available in PyAV (tried {', '.join(MP4_CODECS)}); write a .gif instead")


def write_mp4(frames: list[Image.Image], path: Path, fps: float) -> None:
    """Encode RGB frames as H.264 (or MPEG-4 part 2) yuv420p with PyAV (the streamed writer on a list)."""
    _write_mp4_stream(frames, path, fps)


def gif_frame(image: Image.Image) -> Image.Image:
    """One RGB frame → a palette ("P") frame whose palette keeps small, saturated marks.

    PIL's own conversion builds one 256-colour median-cut palette per frame, which spends the
    colours on the large areas of a photo: a few pixels of pure green or blue (a track's dot)
    get no entry and come out as the nearest grey. Here the frame's 64 most frequent exact
    colours (the drawn marks, legends and text) are kept as they are and the other 192
    entries are median-cut from the rest."""
    rgb = np.asarray(image.convert("RGB"))
    flat = rgb.reshape(-1, 3)
    codes = (flat[:, 0].astype(np.int64) << 16) | (flat[:, 1].astype(np.int64) << 8) | flat[:, 2]
    # the drawn colours are saturated: far from grey, and repeated exactly
    saturation = flat.max(1).astype(np.int64) - flat.min(1)
    values, counts = np.unique(codes[saturation >= 96], return_counts=True)
    keep = values[np.argsort(-counts)[:64]]
    reserved = np.stack([(keep >> 16) & 255, (keep >> 8) & 255, keep & 255], 1).astype(np.uint8)
    photo = image.convert("RGB").quantize(
        colors=256 - len(reserved), method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
    )
    palette = np.asarray(photo.getpalette()[: 3 * (256 - len(reserved))], np.uint8).reshape(-1, 3)
    full = np.concatenate([palette, reserved]) if len(reserved) else palette
    index = np.asarray(photo, np.uint8).copy()
    if len(reserved):
        lookup = {int(c): len(palette) + i for i, c in enumerate(keep)}
        hit = np.isin(codes, keep)
        index.reshape(-1)[hit] = np.vectorize(lookup.get, otypes=[np.uint8])(codes[hit])
    out = Image.fromarray(index, "P")
    out.putpalette(full.reshape(-1).tolist() + [0] * (768 - full.size))
    return out


def write_gif(frames, path: Path, fps: float) -> None:
    """Looping GIF with one palette per frame that keeps the drawn colours (:func:`gif_frame`);
    ``frames`` may be any iterable (PIL holds the encoded frames, not the RGB ones). Note PIL
    merges identical consecutive frames into one longer frame."""
    frames = iter(frames)
    first = gif_frame(next(frames))
    first.save(
        path,
        save_all=True,
        append_images=(gif_frame(f) for f in frames),
        duration=int(round(1000 / fps)),
        loop=0,
        disposal=1,
        optimize=False,
    )


def write_video(frames: Sequence[Image.Image], out_path: PathLike, fps: float = 10) -> Path:
    """Write frames as ``.gif`` (PIL) or ``.mp4`` (PyAV) by the suffix; returns the path.

    All frames must share one size; MP4 frames are padded to even width/height.
    """
    path = Path(out_path)
    suffix = path.suffix.lower()
    if suffix not in WRITABLE_VIDEO_SUFFIXES:
        raise HyperfeatError(
            f"cannot write video {path}: suffix {path.suffix!r} is not one of {', '.join(WRITABLE_VIDEO_SUFFIXES)}"
        )
    images = [load_image(f) for f in frames]
    if not images:
        raise HyperfeatError(f"cannot write video {path}: no frames")
    if fps <= 0:
        raise HyperfeatError(f"fps must be positive; got {fps}")
    sizes = {im.size for im in images}
    if len(sizes) > 1:
        raise HyperfeatError(f"cannot write video {path}: frames differ in size {sorted(sizes)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    (write_gif if suffix == ".gif" else write_mp4)(images, path, fps)
    return path


def write_video_stream(frames: Iterable[Image.Image], out_path: PathLike, fps: float = 10) -> Path:
    """Like :func:`write_video`, but ``frames`` is consumed one at a time (an MP4 holds no frame
    longer than it takes to encode it) and the file appears only once it is complete: it is
    written beside ``out_path`` and renamed into place, so an error mid-stream (a frame of
    another size, a bad input) leaves nothing behind."""
    path = Path(out_path)
    suffix = path.suffix.lower()
    if suffix not in WRITABLE_VIDEO_SUFFIXES:
        raise HyperfeatError(
            f"cannot write video {path}: suffix {path.suffix!r} is not one of {', '.join(WRITABLE_VIDEO_SUFFIXES)}"
        )
    if fps <= 0:
        raise HyperfeatError(f"fps must be positive; got {fps}")
    iterator = iter(frames)
    first = next(iterator, None)
    if first is None:
        raise HyperfeatError(f"cannot write video {path}: no frames")
    first = load_image(first)

    def checked():
        yield first
        for index, frame in enumerate(iterator, 1):
            image = load_image(frame)
            if image.size != first.size:
                raise HyperfeatError(f"cannot write video {path}: frame {index} is {image.size}, frame 0 {first.size}")
            yield image

    def write(tmp: str) -> None:
        target = Path(tmp).with_suffix(suffix)
        try:
            if suffix == ".gif":
                write_gif(checked(), target, fps)
            else:
                _write_mp4_stream(checked(), target, fps)
            os.replace(target, tmp)
        finally:
            target.unlink(missing_ok=True)

    atomic_write(path, write)
    return path


def _write_mp4_stream(frames: Iterable[Image.Image], path: Path, fps: float) -> None:
    import av

    codec = pick_mp4_codec()
    with av.open(str(path), mode="w") as container:
        stream = None
        for frame in frames:
            frame = even_size(frame)
            if stream is None:
                stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
                stream.width, stream.height = frame.size
                stream.pix_fmt = "yuv420p"
                if codec == "mpeg4":
                    stream.bit_rate = 8_000_000
                else:
                    stream.options = {"crf": "18"}
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.asarray(frame), format="rgb24")))
        container.mux(stream.encode())  # flush
