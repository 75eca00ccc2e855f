"""State-change analysis: hand-made descriptors with known changes (sudden, gradual, of a part),
global changes and slips that must not count, online == offline, learnt states that label
another clip, and real DAVIS clips with changes and controls made from the footage."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from hyperfeat.correspond.changes import ChangeSettings, OnlineChanges, analyse_changes, load_states
from hyperfeat.describe.registry import DENSE
from hyperfeat.errors import DataError
from tests.helpers import data_dir

T, D, H, W = 14, 32, 8, 8
K = 7


def _scene(seed: int = 0, change: bool = True, k: int = K, ramp: int = 0, cells=(slice(2, 5), slice(2, 5))):
    """Descriptors (T, D, 8, 8) of a static scene; the cells ``cells`` (the object) switch to a
    new shared descriptor from frame ``k`` on (faded in over ``ramp`` + 1 frames). One point per
    cell, tracked in place. Returns desc, queries, tracks, visible and the object's flags (N,)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(D, H, W, generator=g) + 1.0  # positive-mean, like most feature maps
    # the new state is one material: a shared descriptor with a little variation per cell
    after = torch.randn(D, 1, 1, generator=g) * 2.0 - 1.0 + 0.3 * torch.randn(D, H, W, generator=g)
    noise = 0.05 * torch.randn(T, D, H, W, generator=g)
    desc = base[None].repeat(T, 1, 1, 1) + noise
    obj = torch.zeros(H, W, dtype=torch.bool)
    obj[cells] = True
    if change:
        for t in range(k, T):
            alpha = min(1.0, (t - k + 1) / (ramp + 1))
            desc[t, :, obj] = alpha * after[:, obj] + (1 - alpha) * base[:, obj] + noise[t, :, obj]
    ys, xs = torch.meshgrid(torch.arange(H).float(), torch.arange(W).float(), indexing="ij")
    xy = torch.stack([xs.flatten(), ys.flatten()], 1)  # image = grid: 8 × 8 pixels
    queries = torch.cat([torch.zeros(len(xy), 1), xy], 1)
    tracks = xy[:, None].repeat(1, T, 1)
    visible = torch.ones(len(xy), T, dtype=torch.bool)
    return desc, queries, tracks, visible, obj.flatten()


def test_known_change_is_found_at_its_frame_on_the_object_points():
    desc, q, tr, vis, obj = _scene()
    r = analyse_changes(desc, q, tr, vis, (W, H))
    assert r.found and len(r.events) == 1, r.message
    e = r.events[0]
    assert e.start == e.end == K  # sudden: it starts and ends at K
    assert set(e.points) == set(obj.nonzero()[:, 0].tolist())
    assert e.score > r.threshold and e.strength > 0
    assert (r.regions[obj] == e.region).all() and (r.regions[~obj] == 0).all()
    # the drift of an object point without references, computed independently: the distance of
    # its look to the mean of its first 3 looks, each channel divided by its noise — the median
    # over all points of its frame-to-frame step, averaged over the steps so far (the first
    # `lookaround` of them), relative to the channels' mean
    n = int(obj.nonzero()[0])
    all_looks = F.normalize(desc.flatten(2), dim=1)  # (T, D, N)
    steps = (all_looks[1:] - all_looks[:-1]).abs().median(dim=2).values  # (T - 1, D)
    looks = all_looks[:, :, n]  # (T, D)
    query = F.normalize(looks[:3].sum(0), dim=0)
    expected = []
    for t in range(T):
        noise = steps[: min(t, ChangeSettings().lookaround)].mean(0) if t else torch.ones(D)
        noise = noise.clamp_min(0.05 * noise.mean()) / noise.mean()
        expected.append(((looks[t] - query) / noise).norm())
    bare = analyse_changes(desc, q, tr, vis, (W, H), settings=ChangeSettings(reference="none"))
    assert torch.allclose(bare.drift[n, 2:], torch.stack(expected)[2:], atol=1e-4)
    # ... which is not the plain chord distance
    assert not torch.allclose(bare.drift[n, 2:], (looks - query).norm(dim=1)[2:], atol=1e-3)
    assert (bare.baseline == 0).all() and (r.baseline[3:] > 0).all()
    # states: before/after prototypes of the region; the after one labels the object's cells late on
    assert r.point_states[n, K - 1] != r.point_states[n, K]
    labels, _ = r.prototypes.label(desc[-1])  # (h, w)
    after, before = r.point_states[n, -1], r.point_states[n, 0]
    assert (labels[2:5, 2:5] == after).float().mean() > 0.5
    assert not (labels[2:5, 2:5] == before).any()


