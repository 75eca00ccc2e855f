"""PCK, DAVIS J&F and TAP-Vid metrics against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from hyperfeat.errors import ConfigError, DataError
from hyperfeat.eval.metrics.jandf import (
    JandF,
    boundary_f,
    boundary_tolerance,
    db_statistics,
    disk_dilate,
    region_similarity,
    seg2bmap,
)
from hyperfeat.eval.metrics.pck import PCK
from hyperfeat.eval.metrics.tapvid import TapVidMetrics
from hyperfeat.eval.table import format_pck


def _val(results: dict, key: str) -> float:
    return float(results[key])


# ============================================================================ PCK
#
# Pair 1 ("cat"): image 200×100 → img thresholds α·200 = 10, 20, 30; bbox (10, 20, 110, 70) is
# 100 wide, 50 high → bbox thresholds α·100 = 5, 10, 15. Offsets of the seven predictions and
# their distances: 0, 5, 10, 10.01, 20, 30, 50 (three exactly on a threshold: ≤ counts).
PAIR1_OFFSETS = [(0, 0), (3, 4), (6, 8), (10.01, 0), (12, 16), (24, 18), (30, 40)]
# correct counts: bbox@0.05: {0, 5} = 2, @0.1: +10 = 3, @0.15: +10.01 = 4
#                 img@0.05: {0, 5, 10} = 3, @0.1: +10.01, 20 = 5, @0.15: +30 = 6


def _update_pairs(metric: PCK) -> None:
    target = torch.full((7, 2), 50.0)
    metric.update(target + torch.tensor(PAIR1_OFFSETS), target, torch.tensor([10.0, 20, 110, 70]), (200, 100), "cat")
    # pair 2 ("dog"): 50×80 image → img thresholds 4, 8, 12; no box; distances 7, 100, and an
    # invalid NaN point that must be ignored → img correct 0, 1, 1 of 2
    pred2 = torch.tensor([[7.0, 0.0], [100.0, 0.0], [float("nan"), 0.0]])
    metric.update(pred2, torch.zeros(3, 2), None, (50, 80), "dog", valid=torch.tensor([True, True, False]))
    # pair 3 ("cat"): bbox 40×20 → 2, 4, 6; one point at distance 3 → bbox 0, 1, 1; img 1, 1, 1
    metric.update(torch.tensor([[3.0, 0.0]]), torch.zeros(1, 2), [0.0, 0.0, 40.0, 20.0], (200, 100), "cat")


def test_pck_pooled_per_image_bbox_img_and_categories():
    metric = PCK()
    _update_pairs(metric)
    r = metric.compute()
    expected = {
        # img: all three pairs, 7 + 2 + 1 = 10 points
        "pck_img@0.05": 4 / 10,
        "pck_img@0.1": 7 / 10,
        "pck_img@0.15": 8 / 10,
        "pck_img@0.05_per_image": (3 / 7 + 0 / 2 + 1) / 3,
        "pck_img@0.1_per_image": (5 / 7 + 1 / 2 + 1) / 3,
        "pck_img@0.15_per_image": (6 / 7 + 1 / 2 + 1) / 3,
        # bbox: pairs 1 and 3 only, 8 points
        "pck_bbox@0.05": 2 / 8,
        "pck_bbox@0.1": 4 / 8,
        "pck_bbox@0.15": 5 / 8,
        "pck_bbox@0.05_per_image": (2 / 7 + 0) / 2,
        "pck_bbox@0.1_per_image": (3 / 7 + 1) / 2,
        "pck_bbox@0.15_per_image": (4 / 7 + 1) / 2,
        "num_pairs": 3,
        "num_points": 10,
        "cat/cat/pck_img@0.1": 6 / 8,
        "cat/cat/pck_bbox@0.1": 4 / 8,
        "cat/cat/num_pairs": 2,
        "cat/dog/pck_img@0.1": 1 / 2,
        "cat/dog/pck_img@0.1_per_image": 1 / 2,
        "cat/dog/num_points": 2,
    }
    for key, value in expected.items():
        assert _val(r, key) == pytest.approx(value, abs=1e-6), key
    assert "cat/dog/pck_bbox@0.1" not in r  # no pair of that category had a box


def test_pck_merge_state_equals_single_metric_and_many_updates():
    whole, part_a, part_b = PCK(), PCK(), PCK()
    _update_pairs(whole)
    target = torch.full((7, 2), 50.0)
    part_a.update(target + torch.tensor(PAIR1_OFFSETS), target, torch.tensor([10.0, 20, 110, 70]), (200, 100), "cat")
    _update_pairs(part_b)
    part_b.merge_state(part_a)  # what a DDP gather does with "cat" states
    merged, single = part_b.compute(), whole.compute()
    assert _val(merged, "num_pairs") == 4 and set(merged) == set(single)
    many = PCK(alphas=(0.1,))
    for i in range(300):
        many.update(torch.tensor([[float(i % 3) * 10, 0.0]]), torch.zeros(1, 2), None, (100, 100), f"c{i % 3}")
    r = many.compute()
    # distances 0, 10, 20 vs threshold 10: categories c0, c1 correct, c2 not
    assert _val(r, "pck_img@0.1") == pytest.approx(2 / 3)
    assert _val(r, "cat/c1/pck_img@0.1") == 1.0 and _val(r, "cat/c2/pck_img@0.1") == 0.0
    assert _val(r, "cat/c0/num_pairs") == 100
    many.reset()
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert _val(many.compute(), "num_pairs") == 0


def test_pck_rejects_bad_input():
    metric = PCK()
    with pytest.raises(DataError, match="bbox_xyxy"):
        metric.update(torch.zeros(1, 2), torch.zeros(1, 2), [10.0, 10.0, 5.0, 20.0], (100, 100), "cat")
    with pytest.raises(DataError, match=r"\(N, 2\)"):
        metric.update(torch.zeros(2, 2), torch.zeros(3, 2), None, (100, 100), "cat")
    with pytest.raises(ConfigError, match="alphas"):
        PCK(alphas=(0.1, -1.0))


def test_format_pck_is_an_aligned_table():
    metric = PCK()
    _update_pairs(metric)
    table = format_pck(metric.compute())
    lines = table.splitlines()
    assert set(lines[2]) <= {"-", "|"}  # the rule under the header
    assert [line.split()[0] for line in lines[3:]] == ["all", "cat", "dog"]
    assert len({len(line) for line in lines[1:]}) == 1  # header, rule and rows have the same width
    assert len({line.index("|") for line in lines}) == 1  # the block separator lines up
    assert "70.00" in lines[3] and "bbox@0.1" in lines[1]
    assert "per keypoint" in lines[0] and "per image" in lines[0]


# ============================================================================ J&F


def _square(size: int, top: int, left: int, side: int) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[top : top + side, left : left + side] = True
    return mask


def test_region_similarity_known_iou_and_empty_masks():
    a = _square(20, 0, 0, 10)
    b = _square(20, 0, 5, 10)  # overlap 10×5 = 50, union 150
    empty = np.zeros((20, 20), dtype=bool)
    j = region_similarity(np.stack([a, empty, a]), np.stack([b, empty, empty]))
    assert j.tolist() == pytest.approx([1 / 3, 1.0, 0.0])


def test_seg2bmap_of_a_square_is_a_half_pixel_shifted_ring():
    seg = _square(12, 3, 4, 5)  # rows 3..7, cols 4..8
    ring = np.zeros((12, 12), dtype=bool)
    ring[2:8, 3:9] = True  # rows 2..7, cols 3..8: outside on top/left, inside on bottom/right
    ring[3:7, 4:8] = False
    assert np.array_equal(seg2bmap(seg), ring)


@pytest.mark.parametrize("radius", [1, 3, 8])
def test_disk_dilate_equals_scipy_with_a_disk(radius):
    rng = np.random.default_rng(radius)
    mask = rng.random((40, 57)) > 0.98
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    disk = xx**2 + yy**2 <= radius**2
    assert np.array_equal(disk_dilate(mask, radius), ndimage.binary_dilation(mask, structure=disk))


def test_boundary_tolerance_is_ceil_of_fraction_of_diagonal():
    assert boundary_tolerance((100, 100)) == 2  # 0.008 · 141.4 = 1.13
    assert boundary_tolerance((480, 854)) == 8  # 0.008 · 979.6 = 7.84
    assert boundary_tolerance((480, 854), bound_th=3) == 3


def test_boundary_f_shifted_square_below_and_above_tolerance():
    # 100×100 frame → tolerance 2 px. Square rows/cols 30..69 → boundary ring rows/cols 29..69,
    # 160 pixels.
    gt = _square(100, 30, 30, 40)
    assert boundary_f(gt, gt) == 1.0
    assert boundary_f(gt, np.roll(gt, 2, axis=1)) == 1.0  # every pixel within 2 px
    # shifted by 4 px right: the unmatched pixels of the gt ring are its whole left column (41),
    # the top and bottom pixels at col 30 (3 px from the shifted ring, 2), and the right column
    # rows 32..66 (35; rows 30, 31, 67, 68 are within 2 px of the shifted top/bottom rows).
    # 160 − 78 = 82 matched; by symmetry precision = recall = 82/160.
    assert boundary_f(gt, np.roll(gt, 4, axis=1)) == pytest.approx(82 / 160)


def test_boundary_f_equals_full_frame_dilation_on_random_blobs():
    # boundary_f crops to the boundaries before dilating; the toolkit dilates the whole frame
    rng = np.random.default_rng(7)
    for _ in range(3):
        gt = ndimage.binary_opening(ndimage.gaussian_filter(rng.random((60, 90)), 3) > 0.5)
        pred = np.roll(gt, tuple(rng.integers(-6, 7, size=2)), axis=(0, 1))
        r = boundary_tolerance(gt.shape)
        yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
        disk = xx**2 + yy**2 <= r**2
        gb, pb = seg2bmap(gt), seg2bmap(pred)
        precision = (pb & ndimage.binary_dilation(gb, disk)).sum() / pb.sum()
        recall = (gb & ndimage.binary_dilation(pb, disk)).sum() / gb.sum()
        assert boundary_f(gt, pred) == pytest.approx(2 * precision * recall / (precision + recall))


def test_boundary_f_empty_masks():
    empty, sq = np.zeros((50, 50), dtype=bool), _square(50, 10, 10, 10)
    assert boundary_f(empty, empty) == 1.0
    assert boundary_f(sq, empty) == 0.0  # nothing predicted: precision 1, recall 0
    assert boundary_f(empty, sq) == 0.0


def test_db_statistics_mean_recall_decay_bins():
    values = np.arange(8) / 10  # bins of the toolkit: [0:3], [2:5], [4:6], [5:8]
    mean, recall, decay = db_statistics(values)
    assert mean == pytest.approx(0.35)
    assert recall == pytest.approx(2 / 8)  # 0.6, 0.7
    assert decay == pytest.approx(np.mean([0.0, 0.1, 0.2]) - np.mean([0.5, 0.6, 0.7]))


def _two_object_sequence() -> tuple[np.ndarray, np.ndarray]:
    """6 frames, 100×100, object 1 and 2 squares; frames 0 and 5 are predicted empty (not scored);
    object 2 is perfect in frames 1–4; object 1 is perfect in 1–2 and missing in 3–4."""
    frame = np.zeros((100, 100), dtype=np.int64)
    frame[_square(100, 10, 10, 30)] = 1
    frame[_square(100, 60, 50, 30)] = 2
    gt = np.stack([frame] * 6)
    pred = gt.copy()
    pred[0] = pred[5] = 0
    pred[3:5][pred[3:5] == 1] = 0
    return pred, gt


def test_jandf_per_object_stats_and_first_last_frames_excluded():
    pred, gt = _two_object_sequence()
    metric = JandF()
    metric.update(torch.from_numpy(pred), torch.from_numpy(gt), "bike")
    r = metric.compute()
    # object 1: J = F = [1, 1, 0, 0] → mean 0.5, recall 0.5, decay 1; object 2: all 1
    assert _val(r, "obj/bike_1/J-Mean") == pytest.approx(0.5)
    assert _val(r, "obj/bike_1/F-Mean") == pytest.approx(0.5)
    assert _val(r, "obj/bike_2/J&F") == pytest.approx(1.0)  # frames 0 and 5 would lower it
    assert _val(r, "J-Mean") == pytest.approx(0.75) and _val(r, "F-Mean") == pytest.approx(0.75)
    assert _val(r, "J&F") == pytest.approx(0.75)
    assert _val(r, "J-Recall") == pytest.approx(0.75)
    assert _val(r, "J-Decay") == pytest.approx(0.5) and _val(r, "F-Decay") == pytest.approx(0.5)
    assert _val(r, "seq/bike/J&F") == pytest.approx(0.75) and _val(r, "num_objects") == 2


def test_jandf_foreground_only_merges_objects_and_void_is_background():
    pred, gt = _two_object_sequence()
    gt[:, 0, :] = 255  # void row: background, as the toolkit
    swapped = np.where(pred == 1, 2, np.where(pred == 2, 1, 0))
    swapped[3:5] = np.where(gt[3:5] == 255, 0, gt[3:5])  # frames 3-4 perfect
    multi, fg = JandF(), JandF(foreground_only=True)
    multi.update(swapped, gt, "dogs")
    fg.update(swapped, gt, "dogs")
    assert _val(multi.compute(), "J-Mean") == pytest.approx(0.5)  # frames 1-2 swapped: J = 0
    fg_r = fg.compute()
    assert _val(fg_r, "J&F") == pytest.approx(1.0) and _val(fg_r, "num_objects") == 1


def test_jandf_rejects_bad_sequences():
    metric = JandF()
    with pytest.raises(DataError, match="T >= 3"):
        metric.update(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)), "short")
    gt = np.ones((3, 4, 4), dtype=np.int64)
    with pytest.raises(DataError, match="0..1"):
        metric.update(gt * 3, gt, "extra")


# ============================================================================ TAP-Vid

W, H = 512, 128  # → 256×256: x·0.5, y·2


def _tracks(n: int = 3, t: int = 6, seed: int = 0):
    """Random gt tracks (N, T, 2) in the W×H frame, a few occlusions, query i at frame i."""
    rng = np.random.default_rng(seed)
    gt = rng.uniform(20, 100, size=(n, t, 2))
    occluded = np.zeros((n, t), dtype=bool)
    occluded[0, 3] = True
    occluded[n - 1, 4] = True
    frames = np.arange(n) % t
    query = np.concatenate([frames[:, None], gt[np.arange(n), frames]], axis=1)  # (t, x, y)
    return query, gt, occluded


def _tapvid(query, gt, occ, pred, pred_occ, mode="first") -> dict:
    metric = TapVidMetrics(query_mode=mode)
    metric.update(query, gt, occ, pred, pred_occ, (W, H))
    return {k: float(v) for k, v in metric.compute().items()}


def test_tapvid_perfect_prediction_scores_one():
    query, gt, occ = _tracks()
    r = _tapvid(query, gt, occ, gt.copy(), occ.copy())
    for key in ("occlusion_accuracy", "average_jaccard", "average_pts_within_thresh", "jaccard_1", "pts_within_1"):
        assert r[key] == 1.0, key


def test_tapvid_shift_is_measured_in_the_256_frame():
    query, gt, occ = _tracks()
    # 6 px in x of a 512-wide frame = 3 px at 256: within 4, 8, 16 only
    r = _tapvid(query, gt, occ, gt + np.array([6.0, 0.0]), occ)
    assert [r[f"pts_within_{d}"] for d in (1, 2, 4, 8, 16)] == [0, 0, 1, 1, 1]
    assert [r[f"jaccard_{d}"] for d in (1, 2, 4, 8, 16)] == [0, 0, 1, 1, 1]
    assert r["average_pts_within_thresh"] == pytest.approx(0.6) and r["average_jaccard"] == pytest.approx(0.6)
    # 2 px in y of a 128-high frame = exactly 4 px at 256: not within 4 (strict <), within 8
    r = _tapvid(query, gt, occ, gt + np.array([0.0, 2.0]), occ)
    assert [r[f"pts_within_{d}"] for d in (1, 2, 4, 8, 16)] == [0, 0, 0, 1, 1]


def test_tapvid_all_predicted_occluded():
    # queries at t = 0 and 1 ("first": frames 1-3 and 2-3 scored); occluded among scored frames:
    # point 0 at 1 and 3, point 1 at 2 → 3 of 5
    gt = np.full((2, 4, 2), 50.0)
    occ = np.array([[False, True, False, True], [False, False, True, False]])
    query = np.array([[0, 50.0, 50.0], [1, 50.0, 50.0]])
    r = _tapvid(query, gt, occ, gt.copy(), np.ones_like(occ))
    assert r["occlusion_accuracy"] == pytest.approx(3 / 5)
    assert r["average_jaccard"] == 0.0
    assert r["pts_within_1"] == 1.0  # positions are right; pts_within ignores predicted occlusion


def test_tapvid_query_modes_score_the_right_frames():
    gt = np.full((1, 5, 2), 50.0)
    occ = np.zeros((1, 5), dtype=bool)
    query = np.array([[2, 50.0, 50.0]])
    pred = gt.copy()
    pred[0, :3] = 200.0  # wrong before and at the query frame
    first = _tapvid(query, gt, occ, pred, occ, "first")
    strided = _tapvid(query, gt, occ, pred, occ, "strided")
    assert first["average_jaccard"] == 1.0 and first["pts_within_16"] == 1.0
    # strided scores frames 0, 1, 3, 4: 2 of 4 within; Jaccard = 2 / (4 visible + 2 false positives)
    assert strided["pts_within_16"] == pytest.approx(0.5)
    assert strided["jaccard_16"] == pytest.approx(2 / 6)


def test_tapvid_averages_per_video_then_over_videos():
    metric = TapVidMetrics()
    query, gt, occ = _tracks(n=1)
    metric.update(query, gt, occ, gt, occ, (W, H))  # perfect, 1 point
    query, gt, occ = _tracks(n=3, seed=1)
    metric.update(
        torch.from_numpy(query),
        torch.from_numpy(gt),
        torch.from_numpy(occ),
        torch.from_numpy(gt + 1000.0),
        torch.from_numpy(occ),
        (W, H),
    )  # all wrong, 3 points
    r = metric.compute()
    assert float(r["pts_within_16"]) == pytest.approx(0.5)  # pooled over points would be lower
    assert float(r["num_videos"]) == 2


def test_tapvid_rejects_bad_input():
    query, gt, occ = _tracks()
    metric = TapVidMetrics()
    with pytest.raises(DataError, match="query frames"):
        metric.update(query + np.array([10, 0, 0]), gt, occ, gt, occ, (W, H))
    with pytest.raises(DataError, match=r"\(N, T, 2\)"):
        metric.update(query, gt, occ, gt[:, :3], occ, (W, H))
    with pytest.raises(ConfigError, match="query_mode"):
        TapVidMetrics(query_mode="last")
