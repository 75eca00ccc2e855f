"""Temporal training data: tracked frame pairs give exact correspondences (occluded points left
out), the video folder lists videos and fails clearly, clips go through the feature cache."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from hyperfeat.data.videos.temporal import (
    FrameClips,
    TrackPairs,
    VideoFolder,
    build_temporal_dataset,
    collate_clips,
)
from hyperfeat.errors import DataError
from tests.helpers import data_dir, translated_video, write_frames


@dataclass
class HandClip:
    name: str
    frames: np.ndarray
    points: np.ndarray
    occluded: np.ndarray


def hand_clip(num_frames: int = 6) -> HandClip:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (num_frames, 40, 64, 3), dtype=np.uint8)  # (T, H, W, 3): W=64, H=40
    start = np.array([[5.0, 5.0], [30.0, 20.0], [60.0, 35.0]])
    points = start[:, None, :] + np.arange(num_frames)[None, :, None] * np.array([1.0, 0.5])  # (3, T, 2)
    occluded = np.zeros((3, num_frames), bool)
    occluded[1, 2:4] = True  # point 1 hidden in frames 2 and 3
    points[2, 4:] = [70.0, 35.0]  # point 2 leaves the frame at t = 4 (x > W - 0.5)
    return HandClip("hand", frames, points, occluded)


def test_track_pairs_carry_the_exact_tracks_and_leave_occluded_points_out():
    clip = hand_clip()
    pairs = TrackPairs([clip], load_size=128, pairs_per_clip=40, max_delta=3, seed=1)
    seen_gaps = set()
    for index in range(len(pairs)):
        _, t, u = pairs.frames_of(index)
        item = pairs[index]
        assert 1 <= u - t <= 3
        seen_gaps.add(u - t)
        scale = np.array([128 / 64, 128 / 40])
        np.testing.assert_allclose(item["source_points"].numpy(), clip.points[:, t] * scale, rtol=1e-6)
        np.testing.assert_allclose(item["target_points"].numpy(), clip.points[:, u] * scale, rtol=1e-6)
        np.testing.assert_allclose(item["target_points_orig"].numpy(), clip.points[:, u], rtol=1e-6)
        want = [True, not (clip.occluded[1, t] or clip.occluded[1, u]), t < 4 and u < 4]
        assert item["valid"].tolist() == want
        expected = torch.from_numpy(clip.frames[u]).permute(2, 0, 1).float()
        assert item["target_image"].shape == (3, 128, 128)
        assert item["source_size"] == (64, 40)
        assert abs(float(item["target_image"].mean()) - float(expected.mean() / 127.5 - 1)) < 0.05
    assert seen_gaps == {1, 2, 3}
    again = TrackPairs([clip], load_size=128, pairs_per_clip=40, max_delta=3, seed=1)
    assert all(pairs.frames_of(i) == again.frames_of(i) for i in range(len(pairs)))  # same item every read


def test_davis_tracks_pairs_match_the_synthetic_clips_and_split_sequences(tmp_path):
    from hyperfeat.config import load_config
    from hyperfeat.data.videos.temporal import davis_track_clips

    root = data_dir("davis2017")
    cfg = load_config(
        overrides=[
            "experiment=video_supervised",
            f"data.root={root}",
            "data.num_clips=1",
            "data.num_frames=6",
            "data.size=[128,96]",
            "data.num_points=16",
            "data.pairs_per_clip=4",
            "data.max_delta=4",
        ]
    )
    train = build_temporal_dataset(cfg.data, "train", 128)
    clip = davis_track_clips(cfg.data, "train")[0]  # built again from the config: the same clip
    _, t, u = train.frames_of(2)
    item = train[2]
    k = int(torch.nonzero(item["valid"])[0])
    np.testing.assert_allclose(item["target_points_orig"][k].numpy(), clip.points[k, u])
    np.testing.assert_allclose(item["source_points"][k].numpy(), clip.points[k, t] * np.array([1.0, 128 / 96]))
    assert item["valid"].tolist() == list(~clip.occluded[:, t] & ~clip.occluded[:, u])
    held = build_temporal_dataset(cfg.data, "val", 128)
    train_seqs = {s for c in train.clips for s in c.name.split("+")}
    held_seqs = {s for c in held.clips for s in c.name.split("+")}
    assert train_seqs and held_seqs and not train_seqs & held_seqs


def test_video_folder_lists_videos_and_reads_clips(tmp_path):
    from hyperfeat.io import write_video
    from tests.helpers import as_pil

    root = tmp_path / "videos"
    write_frames(translated_video(steps=5), root / "frames_video")
    write_video(as_pil(translated_video(steps=6)), root / "clip.mp4", fps=5)
    (root / "notes.txt").write_text("not a video")
    folder = VideoFolder(root)
    assert folder.names == ["clip.mp4", "frames_video"]
    assert folder.load("frames_video").shape == (5, 112, 192, 3)
    clips = FrameClips(folder, load_size=64, clip_length=3, max_stride=2, clips_per_video=3)
    assert len(clips) == 6
    item = clips[4]
    assert item["frame_images"].shape == (3, 3, 64, 64) and item["video"] == "frames_video"
    gaps = np.diff(item["frame_indices"].numpy())
    assert len(set(gaps)) == 1 and 1 <= gaps[0] <= 2
    batch = collate_clips([clips[0], clips[1]])
    assert batch["frame_images"].shape == (2, 3, 3, 64, 64) and batch["video"] == ["clip.mp4", "clip.mp4"]


def test_video_folder_errors_name_the_path(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=f"no videos in {empty}"):
        VideoFolder(empty)
    with pytest.raises(DataError, match="video folder not found"):
        VideoFolder(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.mp4").write_bytes(b"\x00garbage, not an mp4")
    folder = VideoFolder(bad)
    with pytest.raises(DataError, match="broken.mp4") as err:
        folder.load("broken.mp4")
    assert "\n" not in str(err.value)
    write_frames(translated_video(steps=2), tmp_path / "short" / "two")
    clips = FrameClips(VideoFolder(tmp_path / "short"), load_size=32, clip_length=3)
    with pytest.raises(DataError, match=r"video .*two: a clip of 2 frames is too short for 3 frames"):
        clips[0]


def test_cached_clips_hold_the_extractor_maps(parts, tmp_path):
    from hyperfeat.config import load_config
    from hyperfeat.model.features import FeatureExtractor
    from hyperfeat.train.cache import CachedPairDataset, FeatureCache
    from tests.helpers import ONE_STEP_OVERRIDES

    cfg = load_config(overrides=ONE_STEP_OVERRIDES + ["train.cache_dtype=float32"])
    extractor = FeatureExtractor(parts[1], cfg.features)
    write_frames(translated_video(steps=4), tmp_path / "v" / "a")
    clips = FrameClips(
        VideoFolder(tmp_path / "v"), int(cfg.features.load_size), clip_length=2, max_stride=1, clips_per_video=3
    )
    cache = FeatureCache(tmp_path / "cache", cfg)
    cached = CachedPairDataset(clips, cache, extractor)
    stats = cached.precompute(progress=False)
    distinct = {int(t) for i in range(len(clips)) for t in clips[i]["frame_indices"]}
    assert stats.misses == len(distinct)  # each frame once, though clips share frames
    item = cached[1]
    assert "frame_images" not in item
    with torch.no_grad():
        want = extractor.run(clips[1]["frame_images"])  # (K, S, C, R, R)
    torch.testing.assert_close(item["frame_raw"].float(), want, rtol=1e-5, atol=1e-5)
