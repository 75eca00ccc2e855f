"""Long videos: lazy frame reading, chunked describing into a store (memory or disk), the bad
inputs of a stream, and the online tracker agreeing with the offline one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hyperfeat.config import load_config
from hyperfeat.describe.patches import PatchDescriber
from hyperfeat.errors import DataError
from hyperfeat.video.frames import frame_describer
from hyperfeat.video.online import Tracker
from hyperfeat.video.run import describe_store, frame_stream, track_video
from hyperfeat.video.store import compute_descriptors
from hyperfeat.video.stream import FrameStream, describe_stream


def patch_describer(*overrides: str) -> PatchDescriber:
    return PatchDescriber(
        load_config(overrides=["backbone=tiny", "features.load_size=64", "video.frame_size=null", *overrides]),
        stride=4,
        dim=16,
    )


def moving_scene(num_frames: int = 8, size=(72, 56), velocity=(3, 1), seed: int = 0) -> np.ndarray:
    """(T, H, W, 3) uint8: a random colour texture translated by ``velocity`` px per frame."""
    rng = np.random.default_rng(seed)
    big = rng.integers(0, 256, size=(size[1] + 64, size[0] + 64, 3), dtype=np.uint8)
    big = np.asarray(Image.fromarray(big).resize((big.shape[1] // 4, big.shape[0] // 4)).resize(big.shape[1::-1]))
    return np.stack(
        [
            big[t * velocity[1] : t * velocity[1] + size[1], t * velocity[0] : t * velocity[0] + size[0]]
            for t in range(num_frames)
        ]
    )


def write_frames(folder, frames: np.ndarray):
    folder.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{t:05d}.png")
    return folder


def test_chunked_describing_equals_describing_at_once(tmp_path):
    describer = patch_describer("video.batch_size=3", "video.store_dtype=float32")
    frames = moving_scene(7)
    folder = write_frames(tmp_path / "clip", frames)
    tensor = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    whole = compute_descriptors(tensor, frame_describer(describer), batch_size=len(tensor), progress=False)
    store = describe_store(describer, frame_stream(describer, folder), progress=False)
    assert store.shape == tuple(whole.shape)
    torch.testing.assert_close(store.tensor(), whole, atol=1e-5, rtol=1e-5)
    # fp16 on the CPU, and a memory-mapped file on disk once the store passes its memory bound
    half = describe_store(patch_describer("video.batch_size=2"), frame_stream(describer, folder), progress=False)
    assert half.dtype == "float16" and half.path is None
    torch.testing.assert_close(half.tensor(), whole, atol=2e-3, rtol=2e-3)
    disk = describe_store(
        patch_describer("video.batch_size=4", "video.store_max_memory_mb=0"),
        frame_stream(describer, folder),
        progress=False,
    )
    assert disk.path is not None and disk.path.is_file() and disk._data is None  # read through the memory map
    torch.testing.assert_close(disk.tensor(), half.tensor())
    disk.path.unlink()


def test_store_in_cache_dir_is_reused_and_never_half_written(tmp_path):
    folder = write_frames(tmp_path / "clip", moving_scene(5))
    cache = tmp_path / "cache"
    describer = patch_describer(f"video.cache_dir={cache}")
    first = describe_store(describer, frame_stream(describer, folder), progress=False)
    files = list(cache.glob("*.npy"))
    assert len(files) == 1 and first.path == files[0]
    calls = []
    describer.describe_batch = lambda batch: calls.append(batch) or torch.zeros(len(batch), 19, 16, 16)
    again = describe_store(describer, frame_stream(describer, folder), progress=False)
    assert not calls and torch.equal(again.tensor(), first.tensor())

    def failing(chunks):  # the describer fails on the third frame: no store file appears
        for t, frame in enumerate(chunks):
            if t == 2:
                raise RuntimeError("boom")
            yield frame

    with pytest.raises(RuntimeError):
        describe_stream(
            failing(iter(FrameStream(folder))),
            frame_describer(patch_describer()),
            5,
            1,
            path=tmp_path / "half.npy",
            progress=False,
        )
    assert list(tmp_path.glob("half*")) == []


def test_stream_bad_input(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty video"):
        FrameStream(tmp_path / "empty")
    with pytest.raises(DataError, match="T = 0"):
        FrameStream(torch.zeros(0, 3, 8, 8))
    frames = moving_scene(4)
    folder = write_frames(tmp_path / "mixed", frames)
    Image.fromarray(frames[0][:40]).save(folder / "00002.png")  # frame 2 changes size
    stream = FrameStream(folder)
    with pytest.raises(DataError, match=r"00002.png has size \(72, 40\).*one size"):
        list(stream)
    describer = patch_describer()
    tracker = Tracker(describer, [[0, 10, 10]])
    tracker.step(torch.rand(3, 56, 72))
    with pytest.raises(DataError, match="stream started with"):
        tracker.step(torch.rand(3, 40, 72))


def test_online_equals_offline_on_shared_frames():
    describer = patch_describer()
    frames = moving_scene(8)
    queries = torch.tensor([[0.0, 45.0, 25.0], [0.0, 40.0, 30.0], [3.0, 30.0, 20.0], [3.0, 50.5, 10.25]])
    tensor = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    offline = track_video(describer, tensor, queries, progress=False)
    tracker = Tracker(describer, queries)
    for t, frame in enumerate(frames):  # (H, W, 3) uint8 arrays, as from a camera
        xy, visible, confidence = tracker.step(frame)
        started = queries[:, 0] <= t
        torch.testing.assert_close(xy[started], offline.tracks[started, t], atol=1e-4, rtol=0)
        assert torch.equal(visible[started], offline.visible[started, t])
        torch.testing.assert_close(confidence[started], offline.confidence[started, t], atol=1e-5, rtol=0)
        assert torch.isnan(xy[~started]).all() and not visible[~started].any()
    # a query added late, within the window, catches up to the present frame
    tracker.add_queries([[5, 30.0, 20.0]])
    assert tracker.queries.shape[0] == 5 and not tracker.pending
    with pytest.raises(DataError, match="older than the window"):
        Tracker(describer, window=2).add_queries([[0, 1, 1]]) or _window_too_old(describer, frames)


def _window_too_old(describer, frames):
    tracker = Tracker(describer, window=2)
    for frame in frames[:4]:
        tracker.step(frame)
    tracker.add_queries([[0, 10, 10]])


def test_tracking_rejects_a_query_outside_the_frame_and_descriptors_of_another_video():
    describer = patch_describer()
    frames = moving_scene(4)  # 72×56
    tensor = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255  # (T, 3, H, W)
    with pytest.raises(DataError, match=r"\(5000.0, 5000.0\) is outside the 72×56 frame"):
        Tracker(describer, [[0, 5000, 5000]]).step(frames[0])  # the frame size is known at the first frame
    with pytest.raises(DataError, match=r"query 0 at \(x, y\)=\(5000, 5000\) is outside the frame"):
        track_video(describer, tensor, [[0, 5000, 5000]], progress=False)
    with pytest.raises(DataError, match="descriptors of 3 frames do not fit a video of 4 frames"):
        track_video(describer, tensor, [[0, 5, 5]], descriptors=torch.rand(3, 8, 7, 9), progress=False)
