"""``Hyperfeatures.track / propagate / propagate_joints`` and the ``hyperfeat track`` /
``hyperfeat propagate`` commands, through a tiny checkpoint saved here.

The tiny random backbone's descriptors carry no correspondence (its tracks stay put: on the
scene below, mean error 10.0 px, the same as not moving at all: 9.9 px), so the motion test swaps
``describe_batch`` on the instance for a fixed random conv that sees what the backbone would,
(B, 3, L, L) in [-1, 1]; every other step (frame reading, resizing to L × L, pixel ↔ cell
mapping, the ``video.*`` settings) is the real pipeline. The commands run the real tiny
descriptors end to end.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import data_dir
from PIL import Image, ImageSequence

from hyperfeat.api import Hyperfeatures
from hyperfeat.cli import main
from hyperfeat.config import load_config
from hyperfeat.model.backbone import load_backbone
from hyperfeat.model.checkpoint import CheckpointMeta, build_network, save_checkpoint
from hyperfeat.model.features import FeatureExtractor
from hyperfeat.video.frames import frames_as_uint8
from hyperfeat.video.run import describe_frames, propagate, propagate_joints, track

BASE = ["backbone=tiny", "features.num_steps=1", "features.save_steps=[0]"]
VELOCITY = (4, 2)  # content motion, px per frame
STEPS = 5
CROP = (192, 112)  # (W, H) of the video


@pytest.fixture(scope="module")
def backbone():
    return load_backbone(load_config(overrides=BASE))


@pytest.fixture(scope="module")
def checkpoint(backbone, tmp_path_factory):
    cfg = load_config(overrides=BASE)
    extractor = FeatureExtractor(backbone, cfg.features)
    torch.manual_seed(0)
    network = build_network(cfg, extractor.channels)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    save_checkpoint(path, network, CheckpointMeta(cfg, extractor.channels, extractor.layers, list(cfg.features.save_steps)))
    return path


def load_hf(checkpoint, backbone, *overrides: str) -> Hyperfeatures:
    return Hyperfeatures.from_checkpoint(checkpoint, overrides=list(overrides), backbone=backbone)


def conv_stand_in(kernel: int = 17, stride: int = 4, dim: int = 64, seed: int = 0):
    """A fixed random conv: (B, 3, L, L) in [-1, 1] → (B, dim, L/stride, L/stride), mean-removed."""
    weight = torch.randn(dim, 3, kernel, kernel, generator=torch.Generator().manual_seed(seed)) / kernel

    def describe(batch: torch.Tensor) -> torch.Tensor:
        out = F.avg_pool2d(torch.tanh(F.conv2d(batch, weight, padding=kernel // 2)), stride)
        return out - out.mean(dim=(2, 3), keepdim=True)

    return describe


def scene(size=(320, 192), blobs: int = 60, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8: coloured discs on a dark, faintly textured background."""
    gen = np.random.default_rng(seed)
    width, height = size
    image = 25 + gen.integers(0, 20, (height, width, 3))
    yy, xx = np.mgrid[:height, :width]
    for _ in range(blobs):
        x, y, r = gen.integers(0, width), gen.integers(0, height), gen.integers(5, 16)
        image[(xx - x) ** 2 + (yy - y) ** 2 < r * r] = gen.integers(40, 256, 3)
    return image.astype(np.uint8)


def translated_video(steps: int = STEPS, velocity=VELOCITY, crop=CROP, origin=(60, 40)) -> torch.Tensor:
    """(T, 3, H, W) in [0, 1], exactly uint8 values: a ``crop`` window over :func:`scene` moving so
    that the content moves by ``velocity`` px per frame."""
    big = torch.from_numpy(scene()).permute(2, 0, 1).float() / 255.0
    (vx, vy), (w, h), (x0, y0) = velocity, crop, origin
    assert x0 - vx * (steps - 1) >= 0 and y0 - vy * (steps - 1) >= 0
    return torch.stack([big[:, y0 - vy * t : y0 - vy * t + h, x0 - vx * t : x0 - vx * t + w] for t in range(steps)])


def as_pil(frames: torch.Tensor) -> list[Image.Image]:
    return [Image.fromarray(f) for f in frames_as_uint8(frames)]


def write_frames(frames: torch.Tensor, folder) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for t, image in enumerate(as_pil(frames)):
        image.save(folder / f"{t:05d}.png")


def gif_frames(path) -> list[Image.Image]:
    with Image.open(path) as image:
        return [frame.convert("RGB") for frame in ImageSequence.Iterator(image)]


# ---------------------------------------------------------------------------------------------
# Python API


