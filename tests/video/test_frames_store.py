"""Video readers and the per-video descriptor store: frame folders and video files, descriptors
in batches with the disk cache."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from hyperfeat.errors import DataError, HyperfeatError
from hyperfeat.geometry import rescale_points
from hyperfeat.video.frames import read_video, resize_frames
from hyperfeat.video.store import compute_descriptors, describe_video


def _frames_uint8(count: int, height: int = 30, width: int = 40) -> list[np.ndarray]:
    """Frames whose red channel encodes the frame index (10·t), to check order."""
    frames = []
    for t in range(count):
        array = np.zeros((height, width, 3), dtype=np.uint8)
        array[..., 0] = 10 * t
        array[..., 1] = np.linspace(0, 255, width, dtype=np.uint8)[None]
        frames.append(array)
    return frames


def _write_folder(folder, count: int, suffix: str = ".png"):
    folder.mkdir(parents=True, exist_ok=True)
    for t, array in enumerate(_frames_uint8(count)):
        Image.fromarray(array).save(folder / f"{t:05d}{suffix}")
    return folder


class CountingDescribe:
    """A stand-in descriptor model that records the batch sizes it was called with."""

    def __init__(self):
        self.calls: list[int] = []

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        self.calls.append(int(frames.shape[0]))
        return torch.nn.functional.avg_pool2d(frames, 2) * 2 - 1  # (B, 3, H/2, W/2)


# ---------------------------------------------------------------------------------------------
# readers


def test_read_folder_sorted_and_resized(tmp_path):
    folder = _write_folder(tmp_path / "clip", 5)
    (folder / "notes.txt").write_text("not a frame")
    video = read_video(folder, frame_size=80)
    assert video.frames.shape == (5, 3, 60, 80) and video.frames.dtype == torch.float32
    assert video.original_size == (40, 30) and video.size == (80, 60) and video.scale == pytest.approx(2.0)
    assert [p.name for p in video.files] == [f"{t:05d}.png" for t in range(5)]
    red = video.frames[:, 0].mean(dim=(1, 2)) * 255
    assert torch.allclose(red, torch.arange(5) * 10.0, atol=1.0)  # sorted order
    assert len(read_video(folder, max_frames=2)) == 2
    assert read_video(folder).frames.shape == (5, 3, 30, 40)
    unpadded = tmp_path / "unpadded"
    unpadded.mkdir()
    for t, array in enumerate(_frames_uint8(12)):
        Image.fromarray(array).save(unpadded / f"frame{t}.png")
    red = read_video(unpadded).frames[:, 0].mean(dim=(1, 2)) * 255
    assert torch.allclose(red, torch.arange(12) * 10.0, atol=1.0)  # frame2 before frame10


def _write_mp4(path, frames, **options: str):
    """(H, W, 3) uint8 arrays as an mpeg4 file at 10 fps; ``options``: the muxer's (e.g. movflags)."""
    import av

    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_read_video_files(tmp_path):
    frames = _frames_uint8(6, 32, 48)
    path = _write_mp4(tmp_path / "clip.mp4", frames)
    video = read_video(path, frame_size=24)
    assert video.frames.shape == (6, 3, 16, 24) and video.original_size == (48, 32)
    assert video.scale == pytest.approx(0.5) and video.files == [path]

    gif = tmp_path / "clip.gif"
    images = [Image.fromarray(a) for a in frames[:4]]
    images[0].save(gif, save_all=True, append_images=images[1:], duration=100, loop=0)
    assert read_video(gif).frames.shape == (4, 3, 32, 48)