def test_a_gradual_change_is_one_event_with_its_start_and_end():
    """Faded in over 5 frames (K … K + 4): one event, starting near K and ending near K + 4 — not
    a string of small events, not a single frame."""
    desc, q, tr, vis, obj = _scene(ramp=4)
    r = analyse_changes(desc, q, tr, vis, (W, H))
    assert len(r.events) == 1, r.message
    e = r.events[0]
    assert abs(e.start - K) <= 1 and abs(e.end - (K + 4)) <= 1 and e.end > e.start, (e.start, e.end)
    assert set(e.points) == set(obj.nonzero()[:, 0].tolist())
    # the sudden change of the same cells ends where it starts
    sudden = analyse_changes(*_scene()[:4], (W, H)).events[0]
    assert sudden.end == sudden.start


def test_a_small_step_before_a_change_is_not_its_start():
    """The object's cells step a little (a tenth of the way: motion, a shadow) at frame 7 and change
    at frame 11. The step crosses the noise first but is no change of its own (alone: no event), so
    the change starts at 11, not 7. A step that is a change of its own (three tenths: found alone at
    7) does begin it: a change in two stages, 7 to 11."""
    num = 20
    desc, q, tr, vis, obj = _scene(change=False)
    g = torch.Generator().manual_seed(1)
    more = desc[-1:].repeat(num - T, 1, 1, 1) + 0.05 * torch.randn(num - T, D, H, W, generator=g)
    desc = torch.cat([desc, more])  # (num, D, H, W): the static scene, longer
    tr, vis = tr[:, :1].repeat(1, num, 1), vis[:, :1].repeat(1, num)
    after = 2.0 * torch.randn(D, 1, generator=g)  # the new state
    cells = obj.view(H, W)
    base = desc[:, :, cells]  # (num, D, n)

    def clip(share: float, change: bool = True) -> torch.Tensor:
        out = desc.clone()
        out[7:, :, cells] = base[7:] + share * (after - base[7:].mean(0))
        if change:
            out[11:, :, cells] = base[11:] + (after - base[11:].mean(0))
        return out

    def events(d: torch.Tensor) -> list[tuple[int, int]]:
        r = analyse_changes(d, q, tr, vis, (W, H))
        assert all(set(e.points) == set(obj.nonzero()[:, 0].tolist()) for e in r.events)
        return [(e.start, e.end) for e in r.events]

    assert events(clip(0.1, change=False)) == []
    assert events(clip(0.1)) == [(11, 11)]
    assert events(clip(0.3, change=False)) == [(7, 7)]
    assert events(clip(0.3)) == [(7, 11)]


def test_a_change_of_part_of_an_object_is_found_on_that_part():
    """Object: rows 1-6, columns 1-6 (36 cells); only its left 2 columns (12 cells, a third)
    change. The event holds those cells and no other; a fraction-of-the-object rule would miss it."""
    part = (slice(1, 7), slice(1, 3))
    desc, q, tr, vis, on_part = _scene(cells=part)
    obj = torch.zeros(H, W, dtype=torch.bool)
    obj[1:7, 1:7] = True
    is_ref = ~obj.flatten()  # the background normalises; the object's other cells stay as they were
    r = analyse_changes(desc, q, tr, vis, (W, H), is_reference=is_ref)
    assert len(r.events) == 1, r.message
    assert set(r.events[0].points) == set(on_part.nonzero()[:, 0].tolist())
    # two objects, one changing: the other's points are in no event
    assert (r.regions[obj.flatten() & ~on_part] == 0).all()


