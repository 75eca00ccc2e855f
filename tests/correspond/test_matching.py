"""Matching: indices, rescaling, sampling, NN / soft-argmax / mutual NN, and the upsampled protocol."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hyperfeat.correspond.matching import (
    MutualMatches,
    cosine_similarity,
    descriptors_at,
    is_mutual,
    match_points,
    mutual_nearest_neighbours,
    nearest_neighbour,
    soft_argmax,
)
from hyperfeat.errors import DataError, HyperfeatError
from hyperfeat.geometry import points_to_indices, rescale_points


def _random_desc(d: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(d, h, w, generator=torch.Generator().manual_seed(seed))


def test_points_to_indices_rounds_clips_and_flattens_row_major():
    # grid h=3, w=5; (x, y) → y·5 + x after rounding (half to even) and clipping
    pts = torch.tensor([[0.0, 0.0], [4.0, 2.0], [1.4, 1.6], [2.5, 0.0], [3.5, 0.0], [-3.0, 7.0], [9.0, -1.0]])
    expected = [0, 14, 2 * 5 + 1, 2, 4, 2 * 5 + 0, 0 * 5 + 4]
    assert points_to_indices(pts, (3, 5)).tolist() == expected


def test_points_to_indices_rejects_nan_and_bad_shapes():
    with pytest.raises(DataError, match="finite"):
        points_to_indices(torch.tensor([[float("nan"), 0.0]]), (3, 3))
    with pytest.raises(DataError, match=r"\(\.\.\., 2\)"):
        points_to_indices(torch.zeros(4, 3), (3, 3))


def test_rescale_points_non_square():
    pts = torch.tensor([[10.0, 20.0], [0.0, 0.0]])
    out = rescale_points(pts, (100, 50), (300, 25))  # x·3, y·0.5
    assert torch.allclose(out, torch.tensor([[30.0, 10.0], [0.0, 0.0]]))
    assert torch.allclose(rescale_points(out, (300, 25), (100, 50)), pts)


def test_cosine_similarity_matches_hand_values_and_is_eps_safe():
    tgt = torch.zeros(2, 1, 3)  # three cells: (1,0), (0,2), (0,0)
    tgt[:, 0, 0] = torch.tensor([1.0, 0.0])
    tgt[:, 0, 1] = torch.tensor([0.0, 2.0])
    src = torch.tensor([[3.0, 3.0], [0.0, 0.0]])
    sim = cosine_similarity(src, tgt)
    assert sim.shape == (2, 1, 3)
    r = 2**-0.5
    assert torch.allclose(sim[0, 0], torch.tensor([r, r, 0.0]), atol=1e-6)
    assert torch.equal(sim[1], torch.zeros(1, 3))  # zero vectors give 0, not NaN


def test_descriptors_at_nearest_and_bilinear():
    desc = torch.arange(12.0).view(1, 3, 4)  # value = y·4 + x
    pts = torch.tensor([[1.0, 2.0], [1.5, 0.5], [3.0, 2.0], [-1.0, 5.0]])
    near = descriptors_at(desc, pts, "nearest")[:, 0]
    assert near.tolist() == [9.0, 2.0 * 0 + 2.0, 11.0, 8.0]  # (1.5, 0.5) rounds half to even → (2, 0)
    bil = descriptors_at(desc, pts, "bilinear")[:, 0]
    # a linear map is reproduced exactly; outside points are clamped to the grid
    assert torch.allclose(bil, torch.tensor([9.0, 0.5 * 4 + 1.5, 11.0, 8.0]))
    with pytest.raises(HyperfeatError, match="nearest"):
        descriptors_at(desc, pts, "bicubic")


def test_nearest_neighbour_finds_planted_descriptor_in_non_square_map():
    tgt = _random_desc(16, 5, 9)
    src_vector = torch.randn(1, 16)
    tgt[:, 3, 7] = src_vector[0] * 4.0  # scale does not matter for cosine
    sim = cosine_similarity(src_vector, tgt)
    assert nearest_neighbour(sim).tolist() == [[7.0, 3.0]]


def test_soft_argmax_recovers_sub_cell_position():
    sim = torch.full((1, 6, 8), -1.0)
    sim[0, 4, 2] = sim[0, 4, 3] = 1.0  # two equal peaks side by side → x = 2.5, y = 4
    out = soft_argmax(sim, temperature=0.01)
    assert torch.allclose(out, torch.tensor([[2.5, 4.0]]), atol=1e-4)
    # weights 3:1 between x=2 and x=3 → x = 2.25
    sim[0, 4, 3] = 1.0 - 0.01 * torch.log(torch.tensor(3.0))
    assert torch.allclose(soft_argmax(sim, temperature=0.01), torch.tensor([[2.25, 4.0]]), atol=1e-4)


def test_soft_argmax_window_ignores_distant_mode_and_constant_map_gives_centre():
    sim = torch.zeros(1, 9, 9)
    sim[0, 1, 1] = 1.0
    sim[0, 7, 7] = 0.999  # nearly as strong, far away
    whole = soft_argmax(sim, temperature=0.01)
    windowed = soft_argmax(sim, temperature=0.01, window=2)
    assert whole[0, 0] > 3.0  # pulled towards the second mode
    assert torch.allclose(windowed, torch.tensor([[1.0, 1.0]]), atol=1e-3)
    assert torch.allclose(soft_argmax(torch.zeros(2, 5, 7)), torch.tensor([[3.0, 2.0]] * 2))
    with pytest.raises(HyperfeatError, match="temperature"):
        soft_argmax(sim, temperature=0.0)


def test_mutual_nearest_neighbours_on_a_permutation():
    src = _random_desc(32, 4, 5)
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(1))
    tgt = src.reshape(32, 20)[:, perm].reshape(32, 4, 5)  # tgt cell k holds src cell perm[k]
    src_xy, tgt_xy = mutual_nearest_neighbours(src, tgt)
    assert src_xy.shape == tgt_xy.shape == (20, 2)
    src_idx = (src_xy[:, 1] * 5 + src_xy[:, 0]).long()
    tgt_idx = (tgt_xy[:, 1] * 5 + tgt_xy[:, 0]).long()
    assert torch.equal(perm[tgt_idx], src_idx)


def test_is_mutual_flags_a_many_to_one_match():
    # source cells x=0: a, x=1: c, x=2: a' ≈ a; target has only a and c → a' maps to a, which maps back to x=0
    src = torch.tensor([[1.0, 0.0, 0.9], [0.0, 0.0, 0.1], [0.0, 1.0, 0.0]]).view(3, 1, 3)
    tgt = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]).view(3, 1, 2)
    flags = is_mutual(src, tgt, torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]]))
    assert flags.tolist() == [True, True, False]
    src_xy, tgt_xy = mutual_nearest_neighbours(src, tgt)
    assert src_xy.tolist() == [[0.0, 0.0], [1.0, 0.0]] and tgt_xy.tolist() == [[0.0, 0.0], [1.0, 0.0]]
    # the same in image frames (points in a 30×10 image, cells of 10 px), as match_points sees them
    pixels = torch.tensor([[0.0, 0.0], [10.0, 0.0], [20.0, 0.0]])
    assert is_mutual(src, tgt, pixels, (30, 10), (20, 10), upsample=False).tolist() == [True, True, False]
    with pytest.raises(HyperfeatError, match="both"):
        is_mutual(src, tgt, pixels, (30, 10))


def _naive_upsampled_sim(src_desc, tgt_desc, points, src_wh, tgt_wh):
    """The reference's way: upsample both maps, normalise, index the rounded point, cosine."""
    up_s = F.interpolate(src_desc[None], size=(src_wh[1], src_wh[0]), mode="bilinear", align_corners=False)[0]
    up_t = F.interpolate(tgt_desc[None], size=(tgt_wh[1], tgt_wh[0]), mode="bilinear", align_corners=False)[0]
    d = src_desc.shape[0]
    idx = points_to_indices(points, (src_wh[1], src_wh[0]))
    vec = F.normalize(up_s.reshape(d, -1), dim=0)[:, idx].T
    return (vec @ F.normalize(up_t.reshape(d, -1), dim=0)).view(-1, tgt_wh[1], tgt_wh[0])