def test_track_follows_a_translation_and_equals_video_api(checkpoint, backbone, tmp_path):
    hf = load_hf(checkpoint, backbone, f"video.frame_size={max(CROP)}")  # the frames' own size
    hf.describe_batch = conv_stand_in()
    frames = translated_video()
    width, height = CROP
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(16, 2, generator=gen) * torch.tensor([width - 50.0, height - 40.0]) + torch.tensor([25.0, 20.0])
    t_query = torch.tensor([0.0] * 10 + [3.0] * 6)[:, None]  # forward and backward
    queries = torch.cat([t_query, xy], dim=1)

    tracks, visible = hf.track(frames, queries)
    assert tracks.shape == (16, STEPS, 2) and visible.shape == (16, STEPS) and visible.dtype == torch.bool
    times = torch.arange(STEPS, dtype=torch.float32)
    truth = xy[:, None] + (times[None, :, None] - t_query[:, :, None]) * torch.tensor(VELOCITY).float()
    error = (tracks - truth).norm(dim=-1)  # (N, T)
    still = (xy[:, None] - truth).norm(dim=-1)
    scored = times[None] != t_query
    assert torch.equal(tracks[torch.arange(16), t_query[:, 0].long()], xy)  # each query itself, exactly
    assert visible[torch.arange(16), t_query[:, 0].long()].all()
    # measured: median 1.6 px, mean 2.6 px, 95 % within 5 px (cells are 6 × 3.5 px), 94 % visible;
    # not moving: median 8.9 px, mean 9.9 px
    assert error[scored].median() < 3.0, error
    assert (error[scored] < 5.0).float().mean() > 0.8, error
    assert error[scored].mean() < 0.5 * still[scored].mean()
    assert visible.float().mean() > 0.6

    # a thin wrapper: exactly what video_api returns, from every kind of frame source
    ref_tracks, ref_visible = track(hf, frames, queries, progress=False)
    assert torch.equal(tracks, ref_tracks) and torch.equal(visible, ref_visible)
    write_frames(frames, tmp_path / "frames")
    for source in (as_pil(frames), sorted((tmp_path / "frames").glob("*.png")), tmp_path / "frames"):
        other_tracks, other_visible = hf.track(source, queries)  # read at frame_size = their size: no resize
        # a folder goes through the fp16 descriptor store: equal up to fp16 rounding
        torch.testing.assert_close(other_tracks, tracks, atol=0.05, rtol=0)
        assert (other_visible == visible).float().mean() >= 0.95


def test_propagate_wrappers_equal_video_api(checkpoint, backbone):
    hf = load_hf(checkpoint, backbone)
    hf.describe_batch = conv_stand_in()
    frames = translated_video(steps=3)
    desc = hf.describe_video(frames)
    assert desc.shape == (3, 64, 32, 32)
    assert torch.equal(desc, describe_frames(hf, frames, progress=False))
    first = torch.zeros(CROP[1], CROP[0], dtype=torch.long)
    first[30:70, 40:100], first[60:100, 120:170] = 1, 2
    masks = hf.propagate(frames, first, descriptors=desc)
    assert masks.shape == (3, CROP[1], CROP[0]) and torch.equal(masks[0], first)
    assert torch.equal(masks, propagate(hf, frames, first, progress=False))
    points = torch.tensor([[50.0, 40.0], [140.0, 80.0]])
    joints = hf.propagate_joints(frames, points, descriptors=desc)
    assert joints.shape == (3, 2, 2) and torch.equal(joints[0], points)
    assert torch.equal(joints, propagate_joints(hf, frames, points, progress=False))


# ---------------------------------------------------------------------------------------------
# commands (real tiny descriptors)


def test_track_command_writes_gif_mp4_and_json(checkpoint, tmp_path, capsys):
    frames = translated_video(steps=4)
    write_frames(frames, tmp_path / "frames")
    points = "0,40,30; 0,150,90; 3,100,56"
    # overrides before and after the options
    code = main(["track", str(tmp_path / "frames"), "video.frame_size=128", "--checkpoint", str(checkpoint),
                 "--points", points, "--out", str(tmp_path / "out" / "tracks.gif"), "video.batch_size=2"])
    assert code == 0
    assert "wrote" in capsys.readouterr().out
    pictures = gif_frames(tmp_path / "out" / "tracks.gif")
    assert len(pictures) == 4 and pictures[0].size == (128, 75)  # the frames as read: longer side 128
    record = json.loads((tmp_path / "out" / "tracks.gif.json").read_text())
    assert record["num_frames"] == 4 and record["frame_size_wh"] == list(CROP)
    assert record["queries"] == [[0, 40, 30], [0, 150, 90], [3, 100, 56]]
    tracks, visible = torch.tensor(record["tracks"]), torch.tensor(record["visible"])
    assert tracks.shape == (3, 4, 2) and visible.shape == (3, 4)
    assert torch.equal(tracks[[0, 1, 2], [0, 0, 3]], torch.tensor([[40.0, 30], [150, 90], [100, 56]]))
    assert (tracks >= -0.5).all() and (tracks[..., 0] <= CROP[0] - 0.5).all() and (tracks[..., 1] <= CROP[1] - 0.5).all()

    pytest.importorskip("av")
    from hyperfeat.video.frames import read_video

    code = main(["track", str(tmp_path / "frames"), "--checkpoint", str(checkpoint), "--points", points,
                 "--out", str(tmp_path / "out" / "tracks.mp4"), "video.frame_size=128", "--tail-length", "2"])
    assert code == 0
    video = read_video(tmp_path / "out" / "tracks.mp4")
    assert len(video) == 4 and video.original_size == (128, 76)  # padded to even for yuv420p