def test_a_global_change_is_not_a_change_of_state():
    desc, q, tr, vis, _ = _scene(change=False)
    ramp = torch.linspace(0, 1, T)[:, None, None, None]
    gain = 1 + ramp * torch.linspace(-0.9, 2.0, D)[None, :, None, None]  # per channel, like lighting
    changed = desc * gain + 4.0 * ramp * torch.linspace(-1, 1, D)[None, :, None, None]
    jump = desc.clone()
    jump[K:] = desc[K:] * torch.linspace(0.3, 1.5, D)[None, :, None, None] + 1.0  # exposure / white balance at K
    for clip in (changed, jump):
        # without the references' normalisation the whole frame reads as changed ...
        plain = analyse_changes(clip, q, tr, vis, (W, H), settings=ChangeSettings(reference="none"))
        assert plain.found
        # ... and with it nothing is
        r = analyse_changes(clip, q, tr, vis, (W, H))
        assert not r.found, r.message
        assert r.message.startswith("no change found") and (r.regions == 0).all()


def test_a_slipping_point_is_not_reported_as_a_change():
    """A 2 × 2 block of points whose tracks slip at K onto other material (3 cells to the right)
    while their neighbours stay: read along the given tracks it looks like a change; carried by
    the neighbours' motion (coherent) it is read where it really is — no event — and flagged as slipped."""
    desc, q, tr, vis, _ = _scene(change=False)
    block = torch.zeros(H, W, dtype=torch.bool)
    block[3:5, 1:3] = True
    slip = block.flatten()
    tr = tr.clone()
    tr[slip, K:, 0] += 3.0
    few = ChangeSettings(min_points=3)  # the 4 slipping points may make an event
    naive = analyse_changes(desc, q, tr, vis, (W, H), settings=replace(few, coherent=False, novelty=0.0))
    assert naive.found and set(naive.events[0].points) <= set(slip.nonzero()[:, 0].tolist()), naive.message
    r = analyse_changes(desc, q, tr, vis, (W, H), settings=few)
    assert not r.found, r.message
    assert r.slipped[slip, K:].all() and not r.slipped[~slip].any()
    assert torch.allclose(r.tracks[slip], q[slip, 1:][:, None].expand(-1, T, -1))  # read in place
    # a point that changes moves with its neighbours: not a slip, and its change is found
    changed = analyse_changes(*_scene()[:4], (W, H))
    assert changed.found and not changed.slipped.any()


def test_material_moving_under_still_points_is_not_a_change():
    """The object's cells (rows 2-4, columns 3-5) show from K on what was 2 cells to their left
    (it turned under its points: a spin, a fold), while the points and all their neighbours stay
    put, so the neighbours' motion cannot tell. Their new looks were beside them just before:
    no change (``novelty``); without that test it is one."""
    desc, q, tr, vis, _ = _scene(change=False)
    moved = torch.zeros(H, W, dtype=torch.bool)
    moved[2:5, 3:6] = True
    turned = desc.clone()
    turned[K:, :, 2:5, 3:6] = desc[K:, :, 2:5, 1:4]
    off = analyse_changes(turned, q, tr, vis, (W, H), settings=ChangeSettings(novelty=0.0))
    assert off.found and set(off.events[0].points) <= set(moved.flatten().nonzero()[:, 0].tolist()), off.message
    r = analyse_changes(turned, q, tr, vis, (W, H))
    assert not r.found, r.message
    # the same cells taking on a new material at K are a change
    assert analyse_changes(*_scene(cells=(slice(2, 5), slice(3, 6)))[:4], (W, H)).found