def test_match_points_upsampled_equals_naive_upsample_then_cosine():
    src, tgt = _random_desc(24, 5, 7, seed=2), _random_desc(24, 6, 4, seed=3)
    src_wh, tgt_wh = (56, 40), (36, 54)  # non-square, different per image
    pts = torch.tensor([[0.0, 0.0], [55.0, 39.0], [13.4, 22.6], [30.0, 7.0], [44.5, 18.5]])
    pred = match_points(src, tgt, pts, src_wh, tgt_wh)
    naive = _naive_upsampled_sim(src, tgt, pts, src_wh, tgt_wh)  # (N, H, W)
    assert pred.shape == (5, 2)
    # the predicted pixel is a maximum of the naive similarity (robust to float ties)
    at_pred = naive[torch.arange(5), pred[:, 1].long(), pred[:, 0].long()]
    assert torch.allclose(at_pred, naive.flatten(1).max(dim=1).values, atol=1e-5)


def test_match_points_planted_cell_lands_in_target_pixels_non_square():
    d = 8
    src = torch.zeros(d, 3, 3)
    src[0] = 1.0  # every source cell is e0
    tgt = torch.zeros(d, 4, 8)
    tgt[1] = 1.0  # every target cell is e1 ...
    tgt[:, 1, 6] = F.one_hot(torch.tensor(0), d).float()  # ... except cell (x=6, y=1), which is e0
    pts = torch.tensor([[10.0, 10.0]])
    # on the grid: cell (6, 1) of an 8×4 grid → (60, 10) in an 80×40 target image
    grid = match_points(src, tgt, pts, (30, 30), (80, 40), upsample=False)
    assert grid.tolist() == [[60.0, 10.0]]
    # upsampled to 80×40 (cells of 10 px, align_corners=False): the peak is the centre of the cell
    up = match_points(src, tgt, pts, (30, 30), (80, 40))
    assert up[0, 0] in (64.0, 65.0) and up[0, 1] in (14.0, 15.0)
    # the caller rescales load-size pixels to the original target size
    assert torch.allclose(rescale_points(up, (80, 40), (160, 120)), up * torch.tensor([2.0, 3.0]))


