"""The contract every registered tracker passes (hyperfeat.correspond.track): shapes, the query
frame returned exactly and visible, forward and backward tracking of a known motion, online ==
offline, bad input in one line; and the package's promises: the public function with no keywords
is what ``hyperfeat track`` runs, the settings dataclasses are the config's defaults."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from hyperfeat.config import load_config
from hyperfeat.correspond.track import DEFAULT_TRACKER, TRACKERS, settings_from_config, track_descriptors
from hyperfeat.describe.daisy import DaisyDescriber
from hyperfeat.errors import ConfigError, DataError
from hyperfeat.video.frames import frame_describer
from hyperfeat.video.online import Tracker
from hyperfeat.video.run import describe_frames, track_video
from tests.helpers import translated_video

VELOCITY = (4, 2)  # px per frame of the clip below
STEPS = 7


def describer(*overrides: str) -> DaisyDescriber:
    cfg = load_config(overrides=["backbone=tiny", "features.load_size=128", "video.frame_size=null", *overrides])
    return DaisyDescriber(cfg, stride=2)


@pytest.fixture(scope="module")
def clip():
    """A textured scene translated by VELOCITY px per frame: frames (T, 3, H, W), descriptors
    (T, D, h, w) and queries (t, x, y) on the first, a middle and the last frame."""
    frames = translated_video(steps=STEPS, velocity=VELOCITY, origin=(60, 40))  # (T, 3, 112, 192)
    desc = frame_describer(describer())(frames)
    queries = torch.tensor([[0, 60.0, 50.0], [0, 100.0, 60.0], [3, 90.0, 55.0], [3, 120.0, 40.0], [6, 130.0, 70.0]])
    return frames, desc, queries


def truth_of(queries: torch.Tensor) -> torch.Tensor:
    """(N, T, 2) the exact tracks of the queries."""
    times = torch.arange(STEPS, dtype=torch.float32)
    return queries[:, None, 1:] + (times[None, :, None] - queries[:, None, :1]) * torch.tensor(VELOCITY).float()


@pytest.mark.parametrize("name", list(TRACKERS))
def test_every_tracker_follows_a_known_motion_forward_and_backward(clip, name):
    frames, desc, queries = clip
    size = (frames.shape[-1], frames.shape[-2])
    tracks, visible, confidence = track_descriptors(desc, queries, size, name)
    n, t = queries.shape[0], STEPS
    assert tracks.shape == (n, t, 2) and visible.shape == confidence.shape == (n, t)
    assert visible.dtype == torch.bool and tracks.dtype == confidence.dtype == torch.float32
    assert ((confidence >= 0) & (confidence <= 1)).all()
    for i, frame in enumerate(queries[:, 0].long().tolist()):  # the query itself, exactly
        assert torch.equal(tracks[i, frame], queries[i, 1:]) and visible[i, frame] and confidence[i, frame] == 1
    error = (tracks - truth_of(queries)).norm(dim=-1)  # (N, T): forward from frame 0, both ways from 3, back from 6
    assert error.median() < 2.0 and error.max() < 6.0, (name, error)
    assert visible.float().mean() > 0.8, (name, visible)


@pytest.mark.parametrize("name", list(TRACKERS))
def test_online_equals_offline_on_the_frames_after_each_query(clip, name):
    frames, _, queries = clip
    d = describer(f"video.tracker={name}")
    offline = track_video(d, frames, queries, progress=False)
    online = Tracker(d, queries)
    assert online.tracker == name
    for t in range(STEPS):
        xy, visible, confidence = online.step(frames[t])
        started = queries[:, 0] <= t
        torch.testing.assert_close(xy[started], offline.tracks[started, t], atol=1e-4, rtol=0)
        assert torch.equal(visible[started], offline.visible[started, t])
        torch.testing.assert_close(confidence[started], offline.confidence[started, t], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", list(TRACKERS))
def test_bad_input_is_one_line(clip, name):
    frames, desc, queries = clip
    size = (frames.shape[-1], frames.shape[-2])
    with pytest.raises(DataError, match=r"^query 0 is at t=9.0, past the video: t must be an integer in \[0, 6\]"):
        track_descriptors(desc, [[9, 10.0, 10.0]], size, name)
    with pytest.raises(DataError, match=r"^query 0 at \(x, y\)=\(500, 10\) is outside the frame"):
        track_descriptors(desc, [[0, 500.0, 10.0]], size, name)
    with pytest.raises(DataError, match=r"^descriptors must be a \(T, D, h, w\) tensor"):
        track_descriptors(desc[0], queries, size, name)
    spec = TRACKERS[name]
    radius_field = "track_radius"
    with pytest.raises(ConfigError, match=rf"^video.trackers.{name}.{radius_field} must be >= 0; got -3$"):
        spec.settings(**{radius_field: -3})
    with pytest.raises(ConfigError, match=rf"^video.trackers.{name}.refine_temperature must be > 0; got 0"):
        spec.settings(refine_temperature=0.0)
    with pytest.raises(ConfigError, match=rf"^video.trackers.{name}.refine_temperature must be a finite number"):
        spec.settings(refine_temperature=float("nan"))
    group = spec.group(desc[0], torch.tensor([[2.0, 3.0]]), spec.settings())
    with pytest.raises(DataError, match=r"\(D, h, w\) with D = \d+ like the query frame's"):
        group.step(desc[1, :4])


def test_unknown_tracker_names_the_registered_ones(clip):
    frames, desc, queries = clip
    with pytest.raises(ConfigError, match=r"^unknown tracker 'kalman'; the trackers are: coherent, memory"):
        track_descriptors(desc, queries, (frames.shape[-1], frames.shape[-2]), "kalman")
    with pytest.raises(ConfigError, match="unknown tracker 'kalman'"):
        track_video(describer("video.tracker=kalman"), frames, queries, progress=False)


def test_the_public_function_without_keywords_is_what_the_command_runs(clip):
    """``track_descriptors(desc, queries, size)`` gives exactly what ``hyperfeat track`` (track_video on the
    default config) gives: the keyword defaults are the config's."""
    frames, _, queries = clip
    d = describer()
    assert str(d.cfg.video.tracker) == DEFAULT_TRACKER
    desc = describe_frames(d, frames, cache_dir=None, progress=False)
    tracks, visible, confidence = track_descriptors(desc, queries, (frames.shape[-1], frames.shape[-2]))
    command = track_video(d, frames, queries, progress=False)
    assert torch.equal(tracks, command.tracks) and torch.equal(visible, command.visible)
    assert torch.equal(confidence, command.confidence)


@pytest.mark.parametrize("name", list(TRACKERS))
def test_config_blocks_are_the_settings_dataclasses(name):
    cfg = load_config()
    block = cfg.video.trackers[name]
    spec = TRACKERS[name]
    assert set(block) == {f.name for f in dataclasses.fields(spec.settings)}
    assert settings_from_config(cfg, name) == spec.settings()
    changed = settings_from_config(load_config(overrides=[f"video.trackers.{name}.track_radius=5"]), name)
    assert changed.track_radius == 5 and changed != spec.settings()
    assert str(cfg.changes.tracker) in TRACKERS and str(cfg.video.tracker) == DEFAULT_TRACKER