def test_a_region_needs_min_strength_of_mean_jump():
    """A region counts only when its points' mean jump of look (drift units, the event's
    ``strength``) reaches ``min_strength``: just above the found event's strength it is gone,
    just below it stays."""
    desc, q, tr, vis, _ = _scene()
    found = analyse_changes(desc, q, tr, vis, (W, H), settings=ChangeSettings(min_strength=0.0))
    assert found.found, found.message
    strength = found.events[0].strength
    assert strength > ChangeSettings().min_strength
    below = analyse_changes(desc, q, tr, vis, (W, H), settings=ChangeSettings(min_strength=0.99 * strength))
    above = analyse_changes(desc, q, tr, vis, (W, H), settings=ChangeSettings(min_strength=1.01 * strength))
    assert below.found and below.events[0].points == found.events[0].points
    assert not above.found, above.message


def test_online_equals_offline():
    """Frames fed one at a time give the same events, states and curves as the whole clip, and
    events are reported as they complete, before the clip ends."""
    desc, q, tr, vis, obj = _scene(k=8, ramp=1)
    desc = torch.cat([desc, desc[-1:].repeat(26, 1, 1, 1) + 0.05 * torch.randn(26, D, H, W)])  # 40 frames
    tr = torch.cat([tr, tr[:, -1:].repeat(1, 26, 1)], 1)
    vis = torch.ones(tr.shape[:2], dtype=torch.bool)
    vis[5, 10:13] = False  # an occlusion
    offline = analyse_changes(desc, q, tr, vis, (W, H))
    online = OnlineChanges(q, (W, H))
    reported = {}
    for t in range(desc.shape[0]):
        for e in online.update(desc[t], tr[:, t], vis[:, t]):
            reported[e.index] = t
    result = online.finish()
    assert offline.found and [e.to_dict() for e in result.events] == [e.to_dict() for e in offline.events]
    assert reported and max(reported.values()) < desc.shape[0] - 1  # reported before the end
    assert torch.equal(result.point_states, offline.point_states)
    assert torch.allclose(result.prototypes.descriptors, offline.prototypes.descriptors)
    assert torch.allclose(result.score, offline.score, equal_nan=True)
    # bounded memory: without the curves nothing kept grows with the clip
    bounded = OnlineChanges(q, (W, H), keep_curves=False)
    for t in range(desc.shape[0]):
        bounded.update(desc[t], tr[:, t], vis[:, t])
        assert len(bounded.feats) <= bounded.settle and not bounded.curves["score"]
    assert [e.to_dict() for e in bounded.finish().events] == [e.to_dict() for e in offline.events]


def test_saved_states_label_another_clip(tmp_path):
    """States learnt on one clip (change at K), saved and loaded, label the frames of another clip
    of the same scene whose object changes at frame 4: before / after, frame by frame."""
    desc, q, tr, vis, obj = _scene()
    r = analyse_changes(desc, q, tr, vis, (W, H))
    path = r.save(tmp_path / "states.pt")
    states = load_states(path)
    assert torch.allclose(states.descriptors, r.prototypes.descriptors) and states.region == r.prototypes.region
    other, *_ = _scene(seed=0, k=4)
    other = other + 0.05 * torch.randn(other.shape, generator=torch.Generator().manual_seed(5))
    masks = obj.view(1, H, W).expand(T, -1, -1)
    labels, share = states.label_frames(other, masks, region=r.events[0].region)
    truth = (torch.arange(T) >= 4).long()
    assert torch.equal(labels, truth), labels
    assert (share > 0.5).all()
    with pytest.raises(DataError, match="no prototype of region 7"):
        states.label_frames(other, masks, region=7)
    with pytest.raises(DataError, match="not a saved states file"):
        torch.save({"x": 1}, tmp_path / "bad.pt")
        load_states(tmp_path / "bad.pt")


