"""The memory tracker's visibility cues and candidate choice on hand-made descriptors whose
similarities are known exactly: the uninformative-descriptor fallback of the calibrated margin,
the vote that fuses the cues, and the cycle-consistent choice between local and global best."""

from __future__ import annotations

from dataclasses import replace

import torch

from hyperfeat.correspond.track.memory import MemoryGroup, MemorySettings


def unit(*pairs: tuple[int, float], dim: int = 16) -> torch.Tensor:
    v = torch.zeros(dim)
    for i, value in pairs:
        v[i] = value
    return v / v.norm()


def background(h: int, w: int, dim: int = 16, seed: int = 0) -> torch.Tensor:
    """(D, h, w) unit descriptors that use only channels 3… (orthogonal to e0, e1, e2)."""
    g = torch.Generator().manual_seed(seed)
    desc = torch.randn(dim, h, w, generator=g)
    desc[:3] = 0
    return torch.nn.functional.normalize(desc, dim=0)


EXACT = MemorySettings(redetect=False, refine_radius=0, track_radius=1, cycle_select=False)


def test_margin_cue_votes_visible_when_the_descriptor_cannot_tell_the_point_from_a_distractor():
    first = background(6, 6)
    first[:, 1, 1] = unit((0, 1.0))  # the query at cell (1, 1)
    first[:, 4, 4] = unit((0, 1.0))  # an exact double elsewhere: the distractor level b is ~1
    second = first.clone()
    second[:, 1, 1] = unit((0, 0.9), (1, (1 - 0.81) ** 0.5))  # the point itself, cosine 0.9 < b
    # cues: cosine floor 0.95 fails (0.9); margin: v − b < 0, so it abstains and votes visible
    settings = replace(EXACT, cycle_check=False, min_similarity=0.95, visibility_quantile=1.0)
    query = torch.tensor([[1.0, 1.0]])
    _, visible, _ = MemoryGroup(first, query, settings).step(second)
    assert visible.tolist() == [True]  # one of two cues: a majority at visibility_vote 0.5
    _, visible, _ = MemoryGroup(first, query, replace(settings, min_margin=-10.0)).step(second)
    assert visible.tolist() == [False]  # no fallback: the margin fails too
    _, visible, _ = MemoryGroup(first, query, replace(settings, visibility_vote=1.0)).step(second)
    assert visible.tolist() == [False]  # the AND: the floor alone sinks it


def test_margin_is_read_between_the_distractor_level_and_the_first_tracked_frame():
    first = background(6, 6)
    first[:, 1, 1] = unit((0, 1.0))
    frames = []
    for cosine in (0.8, 0.6):  # the point's appearance fades: cosine 0.8, then 0.6 with the query
        frame = first.clone()
        frame[:, 1, 1] = unit((0, cosine), (1, (1 - cosine**2) ** 0.5))
        frames.append(frame)
    settings = replace(EXACT, cycle_check=False, visibility_threshold=1.0)
    group = MemoryGroup(first, torch.tensor([[1.0, 1.0]]), settings)
    b = float(group.background)
    assert abs(b) < 1e-6  # the background channels are orthogonal to the point: b = 0
    _, visible, confidence = group.step(frames[0])  # v = 0.8: margin (0.8 − b) / (0.8 − b) = 1
    assert visible.tolist() == [True]
    _, visible, _ = group.step(frames[1])  # margin (0.6 − b) / (0.8 − b) < 1: fails; floor 0.5 passes
    assert visible.tolist() == [True]  # one of two cues
    margin = (0.6 - b) / (0.8 - b)
    torch.testing.assert_close(group.margin_of(torch.tensor([0.6])), torch.tensor([margin]), atol=1e-5, rtol=0)
    group = MemoryGroup(first, torch.tensor([[1.0, 1.0]]), replace(settings, visibility_vote=1.0))
    assert group.step(frames[0])[1].tolist() == [True] and group.step(frames[1])[1].tolist() == [False]


def test_cycle_select_keeps_the_local_match_whose_cycle_returns():
    first = background(8, 8)
    first[:, 1, 1] = unit((0, 1.0))  # the query, e0, at cell xy (1, 1)
    lure = unit((0, 0.95), (1, (1 - 0.95**2) ** 0.5))
    first[:, 5, 4] = lure  # in the query frame the lure sits at xy (4, 5), 5 cells from the query
    second = background(8, 8, seed=1)
    second[:, 1, 2] = unit((0, 0.7), (2, (1 - 0.49) ** 0.5))  # the point, moved to xy (2, 1): cosine 0.7
    second[:, 5, 5] = lure  # cosine 0.95 > 0.7 + redetect_margin, but it matches back to (4, 5)
    settings = MemorySettings(track_radius=2, refine_radius=0, redetect=True, redetect_margin=0.2, fb_threshold=4.0)
    query = torch.tensor([[1.0, 1.0]])
    position, _, _ = MemoryGroup(first, query, replace(settings, cycle_select=True)).step(second)
    assert position.tolist() == [[2.0, 1.0]]
    position, _, _ = MemoryGroup(first, query, replace(settings, cycle_select=False)).step(second)
    assert position.tolist() == [[5.0, 5.0]]  # the plain rule jumps to the lure
