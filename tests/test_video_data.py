"""Video readers and the video data sets: frame folders and video files, descriptors in
batches with the disk cache, DAVIS-2017, JHMDB and TAP-Vid-DAVIS on the shared real data."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch
from conftest import data_dir
from PIL import Image

from hyperfeat.config import load_config
from hyperfeat.data.videos.davis import (
    DAVIS_MERGED_SEQUENCES,
    DavisDataset,
    davis_from_config,
    merge_objects,
    read_mask,
)
from hyperfeat.data.videos.jhmdb import (
    NUM_JOINTS,
    JhmdbDataset,
    box_sizes,
    jhmdb_from_config,
    read_joints,
)
from hyperfeat.data.videos.tapvid import TapVidDavis, sample_queries, tapvid_from_config
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


def test_read_video_files(tmp_path):
    import av

    frames = _frames_uint8(6, 32, 48)
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
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


# ---------------------------------------------------------------------------------------------
# DAVIS-2017


def test_davis_sequences_frames_and_masks():
    root = data_dir("davis2017")
    davis = DavisDataset(root, "val")
    assert len(davis) == 30 and "bike-packing" in davis.sequences
    total = 0
    for name in davis.sequences:
        frames, masks = davis.frame_paths(name), davis.mask_paths(name)
        assert len(frames) == len(masks) and all(p.is_file() for p in masks)
        total += len(frames)
    assert total == 1999

    short = DavisDataset(root, "val", sequences=["bike-packing"], max_frames=3)
    seq = short.load("bike-packing", frame_size=256)
    assert seq.frames.shape == (3, 3, 135, 256) and seq.size == (256, 135)
    assert seq.original_size == (910, 480)
    assert seq.masks.shape == (3, 480, 910) and seq.masks.dtype == torch.int64
    assert seq.object_ids == [1, 2] and set(seq.masks.unique().tolist()) == {0, 1, 2}
    assert seq.multi_object_exact
    assert torch.equal(read_mask(short.mask_paths("bike-packing")[0]), seq.masks[0])
    fg = short.load("bike-packing", foreground=True)
    assert fg.object_ids == [1] and torch.equal(fg.masks, merge_objects(seq.masks))


def test_davis_caveat_list():
    root = data_dir("davis2017")
    davis = DavisDataset(root, "val")
    assert len(DAVIS_MERGED_SEQUENCES) == 7 and DAVIS_MERGED_SEQUENCES <= set(davis.sequences)
    exact = [s for s in davis.sequences if s not in DAVIS_MERGED_SEQUENCES]
    assert len(exact) == 23
    soapbox = DavisDataset(root, "val", sequences=["soapbox"], max_frames=1)[0]
    assert soapbox.object_ids == [1] and not soapbox.multi_object_exact


def test_davis_errors_and_config(tmp_path):
    root = data_dir("davis2017")
    with pytest.raises(DataError, match="not-a-sequence"):
        DavisDataset(root, "val", sequences=["not-a-sequence"])
    with pytest.raises(DataError, match="test-dev.txt"):
        DavisDataset(root, "test-dev")
    with pytest.raises(DataError, match="DAVIS root not found"):
        DavisDataset(tmp_path / "nothing")
    cfg = load_config(overrides=["data=davis", "data.sequences=[judo]", "data.max_frames=2"])
    assert cfg.data.name == "davis" and cfg.data.max_pairs is None
    dataset = davis_from_config(cfg.data)
    assert dataset.sequences == ["judo"] and len(dataset[0]) == 2


# ---------------------------------------------------------------------------------------------
# JHMDB


def test_jhmdb_clip_joints_and_boxes():
    root = data_dir("jhmdb")
    jhmdb = JhmdbDataset(root)
    assert len(jhmdb) == 1 and jhmdb.clips[0].startswith("catch/")
    clip = jhmdb[0]
    assert clip.frames.shape == (40, 3, 240, 320) and clip.original_size == (320, 240)
    assert clip.joints.shape == (40, NUM_JOINTS, 2) and clip.boxes.shape == (40, 4)
    raw = read_joints(root / "joint_positions" / clip.name / "joint_positions.mat", one_based=False)
    assert torch.allclose(clip.joints, raw - 1)  # 1-based MATLAB pixels → 0-based
    assert clip.in_frame.shape == (40, NUM_JOINTS) and clip.in_frame.float().mean() > 0.9
    assert (clip.boxes[:, 2:] >= clip.boxes[:, :2]).all() and (box_sizes(clip.boxes) > 10).all()
    resized = jhmdb.load(clip.name, frame_size=160)
    assert resized.frames.shape == (40, 3, 120, 160) and torch.equal(resized.joints, clip.joints)
    cfg = load_config(overrides=["data=jhmdb", "data.max_frames=5"])
    assert len(jhmdb_from_config(cfg.data)[0]) == 5


def test_jhmdb_errors(tmp_path):
    from scipy.io import savemat

    bad = tmp_path / "joint_positions.mat"
    savemat(bad, {"pos_world": np.zeros((2, 15, 3))})
    with pytest.raises(DataError, match="pos_img"):
        read_joints(bad)
    savemat(bad, {"pos_img": np.zeros((2, 14, 3))})
    with pytest.raises(DataError, match=r"\(2, 15, T\)"):
        read_joints(bad)
    with pytest.raises(DataError, match="Rename_Images"):
        JhmdbDataset(tmp_path)
    root = data_dir("jhmdb")
    with pytest.raises(DataError, match="splits"):
        JhmdbDataset(root, split="test1")


# ---------------------------------------------------------------------------------------------
# TAP-Vid-DAVIS


def test_tapvid_pickle_parsed_into_30_videos():
    root = data_dir("tapvid_davis")
    data_dir("davis2017")
    tapvid = TapVidDavis(root)
    assert len(tapvid) == 30 and tapvid.names[0] == "goat"
    strided_total = 0
    for name in tapvid.names:
        video = tapvid.load(name, frames=False)
        n = video.points.shape[0]
        assert video.points.shape == (n, 32, 2) and video.occluded.shape == (n, 32)
        assert video.frames is None and video.num_frames == 32
        width, height = video.size
        visible = ~video.occluded
        assert (video.points[visible][:, 0] <= width).all() and (video.points[visible][:, 1] <= height).all()
        strided_total += len(sample_queries(video.points, video.occluded, "strided"))
    assert strided_total == 3329  # the README's count: de-duplication lost or added no track

    bike = tapvid["bike-packing"]
    assert bike.frames.shape == (32, 480, 910, 3) and bike.frames.dtype == torch.uint8 and bike.size == (910, 480)
    assert len(TapVidDavis(root, sequences=["judo"], max_frames=8).load("judo").frames) == 8


def test_tapvid_query_modes_on_real_tracks():
    root = data_dir("tapvid_davis")
    video = TapVidDavis(root, sequences=["goat"]).load("goat", frames=False)
    raw = pickle.load(open(root / "tapvid_davis_data_strided_32.pkl", "rb"))["videos"][0]
    strided = sample_queries(video.points, video.occluded, "strided", stride=5)
    for t, group in raw["query_points"].items():  # the pickle's own strided queries
        mine = strided.queries[strided.queries[:, 0] == t][:, 1:]
        want = torch.tensor(np.asarray(group), dtype=torch.float32)
        assert mine.shape == want.shape
        assert torch.allclose(mine[torch.argsort(mine[:, 0])], want[torch.argsort(want[:, 0])])
    first = sample_queries(video.points, video.occluded, "first")
    assert len(first) == video.points.shape[0]
    points, occluded = first.targets(video.points, video.occluded)
    for q, (t, x, y) in enumerate(first.queries.tolist()):
        assert not occluded[q, int(t)] and occluded[q, : int(t)].all()
        assert points[q, int(t)].tolist() == pytest.approx([x, y])


def test_sample_queries_synthetic():
    points = torch.arange(3 * 12 * 2, dtype=torch.float32).view(3, 12, 2)
    occluded = torch.zeros(3, 12, dtype=torch.bool)
    occluded[0, :7] = True  # first visible at 7
    occluded[1, 5] = True
    occluded[2] = True  # never visible
    first = sample_queries(points, occluded, "first")
    assert first.track.tolist() == [0, 1] and first.queries[:, 0].tolist() == [7.0, 0.0]
    assert first.queries[0, 1:].tolist() == points[0, 7].tolist()
    strided = sample_queries(points, occluded, "strided", stride=5)
    assert [(int(t), int(n)) for t, n in zip(strided.queries[:, 0], strided.track)] == [(0, 1), (10, 0), (10, 1)]
    with pytest.raises(DataError, match="query mode"):
        sample_queries(points, occluded, "random")


def test_tapvid_official_layout_and_errors(tmp_path):
    video = np.zeros((4, 20, 30, 3), np.uint8)
    points = np.full((2, 4, 2), 0.5)
    data = {"clip": {"video": video, "points": points, "occluded": np.zeros((2, 4), bool)}}
    with open(tmp_path / "official.pkl", "wb") as handle:
        pickle.dump(data, handle)
    tapvid = TapVidDavis(tmp_path, pickle_name="official.pkl")
    clip = tapvid["clip"]
    assert clip.frames.shape == (4, 20, 30, 3) and clip.size == (30, 20)
    assert torch.allclose(clip.points[0, 0], torch.tensor([15.0, 10.0]))  # normalised → pixels

    with open(tmp_path / "odd.pkl", "wb") as handle:
        pickle.dump([1, 2, 3], handle)
    with pytest.raises(DataError, match="unknown TAP-Vid pickle layout"):
        TapVidDavis(tmp_path, pickle_name="odd.pkl")
    with pytest.raises(DataError, match="not found"):
        TapVidDavis(tmp_path, pickle_name="missing.pkl")


def test_tapvid_config():
    data_dir("tapvid_davis")
    data_dir("davis2017")
    cfg = load_config(overrides=["task=tapvid", "data.sequences=[judo]", "data.max_frames=4"])
    assert cfg.data.query_mode in ("first", "strided") and cfg.data.max_pairs is None
    dataset = tapvid_from_config(cfg.data)
    video = dataset[0]
    assert video.name == "judo" and video.frames.shape[0] == 4