def test_settings_are_checked_when_read():
    """(The YAML block's keys and defaults are ChangeSettings' own: tests/test_settings.py.)"""
    with pytest.raises(DataError, match="unknown changes settings"):
        ChangeSettings.from_config({"penalty": 4.0})
    with pytest.raises(DataError, match="changes.persist"):
        ChangeSettings(persist=9, lookaround=6)
    with pytest.raises(DataError, match=r"changes.novelty must be in \[0, 1\].*got 1.5"):
        ChangeSettings.from_config({"novelty": 1.5})
    assert ChangeSettings.from_config({"threshold": 7}) == ChangeSettings(threshold=7.0)


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
    with pytest.raises(DataError, match="mask"):
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
    given = video_changes(
        d, frames, queries=queries, tracks=r.tracks, visible=r.visible, is_reference=torch.arange(9) >= 3
    )
    assert given.is_reference.tolist() == [False] * 3 + [True] * 6


# ---------------------------------------------------------------------------------------------
# real footage: DAVIS clips with changes and controls made from them


SEQUENCES = ["camel", "cows"]
# the command's describer: the weight-free classical one once it is registered, the random patch
# projection until then (the analysis' own tests below use the classical describer directly)
DESCRIBER = "classical" if "classical" in DENSE else "patches"


@pytest.fixture(scope="module")
def davis_tracks():
    """Per sequence: the unchanged clip and tracks of its mask points, tracked on it with the
    analysis' own tracker and the weight-free classical describer."""
    from hyperfeat.config import load_config
    from hyperfeat.data.videos.state_changes import davis_state_change_clip
    from hyperfeat.describe.daisy import DaisyDescriber
    from hyperfeat.video.changes import change_queries, track_for_changes
    from hyperfeat.video.run import describe_frames

    root = data_dir("davis2017")
    d = DaisyDescriber(load_config(overrides=["features.load_size=128"]))
    out = {}
    for seq in SEQUENCES:
        base = davis_state_change_clip(root, seq, None, num_frames=24, frame_size=160)
        size = (int(base.frames.shape[-1]), int(base.frames.shape[-2]))
        q, ref = change_queries(base.object[0], size, 16)
        desc = describe_frames(d, base.frames, cache_dir=None, progress=False)
        tracks, visible = track_for_changes(desc, q, size, d.cfg, ChangeSettings())
        out[seq] = (base, q, ref, tracks, visible)
    return d, out


@pytest.mark.parametrize("seq,kind", [(s, k) for s in SEQUENCES for k in ("colour", "colour-gradual", "part")])
def test_davis_change_is_found_at_k_on_the_changed_pixels(davis_tracks, seq, kind):
    from hyperfeat.data.videos.state_changes import apply_state_change
    from hyperfeat.video.changes import video_changes
    from hyperfeat.video.queries import in_mask

    d, clips = davis_tracks
    base, q, ref, tracks, visible = clips[seq]
    k = 12
    clip = apply_state_change(base.frames, base.object, k, kind, name=seq)
    r = video_changes(d, clip.frames, queries=q, is_reference=ref, tracks=tracks, visible=visible)
    near = [e for e in r.events if abs(e.start - k) <= 2]
    assert near, r.message
    best = max(near, key=lambda e: len(e.points))
    at = clip.change_end
    grown = F.max_pool2d(clip.changed[at][None, None].float(), 11, stride=1, padding=5)[0, 0] > 0
    assert in_mask(grown, r.tracks[best.points, at]).float().mean() >= 0.7  # on what changed
    if kind == "colour-gradual":
        assert best.end > best.start


