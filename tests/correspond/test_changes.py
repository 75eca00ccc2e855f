"""State-change analysis: hand-made descriptors with a known change, global changes that must
not count, bad input, and real DAVIS clips whose object changes at a known frame."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from hyperfeat.correspond.changes import ChangeSettings, analyse_changes
from hyperfeat.errors import DataError
from tests.helpers import data_dir

T, D, H, W = 14, 8, 8, 8
K = 7


def _scene(seed: int = 0, change: bool = True):
    """Descriptors (T, D, 8, 8) of a static scene; cells of rows 2-4, cols 2-4 (the object)
    switch to a new shared descriptor from frame K on. One point per cell, tracked in place."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(D, H, W, generator=g) + 1.0  # positive-mean, like most feature maps
    # the new state is one material: a shared descriptor with a little variation per cell
    after = torch.randn(D, 1, 1, generator=g) * 2.0 + 2.0 + 0.3 * torch.randn(D, H, W, generator=g)
    noise = 0.05 * torch.randn(T, D, H, W, generator=g)
    desc = base[None].repeat(T, 1, 1, 1) + noise
    obj = torch.zeros(H, W, dtype=torch.bool)
    obj[2:5, 2:5] = True
    if change:
        desc[K:, :, obj] = after[:, obj][None] + noise[K:, :, obj]
    ys, xs = torch.meshgrid(torch.arange(H).float(), torch.arange(W).float(), indexing="ij")
    xy = torch.stack([xs.flatten(), ys.flatten()], 1)  # image = grid: 8 × 8 pixels
    queries = torch.cat([torch.zeros(len(xy), 1), xy], 1)
    tracks = xy[:, None].repeat(1, T, 1)
    visible = torch.ones(len(xy), T, dtype=torch.bool)
    return desc, queries, tracks, visible, obj.flatten()


