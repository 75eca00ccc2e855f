"""``Hyperfeatures.track / propagate / propagate_joints / describe_video``: thin wrappers over
hyperfeat.video.run, through a tiny checkpoint saved here.

The tiny random backbone's descriptors carry no correspondence (its tracks stay put: on the
scene below, mean error 10.0 px, the same as not moving at all: 9.9 px), so the motion test swaps
``describe_batch`` on the instance for a fixed random conv that sees what the backbone would,
(B, 3, L, L) in [-1, 1]; every other step (frame reading, resizing to L × L, pixel ↔ cell
mapping, the ``video.*`` settings) is the real pipeline.
"""

from __future__ import annotations

import pytest
import torch

from hyperfeat.api import Hyperfeatures
from hyperfeat.config import load_config
from hyperfeat.model.backbone import load_backbone
from hyperfeat.video.run import describe_frames, propagate, propagate_joints, track
from tests.helpers import (
    CROP,
    ONE_STEP_OVERRIDES,
    STEPS,
    VELOCITY,
    as_pil,
    conv_stand_in,
    translated_video,
    write_frames,
)


@pytest.fixture(scope="module")
def backbone():
    return load_backbone(load_config(overrides=ONE_STEP_OVERRIDES))


def load_hf(checkpoint, backbone, *overrides: str) -> Hyperfeatures:
    return Hyperfeatures.from_checkpoint(checkpoint, overrides=list(overrides), backbone=backbone)


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