@pytest.mark.parametrize("seq", SEQUENCES)
def test_davis_controls_give_no_event(davis_tracks, seq):
    """Exposure and white-balance jumps, a lighting ramp, focus blur and strong compression of
    real footage: no event on the object (the unchanged clip's own events are its baseline)."""
    from hyperfeat.data.videos.state_changes import apply_control
    from hyperfeat.video.changes import video_changes

    d, clips = davis_tracks
    base, q, ref, tracks, visible = clips[seq]
    frames = apply_control(base.frames, base.object, "ramp").frames
    assert (frames[-1].mean() / base.frames[-1].mean()) < 0.75  # the ramp is strong
    unchanged = video_changes(d, base.frames, queries=q, is_reference=ref, tracks=tracks, visible=visible)
    own = {(e.start, tuple(e.points)) for e in unchanged.events}
    for kind in ("exposure", "white-balance", "ramp", "blur", "compression"):
        clip = apply_control(base.frames, base.object, kind)
        r = video_changes(d, clip.frames, queries=q, is_reference=ref, tracks=tracks, visible=visible)
        extra = [e for e in r.events if (e.start, tuple(e.points)) not in own]
        assert not extra, f"{kind}: {r.message}"


def test_changes_command_end_to_end_on_davis(tmp_path, capsys):
    """``hyperfeat changes`` on a real clip whose object is painted at frame 12: pictures, JSON,
    CSV, states; ``--states`` of that run labels another clip of the scene (painted at frame 6)."""
    from PIL import Image

    from hyperfeat.cli import main
    from hyperfeat.data.videos.state_changes import davis_state_change_clip

    root = data_dir("davis2017")

    def write(clip, folder):
        folder.mkdir()
        for t, frame in enumerate(clip.frames):
            Image.fromarray((frame.permute(1, 2, 0) * 255).round().byte().numpy()).save(folder / f"{t:05d}.png")

    clip = davis_state_change_clip(root, "cows", "colour", change_frame=12, num_frames=24, frame_size=160)
    write(clip, tmp_path / "frames")
    Image.fromarray(clip.object[0].numpy().astype("uint8") * 255).save(tmp_path / "mask.png")
    out = tmp_path / "out"
    args = [
        "changes",
        str(tmp_path / "frames"),
        "--describer",
        DESCRIBER,
        "--mask",
        str(tmp_path / "mask.png"),
        "--grid",
        "16",
        "--out",
        str(out),
        "video.frame_size=160",
        "features.load_size=128",
    ]
    assert main(args) == 0
    for name in (
        "drift.png",
        "timeline.png",
        "overlay.mp4",
        "events.json",
        "events.csv",
        "changes.json",
        "event_0.png",
        "states.pt",
    ):
        assert (out / name).stat().st_size > 0, name
    events = json.loads((out / "events.json").read_text())
    assert events["num_frames"] == 24 and any(abs(e["start"] - 12) <= 2 for e in events["events"]), events["message"]
    full = json.loads((out / "changes.json").read_text())
    assert len(full["drift"]) == len(full["queries"]) and len(full["drift"][0]) == 24
    assert (out / "events.csv").read_text().splitlines()[0].startswith("event,frame,start,end,num_points")
    other = davis_state_change_clip(root, "cows", "colour", change_frame=6, num_frames=24, frame_size=160)
    write(other, tmp_path / "other")
    capsys.readouterr()
    assert (
        main(
            [
                "changes",
                str(tmp_path / "other"),
                "--describer",
                DESCRIBER,
                "--mask",
                str(tmp_path / "mask.png"),
                "--grid",
                "16",
                "--out",
                str(tmp_path / "out2"),
                "--states",
                str(out / "states.pt"),
                "video.frame_size=160",
                "features.load_size=128",
            ]
        )
        == 0
    )
    labels = json.loads((tmp_path / "out2" / "labels.json").read_text())
    truth = [int(t >= 6) for t in range(24)]
    assert sum(a == b for a, b in zip(labels["state"], truth)) >= 20, labels["state"]
    assert "states of" in capsys.readouterr().out
    assert main(["changes", str(tmp_path / "frames"), "--describer", DESCRIBER, "--out", str(out)]) == 2  # no points