def test_known_change_is_found_at_its_frame_on_the_object_points():
    desc, q, tr, vis, obj = _scene()
    # the smallest object cell's jump here is 0.08 (1 − cos), the noise ≈ 0.002
    r = analyse_changes(desc, q, tr, vis, (W, H), settings=ChangeSettings(min_strength=0.05))
    assert r.found and len(r.events) == 1, r.message
    e = r.events[0]
    assert e.frame == K
    assert set(e.points) == set(obj.nonzero()[:, 0].tolist())
    assert e.strength > 0.1
    assert (r.regions[obj] == e.region).all() and (r.regions[~obj] == 0).all()
    # drift to the query appearance, computed independently for one object point (mean of its
    # first 3 frames is the query appearance)
    n = int(obj.nonzero()[0])
    f = F.normalize(desc[:, :, n // W, n % W], dim=1)  # (T, D)
    ref = F.normalize(f[:3].sum(0), dim=0)
    assert torch.allclose(r.drift_query[n], 1 - f @ ref, atol=1e-4)
    # states: before/after prototypes of the region; the after one labels the object's cells late on
    assert r.point_states[n, K - 1] != r.point_states[n, K]
    labels, _ = r.prototypes.label(desc[-1])  # (h, w)
    after, before = r.point_states[n, -1], r.point_states[n, 0]
    assert (labels[2:5, 2:5] == after).float().mean() > 0.5
    assert not (labels[2:5, 2:5] == before).any()
    # background cells are individual random vectors, only loosely near their region's mean
    background_after = (labels[~obj.view(H, W)] == after).float().mean()
    assert background_after < 0.25 and (labels[2:5, 2:5] == after).float().mean() > 3 * background_after


def test_a_global_change_is_not_a_change_of_state():
    desc, q, tr, vis, _ = _scene(change=False)
    ramp = torch.linspace(0, 1, T)[:, None, None, None]
    gain = 1 + ramp * torch.linspace(-0.9, 2.0, D)[None, :, None, None]  # per channel, like lighting
    changed = desc * gain + 4.0 * ramp * torch.linspace(-1, 1, D)[None, :, None, None]
    # raw drift does rise over the whole frame (and counts, with the absolute threshold) ...
    plain = analyse_changes(changed, q, tr, vis, (W, H), settings=ChangeSettings(reference="none", noise_strength=0.0))
    assert plain.drift_query[:, -1].median() > 0.02 and plain.found
    # ... and the reference correction takes it away
    r = analyse_changes(changed, q, tr, vis, (W, H))
    assert not r.found, r.message
    assert r.message.startswith("no change found")
    assert (r.regions == 0).all()


def test_bad_input_errors_and_no_change_found():
    desc, q, tr, vis, _ = _scene()
    with pytest.raises(DataError, match="at least 3 frames"):
        analyse_changes(desc[:2], q, tr[:, :2], vis[:, :2], (W, H))
    with pytest.raises(DataError, match="tracks are empty"):
        analyse_changes(desc, q[:0], tr[:0], vis[:0], (W, H))
    with pytest.raises(DataError, match="tracks must be"):
        analyse_changes(desc, q, tr[:, :3], vis, (W, H))
    hidden = torch.zeros_like(vis)
    hidden[:, 0] = True  # only the query frame: every point occluded afterwards
    r = analyse_changes(desc, q, tr, hidden, (W, H))
    assert not r.found and "occluded" in r.message and (r.regions == -1).all()
    json.dumps(r.to_dict())  # NaN-free record


def test_video_level_bad_input():
    from hyperfeat.describe.stats import LocalStatsDescriber
    from hyperfeat.video.changes import video_changes

    d = LocalStatsDescriber(resolution=8, load_size=32)
    frames = torch.rand(5, 3, 32, 32)
    with pytest.raises(DataError, match="at least 3 frames"):
        video_changes(d, frames[:2], grid=4)
    with pytest.raises(DataError, match="positive"):
        video_changes(d, frames, grid=0)
    with pytest.raises(DataError, match="no foreground"):
        video_changes(d, frames, mask=torch.zeros(32, 32))
    with pytest.raises(DataError, match="exactly one"):
        video_changes(d, frames)
    r = video_changes(d, frames, grid=3)  # random frames: runs, says what it found
    assert r.tracks.shape == (9, 5, 2) and r.message
    queries = r.queries
    with pytest.raises(DataError, match=r"is_reference must be \(9,\)"):
        video_changes(d, frames, queries=queries, is_reference=torch.ones(4, dtype=torch.bool))
    with pytest.raises(DataError, match="is_reference goes with queries"):
        video_changes(d, frames, grid=3, is_reference=torch.ones(9, dtype=torch.bool))
    with pytest.raises(DataError, match=r"tracks must be \(N, T, 2\) = \(9, 5, 2\)"):
        video_changes(d, frames, queries=queries, tracks=r.tracks[:, :4])
    given = video_changes(d, frames, queries=queries, tracks=r.tracks, visible=r.visible,
                          is_reference=torch.arange(9) >= 3)
    assert given.is_reference.tolist() == [False] * 3 + [True] * 6


SEQUENCES = ["camel", "cows"]


@pytest.fixture(scope="module")
def davis_tracks():
    """Per sequence: the unchanged clip and tracks of its mask/grid points, tracked on it."""
    from hyperfeat.data.videos.state_changes import davis_state_change_clip
    from hyperfeat.describe.stats import LocalStatsDescriber
    from hyperfeat.video.changes import mask_queries
    from hyperfeat.video.run import track

    root = data_dir("davis2017")
    from hyperfeat.config import load_config

    # the window tracker these thresholds were measured with (the memory tracker follows a
    # changed point less far: the analysis' own tracking is the subject of other tests)
    d = LocalStatsDescriber(load_config(overrides=["features.load_size=128", "video.tracker=window"]))
    out = {}
    for seq in SEQUENCES:
        base = davis_state_change_clip(root, seq, None, num_frames=16, frame_size=160)
        size = (int(base.frames.shape[-1]), int(base.frames.shape[-2]))
        q, ref = mask_queries(base.object[0], size, 10)
        tracks, visible = track(d, base.frames, q, progress=False)
        out[seq] = (base, tracks, visible, int((~ref).sum()))
    return root, d, out


# a removed part reveals the background that was beside it; the novelty test (default 0.05)
# cannot tell that from a tracker slipping onto the background, so along these tracks both
# removals are missed (benchmarks/state_changes.py: removed 0.33 → 0.10 along unchanged-clip
# tracks, colour 0.40 → 0.60; camel's painted and re-textured events no longer take its background)
_REMOVED = "a removed part reveals what was beside it: novelty reads it as a slip"
_KNOWN_MISSES = {(s, "removed"): pytest.mark.xfail(strict=True, reason=f"{s} removed: {_REMOVED}") for s in ("camel", "cows")}


@pytest.mark.parametrize("seq,kind", [pytest.param(s, k, marks=_KNOWN_MISSES.get((s, k), ()))
                                      for s in SEQUENCES for k in ("colour", "texture", "removed")])
def test_davis_object_change_is_found_at_k_on_the_object(davis_tracks, seq, kind):
    from hyperfeat.data.videos.state_changes import apply_state_change
    from hyperfeat.video.changes import video_changes

    root, d, clips = davis_tracks
    base, tracks, visible, num_obj = clips[seq]
    k = 8
    clip = apply_state_change(base.frames, base.object, k, kind, name=seq)
    r = video_changes(d, clip.frames, mask=clip.object[0], grid=10, tracks=tracks, visible=visible)
    assert r.found, r.message
    best = max(r.events, key=lambda e: len(e.points))
    assert abs(best.frame - k) <= 2, r.message
    on_object = sum(1 for p in best.points if p < num_obj)
    background = len(r.is_reference) - num_obj
    object_rate, background_rate = on_object / num_obj, (len(best.points) - on_object) / background
    assert object_rate >= 0.25  # the object's points, ...
    assert background_rate < 0.1 and object_rate > 4 * background_rate  # ... hardly any of the background's
    assert best.strength > 0


@pytest.mark.parametrize("seq", SEQUENCES)
def test_davis_removal_is_found_with_novelty_off(davis_tracks, seq):
    """The removals the novelty test drops (the xfails above) are found without it, at k on the object."""
    from hyperfeat.data.videos.state_changes import apply_state_change
    from hyperfeat.video.changes import video_changes

    root, d, clips = davis_tracks
    base, tracks, visible, num_obj = clips[seq]
    clip = apply_state_change(base.frames, base.object, 8, "removed", name=seq)
    settings = ChangeSettings(novelty=0.0)
    r = video_changes(d, clip.frames, mask=clip.object[0], grid=10, tracks=tracks, visible=visible, settings=settings)
    best = max(r.events, key=lambda e: len(e.points)) if r.events else None
    assert best is not None and abs(best.frame - 8) <= 2, r.message
    assert sum(1 for p in best.points if p < num_obj) >= 0.25 * num_obj


@pytest.mark.parametrize("seq", SEQUENCES)
def test_davis_brightness_ramp_gives_no_event(davis_tracks, seq):
    from hyperfeat.data.videos.state_changes import brightness_ramp
    from hyperfeat.video.changes import video_changes

    root, d, clips = davis_tracks
    base, tracks, visible, _ = clips[seq]
    frames = brightness_ramp(base.frames)
    assert (frames[-1].mean() / base.frames[-1].mean()) < 0.75  # the ramp is strong
    r = video_changes(d, frames, mask=base.object[0], grid=10, tracks=tracks, visible=visible)
    assert not r.found, r.message
    unchanged = video_changes(d, base.frames, mask=base.object[0], grid=10, tracks=tracks, visible=visible)
    assert not unchanged.found, unchanged.message


def test_changes_command_end_to_end_on_davis(tmp_path):
    from PIL import Image

    from hyperfeat.cli import main

    root = data_dir("davis2017")
    frames = tmp_path / "frames"
    frames.mkdir()
    for f in sorted((root / "JPEGImages" / "480p" / "cows").glob("*.jpg"))[:8]:
        Image.open(f).resize((160, 90)).save(frames / f.name)
    mask = Image.open(root / "Annotations" / "480p" / "cows" / "00000.png").resize((160, 90), Image.NEAREST)
    mask.save(tmp_path / "mask.png")
    out = tmp_path / "out"
    code = main(["changes", str(frames), "--describer", "local-stats", "--mask", str(tmp_path / "mask.png"),
                 "--grid", "6", "--out", str(out), "video.frame_size=160"])
    assert code == 0
    for name in ("drift.png", "timeline.png", "overlay.mp4", "events.json", "events.csv", "changes.json"):
        assert (out / name).stat().st_size > 0, name
    events = json.loads((out / "events.json").read_text())
    assert events["num_frames"] == 8 and isinstance(events["events"], list)
    full = json.loads((out / "changes.json").read_text())
    assert len(full["drift"]) == len(full["queries"]) and len(full["drift"][0]) == 8
    assert (out / "events.csv").read_text().splitlines()[0].startswith("event,frame,num_points")
    assert main(["changes", str(frames), "--describer", "local-stats", "--out", str(out)]) == 2  # no points


def test_noise_relative_threshold_finds_a_small_step_and_not_pure_noise():
    import numpy as np

    from hyperfeat.correspond.changes import change_points, pooled_noise

    rng = np.random.default_rng(0)
    sigma, step, k = 0.002, 0.03, 12
    noise = sigma * rng.standard_normal((40, 24))  # (N, T) flat drift of 40 points
    # the pooled robust scale of the increments is the noise's σ, not the increments' √2 σ
    assert abs(pooled_noise(noise) - sigma) < 0.2 * sigma
    with_step = noise.copy()
    with_step[:5, k:] += step  # 5 points step up by 15 σ: far below the absolute 0.1
    settings = ChangeSettings(noise_strength=8.0)
    min_jump = settings.noise_strength * pooled_noise(with_step)
    assert 0.5 * 8 * sigma < min_jump < step  # a step barely moves the pooled scale
    for n in range(5):
        found = change_points(with_step[n], settings, min_jump)
        assert [f for f, _ in found] == [k] and abs(found[0][1] - step) < 0.005
        assert change_points(with_step[n], ChangeSettings(noise_strength=0.0)) == []  # absolute: too small
    assert all(change_points(noise[n], settings, min_jump) == [] for n in range(40))


def test_noise_relative_events_on_descriptors():
    """The same small change through analyse_changes: found at K with a noise-relative threshold,
    missed by the absolute one."""
    desc, q, tr, vis, obj = _scene(change=False)
    small = desc.clone()
    small[K:, :, obj.view(H, W)] += 0.2 * torch.linspace(-3, 3, D)[None, :, None]  # a slight shift of the object
    r = analyse_changes(small, q, tr, vis, (W, H), settings=ChangeSettings(noise_strength=10.0, novelty=0.0))
    jump = float(r.drift[obj][:, K:].mean() - r.drift[obj][:, :K].mean())
    assert 0.01 < jump < 0.1  # below the absolute threshold
    from hyperfeat.correspond.changes import pooled_noise

    assert r.threshold == pytest.approx(10.0 * pooled_noise(r.drift[r.analysed].numpy()), rel=1e-5)
    assert r.threshold < jump
    assert r.found and any(abs(e.frame - K) <= 1 and set(e.points) <= set(obj.nonzero()[:, 0].tolist()) for e in r.events), r.message
    assert not analyse_changes(small, q, tr, vis, (W, H), settings=ChangeSettings(noise_strength=0.0, novelty=0.0)).found


def test_motion_prior_keeps_a_changed_point_in_place():
    """The query cell changes to something unlike the query at frame 1; a look-alike sits 4 cells
    away inside the window. Without a motion prior the window tracker jumps to it; with one the
    point stays where it was."""
    from hyperfeat.correspond.tracking import track_points

    size, num_frames = 16, 4
    e = torch.eye(4)
    desc = e[2][None, :, None, None].repeat(num_frames, 1, size, size)  # background: e2 everywhere
    desc[0, :, 8, 8] = e[0]  # the query's appearance
    desc[1:, :, 8, 8] = e[1]  # it changes: no cell of later frames resembles the query ...
    desc[1:, :, 8, 12] = F.normalize(0.5 * e[0] + e[3], dim=0)  # ... except a look-alike (cos 0.45)
    queries = torch.tensor([[0.0, 8.0, 8.0]])
    kwargs = dict(track_radius=8, reacquire_margin=2.0, refine_radius=1)
    free, _ = track_points(desc, queries, (size, size), **kwargs)
    held, _ = track_points(desc, queries, (size, size), motion_penalty=2.0, **kwargs)
    assert torch.allclose(free[0, 1:], torch.tensor([12.0, 8.0]), atol=0.5)  # jumped to the look-alike
    assert torch.allclose(held[0, 1:], torch.tensor([8.0, 8.0]), atol=0.5)  # stayed put
    # a weak prior does not stop a real move: the look-alike 2 cells away is a good match
    desc[1:, :, 8, 12] = e[2]
    desc[1:, :, 8, 10] = e[0]
    moved, _ = track_points(desc, queries, (size, size), motion_penalty=1.0, **kwargs)
    assert torch.allclose(moved[0, 1:], torch.tensor([10.0, 8.0]), atol=0.5)


def _moving_patch(num_frames: int = 10, size: int = 24, change_at: int = 5, seed: int = 0):
    """Descriptors (T, 32, size, size) of textured noise with a 4 × 4-cell object moving one cell
    right per frame; from ``change_at`` on the object carries a new, unrelated texture. Returns
    desc and the object's top-left column per frame."""
    g = torch.Generator().manual_seed(seed)
    background = torch.randn(32, size, size, generator=g)
    before = torch.randn(32, 4, 4, generator=g)
    after = torch.randn(32, 4, 4, generator=g)
    desc = background[None].repeat(num_frames, 1, 1, 1)
    left = [4 + t for t in range(num_frames)]
    for t in range(num_frames):
        desc[t, :, 10:14, left[t]:left[t] + 4] = before if t < change_at else after
    return desc, left


def test_appearance_tracker_follows_a_point_through_an_abrupt_change():
    """The query tracker loses the object once its look changes; the appearance tracker keeps
    following it (its template carries the new look from the frame after the change) and calls it
    visible again after the change frame, forward and backward from a query in the middle."""
    from hyperfeat.correspond.tracking import track_appearance, track_points

    desc, left = _moving_patch()
    size = (24, 24)
    queries = torch.tensor([[0.0, left[0] + 1.0, 11.0]])  # a cell inside the object, image = grid
    truth = torch.tensor([[left[t] + 1.0, 11.0] for t in range(len(left))])
    tracks, visible = track_appearance(desc, queries, size, track_radius=3, template_update=0.5,
                                       motion_penalty=2.0, refine_radius=0, velocity=1.0)
    assert torch.allclose(tracks[0], truth, atol=0.01), tracks[0]
    assert visible[0, :5].all() and visible[0, 6:].all()  # the cycle breaks at the change frame only
    assert not visible[0, 5]
    # without the velocity prediction the point stops in the change frame and, after it, follows
    # another cell of the new texture
    stopped, _ = track_appearance(desc, queries, size, track_radius=3, motion_penalty=2.0, refine_radius=0)
    assert (stopped[0, 5:] - truth[5:]).norm(dim=1).min() > 0.5
    old, old_visible = track_points(desc, queries, size, track_radius=3, refine_radius=0, reacquire_margin=2.0)
    assert not old_visible[0, 6:].any()  # matched against the query alone: the changed point is lost
    # a query after the change: tracked backward through it too
    mid = torch.tensor([[7.0, left[7] + 2.0, 12.0]])
    back, _ = track_appearance(desc, mid, size, track_radius=3, motion_penalty=2.0, refine_radius=0, velocity=1.0)
    assert torch.allclose(back[0], truth + torch.tensor([1.0, 1.0]), atol=0.01)
    with pytest.raises(DataError, match="template_update"):
        track_appearance(desc, queries, size, template_update=1.5)


def test_standardised_frames_cancel_a_global_gain_and_offset():
    """A per-channel gain and offset over the whole frame (lighting) leaves the standardised
    descriptors unchanged; a change of part of the frame does not vanish."""
    from hyperfeat.correspond.tracking import standardise_frames

    desc, _ = _moving_patch(num_frames=3)
    gain = torch.rand(1, 32, 1, 1) + 0.5
    offset = torch.randn(1, 32, 1, 1)
    lit = desc * gain + offset
    assert torch.allclose(standardise_frames(lit), standardise_frames(desc), atol=1e-5)
    direct = (desc - desc.mean(dim=(2, 3), keepdim=True)) / desc.std(dim=(2, 3), keepdim=True)
    assert torch.allclose(standardise_frames(desc), F.normalize(direct, dim=1), atol=1e-5)
    local = desc.clone()
    local[:, :, :4, :4] *= 3.0
    assert not torch.allclose(standardise_frames(local), standardise_frames(desc), atol=1e-2)


def test_track_for_changes_picks_the_configured_tracker():
    """changes.tracker / standardise select what video_changes tracks with; a bad name is an error."""
    from hyperfeat.config import load_config
    from hyperfeat.correspond.tracking import standardise_frames, track_appearance, track_points
    from hyperfeat.video.changes import track_for_changes

    cfg = load_config()
    desc, left = _moving_patch()
    queries = torch.tensor([[0.0, left[0] + 1.0, 11.0], [0.0, 20.0, 3.0]])
    lit = desc * torch.linspace(1.0, 0.5, len(left))[:, None, None, None] + 0.3  # a lighting ramp
    appearance = ChangeSettings(tracker="appearance", standardise=True, template_update=0.3, velocity=0.0)
    got = track_for_changes(lit, queries, (24, 24), cfg, appearance)
    want = track_appearance(standardise_frames(lit), queries, (24, 24), template_update=0.3, velocity=0.0,
                            track_radius=int(cfg.video.track_radius), cycle_threshold=float(cfg.video.cycle_threshold),
                            refine_radius=int(cfg.video.refine_radius), refine_temperature=float(cfg.video.refine_temperature))
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    # the ramp cancels in the standardised frames: tracks as on the unlit clip
    assert torch.allclose(got[0], track_for_changes(desc, queries, (24, 24), cfg, appearance)[0], atol=1e-4)
    query = track_for_changes(desc, queries, (24, 24), cfg, ChangeSettings(tracker="query", standardise=False))
    direct = track_points(desc, queries, (24, 24), track_radius=int(cfg.video.track_radius),
                          cycle_threshold=float(cfg.video.cycle_threshold), min_similarity=float(cfg.video.min_similarity),
                          refine_radius=int(cfg.video.refine_radius), refine_temperature=float(cfg.video.refine_temperature),
                          reacquire_margin=2.0, motion_penalty=1.0)
    assert torch.equal(query[0], direct[0]) and torch.equal(query[1], direct[1])
    with pytest.raises(DataError, match="changes.tracker"):
        track_for_changes(desc, queries, (24, 24), cfg, ChangeSettings(tracker="magic"))


def test_member_ratio_drops_weak_members_of_an_event():
    from hyperfeat.correspond.changes import group_events

    # eight points jump by 0.4 at frame 10; three others wobble by 0.05 at frame 11
    changes = {n: [(10, 0.4 + 0.01 * n)] for n in range(8)}
    changes.update({n: [(11, 0.05)] for n in (20, 21, 22)})
    every = group_events(changes, 30, ChangeSettings(min_points=7), min_jump=0.04)
    assert len(every) == 1 and sorted(every[0].points) == list(range(8)) + [20, 21, 22]
    pruned = group_events(changes, 30, ChangeSettings(min_points=7, member_ratio=0.5), min_jump=0.04)
    assert len(pruned) == 1 and pruned[0].points == list(range(8))
    assert pruned[0].strength == pytest.approx(sum(0.4 + 0.01 * n for n in range(8)) / 8)
    # pruned below min_points: no event at all
    assert group_events(changes, 30, ChangeSettings(min_points=9, member_ratio=0.5), min_jump=0.04) == []


def test_member_ratio_out_of_range_is_one_line():
    with pytest.raises(DataError, match=r"changes.member_ratio must be in \[0, 1\].*got 1.5"):
        ChangeSettings(member_ratio=1.5)


def test_changes_command_reads_tracks_from_a_file(tmp_path, capsys):
    """``hyperfeat changes --tracks FILE --mask PNG``: the analysis along another tracker's tracks
    (here: tracks of the unchanged DAVIS clip) equals the API's on the same tracks, finds the
    texture swap at k on the object; a file that does not fit the video is one line."""
    from PIL import Image

    from hyperfeat.cli import main
    from hyperfeat.cli.changes import build_describer
    from hyperfeat.data.videos.state_changes import davis_state_change_clip
    from hyperfeat.video.changes import mask_queries, video_changes
    from hyperfeat.video.frames import load_frames
    from hyperfeat.video.queries import save_tracks
    from hyperfeat.video.run import track

    root = data_dir("davis2017")
    k = 8
    base = davis_state_change_clip(root, "cows", None, num_frames=16, frame_size=160)
    clip = davis_state_change_clip(root, "cows", "texture", change_frame=k, num_frames=16, frame_size=160)
    folder = tmp_path / "frames"
    folder.mkdir()
    for t, frame in enumerate(clip.frames):
        Image.fromarray((frame.permute(1, 2, 0) * 255).round().byte().numpy()).save(folder / f"{t:05d}.png")
    Image.fromarray(clip.object[0].numpy().astype("uint8") * 255).save(tmp_path / "mask.png")
    size = (int(base.frames.shape[-1]), int(base.frames.shape[-2]))
    d = build_describer("local-stats", None, ["video.frame_size=160", "video.tracker=window"])
    queries, is_ref = mask_queries(base.object[0], size, 10)
    tracks, visible = track(d, base.frames, queries, progress=False)
    path = save_tracks(tmp_path / "tracks.json", queries, tracks, visible, size=size)

    out = tmp_path / "out"
    args = ["changes", str(folder), "--describer", "local-stats", "--tracks", str(path), "--mask",
            str(tmp_path / "mask.png"), "--out", str(out), "video.frame_size=160", "video.tracker=window"]
    assert main(args) == 0
    events = json.loads((out / "events.json").read_text())["events"]
    direct = video_changes(d, load_frames(d, folder), queries=queries, tracks=tracks, visible=visible,
                           is_reference=is_ref)
    assert [(e["frame"], e["points"]) for e in events] == [(e.frame, e.points) for e in direct.events]
    num_obj = int((~is_ref).sum())
    best = max(direct.events, key=lambda e: len(e.points))
    assert abs(best.frame - k) <= 2 and sum(p < num_obj for p in best.points) >= 0.25 * num_obj
    assert sum(p >= num_obj for p in best.points) < 0.1 * int(is_ref.sum())
    capsys.readouterr()
    short = save_tracks(tmp_path / "short.npz", queries, tracks[:, :10], visible[:, :10], size=size)
    assert main(args[:5] + [str(short)] + args[6:]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "short.npz has 10 frames but the video has 16" in err
    (tmp_path / "bad.json").write_text(json.dumps({"queries": queries.tolist(), "tracks": [[0, 0]]}))
    assert main(args[:5] + [str(tmp_path / "bad.json")] + args[6:]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.json has no field 'visible'" in err
    assert main(args + ["--grid", "4"]) == 2
    assert "exactly one of" in capsys.readouterr().err


def test_novelty_keeps_a_new_look_and_drops_a_slip_onto_what_was_there():
    """A real change brings a look that was not there before; a slip (the tracks jump 2 cells
    sideways at K onto material that was already beside them) reads as a change of the same size
    without novelty, and is dropped with it."""
    from hyperfeat.correspond.changes import novelty_of

    desc, q, tr, vis, obj = _scene()
    kept = analyse_changes(desc, q, tr, vis, (W, H), settings=ChangeSettings(min_strength=0.05, novelty=0.05))
    assert kept.found and set(kept.events[0].points) == set(obj.nonzero()[:, 0].tolist()), kept.message
    still, q, tr, vis, obj = _scene(change=False)
    slipped = tr.clone()
    slipped[obj, K:, 0] += 2  # the object's points slide onto their neighbours' cells
    plain = analyse_changes(still, q, slipped, vis, (W, H), settings=ChangeSettings(min_strength=0.05, novelty=0.0))
    assert plain.found and abs(plain.events[0].frame - K) <= 1, plain.message
    novel = analyse_changes(still, q, slipped, vis, (W, H), settings=ChangeSettings(min_strength=0.05, novelty=0.05))
    assert not novel.found, novel.message
    # the value for one point, computed directly: its look at K + 1 against the 5 × 5 cells around it at K − 3
    n = int(obj.nonzero()[0])
    unit = F.normalize(still, dim=1)
    x, y = int(slipped[n, K + 1, 0]), int(slipped[n, K + 1, 1])
    look = unit[K + 1, :, y, x]
    x0, y0 = int(slipped[n, K - 3, 0]), int(slipped[n, K - 3, 1])
    best = max(float(look @ unit[K - 3, :, j, i]) for j in range(max(y0 - 2, 0), min(y0 + 3, H))
               for i in range(max(x0 - 2, 0), min(x0 + 3, W)))
    got = novelty_of(unit, slipped, (W, H), n, K, ChangeSettings())
    assert abs(got - (1 - best)) < 1e-5 and got < 0.01
    with pytest.raises(DataError, match="changes.novelty must be in"):
        ChangeSettings(novelty=3.0)
    with pytest.raises(DataError, match="changes.novelty_radius"):
        ChangeSettings(novelty_radius=-1)