def test_propagate_command_on_davis_frames(checkpoint, tmp_path):
    root = data_dir("davis2017")
    sequence = "bike-packing"  # two objects
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    for t in range(4):
        (frames_dir / f"{t:05d}.jpg").write_bytes((root / "JPEGImages" / "480p" / sequence / f"{t:05d}.jpg").read_bytes())
    first_png = root / "Annotations" / "480p" / sequence / "00000.png"
    out = tmp_path / "masks"
    code = main(["propagate", str(frames_dir), "--checkpoint", str(checkpoint), "--mask", str(first_png),
                 "--out", str(out), "video.frame_size=128"])
    assert code == 0
    files = sorted(out.glob("*.png"))
    assert [f.name for f in files] == [f"{t:05d}.png" for t in range(4)]
    with Image.open(first_png) as image:
        first_ids, size, palette = np.array(image), image.size, image.getpalette()[: 3 * 3]
    ids = set(np.unique(first_ids).tolist())
    assert ids == {0, 1, 2}
    for t, path in enumerate(files):
        with Image.open(path) as image:
            assert image.mode == "P" and image.size == size
            assert image.getpalette()[: 3 * 3] == palette  # the DAVIS colours of ids 0, 1, 2
            got = np.array(image)
        assert set(np.unique(got).tolist()) <= ids
        if t == 0:
            assert np.array_equal(got, first_ids)

    pytest.importorskip("av")
    from hyperfeat.video.frames import read_video

    overlay = read_video(out / "overlay.mp4")
    height = round(size[1] * 128 / size[0])  # the frames as read: longer side 128
    assert len(overlay) == 4 and overlay.original_size == (128, height + height % 2)


# ---------------------------------------------------------------------------------------------
# errors through main(argv): non-zero code, a message naming the bad value, no traceback


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def test_command_errors_name_the_bad_value(checkpoint, tmp_path, capsys):
    frames = translated_video(steps=3)
    write_frames(frames, tmp_path / "frames")
    (tmp_path / "empty").mkdir()
    ckpt = ["--checkpoint", checkpoint]
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((50, 80), np.uint8), mode="P").save(small)

    code, err = run_cli(capsys, "track", tmp_path / "nowhere.mp4", *ckpt, "--points", "0,1,1", "--out", tmp_path / "o.gif")
    assert code != 0 and "video not found" in err and "nowhere.mp4" in err
    code, err = run_cli(capsys, "track", tmp_path / "empty", *ckpt, "--points", "0,1,1", "--out", tmp_path / "o.gif")
    assert code != 0 and "empty video" in err and "empty" in err
    code, err = run_cli(capsys, "propagate", tmp_path / "empty", *ckpt, "--mask", small, "--out", tmp_path / "o")
    assert code != 0 and "empty video" in err
    code, err = run_cli(capsys, "track", tmp_path / "frames", *ckpt, "--points", "0,10,10;0,250,20",
                        "--out", tmp_path / "o.gif", "video.frame_size=128")
    assert code != 0 and "query 1" in err and "(250, 20)" in err and "outside the frame" in err
    code, err = run_cli(capsys, "track", tmp_path / "frames", *ckpt, "--points", "5,10,10",
                        "--out", tmp_path / "o.gif", "video.frame_size=128")
    assert code != 0 and "t=5" in err and "past the video" in err and "[0, 2]" in err
    code, err = run_cli(capsys, "track", tmp_path / "frames", *ckpt, "--points", "10,20", "--out", tmp_path / "o.gif")
    assert code != 0 and "'10,20'" in err
    code, err = run_cli(capsys, "propagate", tmp_path / "frames", *ckpt, "--mask", small, "--out", tmp_path / "o",
                        "video.frame_size=128")
    assert code != 0 and "80×50" in err and f"{CROP[0]}×{CROP[1]}" in err
    code, err = run_cli(capsys, "propagate", tmp_path / "frames", *ckpt, "--mask", tmp_path / "nomask.png",
                        "--out", tmp_path / "o")
    assert code != 0 and "nomask.png" in err
    code, err = run_cli(capsys, "track", tmp_path / "frames", "--checkpoint", tmp_path / "none.ckpt",
                        "--points", "0,1,1", "--out", tmp_path / "o.gif")
    assert code != 0 and "none.ckpt" in err
    code, err = run_cli(capsys, "track", tmp_path / "frames", tmp_path / "frames", *ckpt, "--points", "0,1,1",
                        "--out", tmp_path / "o.gif")
    assert code != 0 and "exactly one video" in err
    assert not (tmp_path / "o.gif").exists() and not (tmp_path / "o").exists()