def test_changes_command_reads_tracks_from_a_file(tmp_path, capsys):
    """``hyperfeat changes --tracks FILE --mask PNG``: the analysis along another tracker's tracks
    (here: tracks of the unchanged DAVIS clip) equals the API's on the same tracks, finds the
    texture swap at k on the object's points; a file that does not fit the video is one line."""
    from PIL import Image

    from hyperfeat.cli import main
    from hyperfeat.cli.changes import build_describer
    from hyperfeat.data.videos.state_changes import davis_state_change_clip
    from hyperfeat.video.changes import change_queries, video_changes
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
    queries, is_ref = change_queries(base.object[0], size, 10)
    tracks, visible = track(d, base.frames, queries, progress=False)
    path = save_tracks(tmp_path / "tracks.json", queries, tracks, visible, size=size)

    out = tmp_path / "out"
    args = [
        "changes",
        str(folder),
        "--describer",
        "local-stats",
        "--tracks",
        str(path),
        "--mask",
        str(tmp_path / "mask.png"),
        "--out",
        str(out),
        "video.frame_size=160",
        "video.tracker=window",
    ]
    assert main(args) == 0
    events = json.loads((out / "events.json").read_text())["events"]
    direct = video_changes(
        d, load_frames(d, folder), queries=queries, tracks=tracks, visible=visible, is_reference=is_ref
    )
    assert [(e["frame"], e["points"]) for e in events] == [(e.frame, e.points) for e in direct.events]
    num_obj = int((~is_ref).sum())
    best = max(direct.events, key=lambda e: len(e.points))
    assert abs(best.frame - k) <= 2 and all(
        p < num_obj for p in best.points
    )  # on the object (its background normalises)
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


def test_a_small_object_gets_a_finer_lattice_and_a_large_one_keeps_the_grid():
    """Lattice points inside the mask come first; an object with fewer than MIN_OBJECT_POINTS of
    them gets a lattice up to REFINE times finer (so a change of a part of it has points there)."""
    from hyperfeat.video.changes import MIN_OBJECT_POINTS, change_queries
    from hyperfeat.video.queries import grid_points, in_mask

    size = (160, 96)
    small = torch.zeros(96, 160, dtype=torch.bool)
    small[40:60, 70:90] = True  # 20 × 20 pixels: 4 points of a 16-lattice (10 × 6 px spacing)
    coarse = in_mask(small, grid_points(size, 16))
    assert 0 < int(coarse.sum()) < MIN_OBJECT_POINTS
    q, ref = change_queries(small, size, 16)
    obj = q[~ref, 1:]
    assert len(obj) >= MIN_OBJECT_POINTS and in_mask(small, obj).all()
    assert int(ref.sum()) == int((~coarse).sum())  # the background keeps the coarse lattice
    large = torch.zeros(96, 160, dtype=torch.bool)
    large[10:90, 20:140] = True
    q2, ref2 = change_queries(large, size, 16)
    torch.testing.assert_close(q2[~ref2, 1:], grid_points(size, 16)[in_mask(large, grid_points(size, 16))])


def test_pipeline_tracks_are_read_wherever_they_are_in_the_frame():
    """track_for_changes keeps the tracker's positions but not its visibility (a point that
    changes no longer looks like its query): a track is read wherever it is inside the frame."""
    from hyperfeat.config import load_config
    from hyperfeat.correspond.track import settings_from_config, track_descriptors
    from hyperfeat.video.changes import track_for_changes

    desc, q, _, _, obj = _scene()
    cfg = load_config(overrides=["backbone=tiny"])
    tracks, visible = track_for_changes(desc, q, (W, H), cfg, ChangeSettings(tracker="memory"))
    x, y = tracks[..., 0], tracks[..., 1]
    on_frame = (x >= -0.5) & (x <= W - 0.5) & (y >= -0.5) & (y <= H - 0.5)  # the frame's pixel area
    assert torch.equal(visible, on_frame)
    same, own, _ = track_descriptors(desc, q, (W, H), "memory", settings_from_config(cfg, "memory"))
    torch.testing.assert_close(tracks, same)
    hidden = ~own[obj][:, K:] & visible[obj][:, K:]
    assert hidden.any()  # the tracker itself would hide changed points that the analysis reads