def test_match_points_soft_argmax_and_mutual_nn():
    desc = _random_desc(16, 6, 6, seed=4)
    pts = torch.tensor([[0.0, 0.0], [3.0, 2.0], [5.0, 5.0]])
    # identical maps, no upsampling: NN of every cell is itself, and it is mutual
    res = match_points(desc, desc, pts, (6, 6), (6, 6), method="mutual_nn", upsample=False)
    assert isinstance(res, MutualMatches)
    assert torch.equal(res.points_xy, pts) and res.mutual.all()
    sharp = match_points(desc, desc, pts, (6, 6), (6, 6), method="soft_argmax", upsample=False, temperature=1e-4)
    assert torch.allclose(sharp, pts, atol=1e-3)
    # upsampled to 48×48 (8 px cells): the NN lies within a cell of the query and maps back
    up = match_points(desc, desc, pts * 8, (48, 48), (48, 48), method="mutual_nn")
    assert up.mutual.all() and ((up.points_xy - pts * 8).abs() <= 8).all()
    assert is_mutual(desc, desc, pts * 8, (48, 48), (48, 48)).all()
    with pytest.raises(HyperfeatError, match="method"):
        match_points(desc, desc, pts, (6, 6), (6, 6), method="bogus")


def test_match_points_rejects_mismatched_descriptor_dims():
    with pytest.raises(DataError, match="descriptor dims"):
        match_points(torch.zeros(4, 2, 2), torch.zeros(5, 2, 2), torch.zeros(1, 2), (2, 2), (2, 2))
