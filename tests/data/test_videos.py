"""The video data sets on the shared real data: DAVIS-2017, JHMDB and TAP-Vid-DAVIS."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

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
from hyperfeat.errors import DataError
from tests.helpers import data_dir

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


def test_a_davis_sequence_missing_masks_names_the_files(tmp_path):
    from types import SimpleNamespace

    from PIL import Image

    from hyperfeat.eval.davis import evaluate_davis
    from hyperfeat.viz.masks import palette_mask

    root = tmp_path / "davis"
    frames, masks = root / "JPEGImages" / "480p" / "cut", root / "Annotations" / "480p" / "cut"
    frames.mkdir(parents=True)
    masks.mkdir(parents=True)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("cut\n")
    for t in range(4):
        Image.new("RGB", (24, 16), (40 * t, 90, 120)).save(frames / f"{t:05d}.jpg")
    mask = np.zeros((16, 24), np.int64)
    mask[4:10, 6:14] = 1
    for t in (0, 1):  # frames 2 and 3 lost their annotations
        palette_mask(mask).save(masks / f"{t:05d}.png")
    with pytest.warns(UserWarning, match=r"'cut': 2 of 4 annotation files are missing \(e\.g\. .*00002\.png\)"):
        seq = DavisDataset(root, "val").load("cut")
    assert seq.masks.shape[0] == 1 and [p.name for p in seq.missing_masks] == ["00002.png", "00003.png"]
    cfg = load_config(overrides=["data=davis", f"data.root={root}"])
    with (
        pytest.warns(UserWarning, match="00002.png"),
        pytest.raises(
            DataError,
            match=r"skipped: \['cut \(ground truth only for frame 0: 2 of 4 annotation files "
            r"missing, e\.g\. .*00002\.png\)'\]",
        ),
    ):
        evaluate_davis(SimpleNamespace(cfg=cfg), progress=False)  # fails before any description


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