def test_reader_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty video"):
        read_video(empty)
    with pytest.raises(DataError, match="not found"):
        read_video(tmp_path / "missing")
    folder = _write_folder(tmp_path / "broken", 3, ".jpg")
    (folder / "00001.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(HyperfeatError, match="00001.jpg"):
        read_video(folder)
    odd = _write_folder(tmp_path / "odd", 2)
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(odd / "00002.png")
    with pytest.raises(DataError, match="00002.png.*size"):
        read_video(odd)
    bad_video = tmp_path / "bad.mp4"
    bad_video.write_bytes(b"\x00" * 64)
    with pytest.raises(DataError, match="bad.mp4"):
        read_video(bad_video)


def test_cut_video_files_are_never_silently_short(tmp_path):
    """A GIF cut short decodes without error to its first frames: both readers warn, naming the file
    and the frames read; the whole GIF reads without a warning. An mp4 cut short (its index first,
    so it opens and declares 12 frames) warns with the count it reached."""
    from hyperfeat.video.stream import FrameStream

    frames = _frames_uint8(12, 32, 48)
    gif = tmp_path / "clip.gif"
    images = [Image.fromarray(a) for a in frames]
    images[0].save(gif, save_all=True, append_images=images[1:], duration=100, loop=0)
    cut = tmp_path / "cut.gif"
    cut.write_bytes(gif.read_bytes()[: gif.stat().st_size * 2 // 3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_video(gif).frames.shape[0] == 12
        assert len(list(FrameStream(gif))) == 12
        assert read_video(gif, max_frames=5).frames.shape[0] == 5  # cut by request: no warning
    with pytest.warns(UserWarning, match=r"cut\.gif ends without its trailer.*first (\d+) frames") as caught:
        read = read_video(cut).frames.shape[0]
    assert 0 < read < 12 and f"first {read} frames" in str(caught[0].message)
    with pytest.warns(UserWarning, match=r"cut\.gif"):
        assert len(list(FrameStream(cut))) == read

    noise = np.random.default_rng(0).integers(0, 255, (12, 32, 48, 3), dtype=np.uint8)  # large packets
    movie = _write_mp4(tmp_path / "clip.mp4", list(noise), movflags="faststart")  # the index first
    short = tmp_path / "short.mp4"
    short.write_bytes(movie.read_bytes()[: movie.stat().st_size * 2 // 3])
    assert read_video(movie).frames.shape[0] == 12
    with pytest.warns(UserWarning, match=r"short\.mp4 ended after (\d+) of the 12 frames it declares"):
        assert read_video(short).frames.shape[0] < 12


def test_resize_and_rescale_points():
    frames = torch.rand(2, 3, 48, 64)
    resized, scale = resize_frames(frames, 32)
    assert resized.shape == (2, 3, 24, 32) and scale == pytest.approx(0.5)
    assert resize_frames(frames, None)[0] is frames
    points = torch.tensor([[10.0, 20.0]])
    assert torch.allclose(rescale_points(points, (64, 48), (32, 24)), torch.tensor([[5.0, 10.0]]))


# ---------------------------------------------------------------------------------------------
# descriptors and the cache


def test_descriptors_in_batches(tmp_path):
    video = read_video(_write_folder(tmp_path / "clip", 5))
    describe = CountingDescribe()
    desc = describe_video(video, describe, batch_size=2, progress=False)
    assert desc.shape == (5, 3, 15, 20)
    assert describe.calls == [2, 2, 1]
    with pytest.raises(DataError, match="empty video"):
        compute_descriptors(torch.zeros(0, 3, 8, 8), describe)
    with pytest.raises(DataError, match=r"\(B, D, h, w\)"):
        compute_descriptors(video.frames, lambda x: x.mean(1), progress=False)


def test_descriptor_cache_hit_miss_and_corruption(tmp_path):
    folder = _write_folder(tmp_path / "clip", 4)
    cache = tmp_path / "cache"
    video = read_video(folder)
    first = CountingDescribe()
    desc = describe_video(video, first, batch_size=3, cache_dir=cache, key="model-a", progress=False)
    files = list(cache.glob("*.pt"))
    assert len(files) == 1 and first.calls == [3, 1]

    again = CountingDescribe()
    hit = describe_video(read_video(folder), again, batch_size=3, cache_dir=cache, key="model-a", progress=False)
    assert again.calls == [] and torch.equal(hit, desc)

    other = CountingDescribe()
    describe_video(video, other, cache_dir=cache, key="model-b", progress=False)  # another model
    assert other.calls and len(list(cache.glob("*.pt"))) == 2

    files[0].write_bytes(b"garbage")  # corrupt entry: warn, recompute, rewrite
    fixed = CountingDescribe()
    with pytest.warns(UserWarning, match="unreadable"):
        redone = describe_video(video, fixed, batch_size=3, cache_dir=cache, key="model-a", progress=False)
    assert fixed.calls == [3, 1] and torch.equal(redone, desc)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        describe_video(video, CountingDescribe(), batch_size=3, cache_dir=cache, key="model-a", progress=False)

    # a changed frame file is another entry
    Image.fromarray(np.full((30, 40, 3), 200, np.uint8)).save(folder / "00002.png")
    changed = CountingDescribe()
    describe_video(read_video(folder), changed, cache_dir=cache, key="model-a", progress=False)
    assert changed.calls