def test_a_made_clip_is_written_as_frames_mask_and_truth(tmp_path, capsys):
    """``python -m hyperfeat.data.videos.state_changes``: the clip the README's end-to-end run
    reads — its frames are the clip's (PNG, 8 bits), its mask the frame-0 object, its truth the
    change's start and end; a bad kind is one line."""
    import numpy as np
    from PIL import Image

    from hyperfeat.data.videos.state_changes import davis_state_change_clip, main

    root = data_dir("davis2017")
    main(
        [str(root), "cows", "--kind", "colour-gradual", "--frames", "12", "--frame-size", "96", "--out", str(tmp_path)]
    )
    clip = davis_state_change_clip(root, "cows", "colour-gradual", num_frames=12, frame_size=96)
    frames = sorted((tmp_path / "frames").glob("*.png"))
    assert len(frames) == 12
    last = torch.from_numpy(np.array(Image.open(frames[-1]))).permute(2, 0, 1).float() / 255
    assert (last - clip.frames[-1]).abs().max() <= 0.5 / 255 + 1e-6
    mask = np.array(Image.open(tmp_path / "mask.png")) > 0
    assert (torch.from_numpy(mask) == clip.object[0]).all()
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert (truth["kind"], truth["start"], truth["end"]) == ("colour-gradual", 6, clip.change_end)
    with pytest.raises(SystemExit, match="--kind must be none or one of"):
        main([str(root), "cows", "--kind", "melted", "--out", str(tmp_path / "x")])


def test_objects_changing_at_different_moments_are_two_events_and_at_one_moment_one():
    """Two 6-cell objects in a static scene: changing at frames 8 and 15 they are two events, each
    on its own object's points; changing at the same frame they are one event (one moment of
    change) holding both — and each object is still its own connected region of changed points."""
    frames = 24
    g = torch.Generator().manual_seed(5)
    base = torch.randn(D, H, W, generator=g) + 1.0
    new = torch.randn(D, 1, 1, generator=g) * 2.0 - 1.0  # a material unlike the scene's
    noise = 0.05 * torch.randn(frames, D, H, W, generator=g)
    a = torch.zeros(H, W, dtype=torch.bool)
    a[1:3, 1:4] = True
    b = torch.zeros(H, W, dtype=torch.bool)
    b[5:7, 4:7] = True
    ys, xs = torch.meshgrid(torch.arange(H).float(), torch.arange(W).float(), indexing="ij")
    xy = torch.stack([xs.flatten(), ys.flatten()], 1)
    q = torch.cat([torch.zeros(len(xy), 1), xy], 1)
    tr, vis = xy[:, None].repeat(1, frames, 1), torch.ones(len(xy), frames, dtype=torch.bool)
    for k_a, k_b in ((8, 15), (10, 10)):
        desc = base[None].repeat(frames, 1, 1, 1) + noise
        desc[k_a:, :, a] = new[:, :, 0] + noise[k_a:, :, a]
        desc[k_b:, :, b] = new[:, :, 0] + noise[k_b:, :, b]
        r = analyse_changes(desc, q, tr, vis, (W, H))
        found = [(e.start, set(e.points)) for e in r.events]
        pa, pb = set(a.flatten().nonzero()[:, 0].tolist()), set(b.flatten().nonzero()[:, 0].tolist())
        if k_a != k_b:
            assert found == [(k_a, pa), (k_b, pb)], r.message
        else:
            assert found == [(k_a, pa | pb)], r.message
