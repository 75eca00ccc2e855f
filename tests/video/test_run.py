"""The video orchestration (hyperfeat.video.run, .frames, .store) on a Hyperfeatures object.

The Hyperfeatures object is built from the tiny random backbone and an untrained aggregation
network (no checkpoint). Its descriptors carry almost no content: on a real DAVIS frame
translated (6, 3) px per frame its tracks stay put (mean error 20.1 px, the same as not
moving at all), and label propagation is no better than keeping the first mask. So the motion
tests swap ``hf.describe_batch`` on the instance for a fixed random conv (kernel 17, stride 4:
a 32 × 32 grid at load_size 128, like the tiny network's) that sees exactly what the backbone
would: (B, 3, L, L) in [-1, 1]. Everything else — frame resizing to L × L, the per-axis
pixel ↔ cell mapping on non-square frames, the ``video.*`` settings, caching — is the real
pipeline. With the stand-in, on 256 × 144 crops moving (4, 2) px per frame, tracks have a
median error of ≈ 2 px (cells are 8 × 4.5 px; not moving: ≈ 11 px) and camel's mask keeps
J ≈ 0.83 where a mask that stays put falls to 0.54.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hyperfeat.api import Hyperfeatures
from hyperfeat.model.checkpoint import build_network
from tests.helpers import (
    conv_stand_in,
    iou,
    make_hf,
    translated_sequence,
)

# ---------------------------------------------------------------------------------------------
# frames → descriptors


def test_frame_describer_stretches_frames_to_the_square_load_size(parts):
    from hyperfeat.video.frames import frame_describer

    hf = make_hf(parts)
    calls: list = []
    hf.describe_batch = conv_stand_in(calls=calls)
    frames = torch.rand(3, 3, 90, 200)  # wide, not square
    desc = frame_describer(hf)(frames)
    assert desc.shape == (3, 64, 32, 32)
    (batch,) = calls
    assert batch.shape == (3, 3, 128, 128) and batch.min() >= -1 and batch.max() <= 1
    want = F.interpolate(frames, size=(128, 128), mode="bilinear", align_corners=False, antialias=True) * 2 - 1
    assert torch.allclose(batch, want, atol=1e-5)


def test_descriptor_cache_is_keyed_by_the_network(parts, tmp_path):
    from hyperfeat.video.run import describe_frames
    from hyperfeat.video.store import descriptor_key

    hf = make_hf(parts)
    calls: list = []
    hf.describe_batch = conv_stand_in(calls=calls)
    frames = torch.rand(5, 3, 48, 64)
    first = describe_frames(hf, frames, cache_dir=tmp_path, progress=False)
    assert first.shape == (5, 64, 32, 32) and len(calls) == 2  # video.batch_size = 4
    again = describe_frames(hf, frames, cache_dir=tmp_path, progress=False)
    assert torch.equal(first, again) and len(calls) == 2  # read from the cache
    assert len(list(tmp_path.glob("*.pt"))) == 1

    # another network (one weight changed) is another key: never a stale read
    _, backbone, network, channels = parts
    other_net = build_network(hf.cfg, channels)
    other_net.load_state_dict(network.state_dict())
    assert descriptor_key(Hyperfeatures(hf.cfg, backbone, other_net)) == descriptor_key(hf)
    with torch.no_grad():
        next(other_net.parameters()).add_(1e-3)
    other = Hyperfeatures(hf.cfg, backbone, other_net)
    assert descriptor_key(other) != descriptor_key(hf)
    other_calls: list = []
    other.describe_batch = conv_stand_in(seed=1, calls=other_calls)
    describe_frames(other, frames, cache_dir=tmp_path, progress=False)
    assert len(other_calls) == 2 and len(list(tmp_path.glob("*.pt"))) == 2
    # another feature config is another key too
    assert descriptor_key(make_hf(parts, "features.output_resolution=16")) != descriptor_key(hf)


# ---------------------------------------------------------------------------------------------
# tracking and propagation on synthetic motion


@pytest.mark.parametrize("velocity", [(4, 2), (-3, 3)])
def test_track_follows_a_translated_real_frame(parts, velocity):
    from hyperfeat.video.run import track

    hf = make_hf(parts)
    hf.describe_batch = conv_stand_in()
    frames, _ = translated_sequence("bike-packing", velocity)
    steps, (width, height) = frames.shape[0], (frames.shape[-1], frames.shape[-2])
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(24, 2, generator=gen) * torch.tensor([width - 60.0, height - 50.0]) + torch.tensor([30.0, 25.0])
    t_query = torch.tensor([0.0] * 16 + [3.0] * 8)[:, None]  # forward and backward tracking
    queries = torch.cat([t_query, xy], dim=1)
    tracks, visible = track(hf, frames, queries, progress=False)
    assert tracks.shape == (24, steps, 2) and visible.shape == (24, steps) and visible.dtype == torch.bool
    times = torch.arange(steps, dtype=torch.float32)
    truth = xy[:, None] + (times[None, :, None] - t_query[:, :, None]) * torch.tensor(velocity).float()
    error = (tracks - truth).norm(dim=-1)  # (N, T)
    still = (xy[:, None] - truth).norm(dim=-1)  # a prediction that does not move
    scored = times[None] != t_query  # (N, T)
    assert torch.allclose(tracks[torch.arange(24), t_query[:, 0].long()], xy)  # the query itself
    # measured: median 2.2 / 2.0 px, 86 / 91 % within 6 px, mean 4.5 / 6.1 px (a few lost points);
    # not moving at all: median ≈ 11 px
    assert error[scored].median() < 3.5, error
    assert (error[scored] < 6.0).float().mean() > 0.75, error
    assert error[scored].median() < 0.4 * still[scored].median()
    assert error[scored].mean() < 0.7 * still[scored].mean()
    assert visible.float().mean() > 0.6


def test_propagate_keeps_a_high_j(parts):
    from hyperfeat.video.run import propagate

    hf = make_hf(parts)
    hf.describe_batch = conv_stand_in()
    for sequence, min_j in (("camel", 0.7), ("india", 0.6)):  # measured: camel 0.83, india 0.74-0.77
        frames, masks = translated_sequence(sequence)
        pred = propagate(hf, frames, masks[0], progress=False)
        assert pred.shape == masks.shape and pred.dtype == torch.int64
        assert torch.equal(pred[0], masks[0])
        ids = [i for i in masks[0].unique().tolist() if i]
        assert set(pred.unique().tolist()) <= {0, *ids}
        for obj in ids:
            j = np.mean([iou(pred[t] == obj, masks[t] == obj) for t in range(1, len(masks))])
            j_still = np.mean([iou(masks[0] == obj, masks[t] == obj) for t in range(1, len(masks))])
            assert j > min_j and j > j_still + 0.1, (sequence, obj, j, j_still)


def test_propagate_joints_follow_the_motion(parts):
    from hyperfeat.video.run import propagate_joints

    hf = make_hf(parts)
    hf.describe_batch = conv_stand_in()
    frames, _ = translated_sequence("bike-packing", (4, 2))
    gen = torch.Generator().manual_seed(1)
    points = torch.rand(12, 2, generator=gen) * torch.tensor([196.0, 94.0]) + torch.tensor([30.0, 25.0])
    joints = propagate_joints(hf, frames, points, progress=False)
    assert joints.shape == (6, 12, 2) and torch.equal(joints[0], points)
    truth = points[None] + torch.arange(6.0)[:, None, None] * torch.tensor([4.0, 2.0])
    error = (joints - truth).norm(dim=-1)[1:]
    still = (points[None] - truth).norm(dim=-1)[1:]
    # measured: median 2.0 px, mean 2.6 px, 93 % within 6 px; not moving: mean 13.4 px
    assert error.median() < 3.5 and (error < 6.0).float().mean() > 0.8, error
    assert error.mean() < 0.4 * still.mean(), (error, still)
