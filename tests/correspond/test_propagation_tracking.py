"""Video algorithms on synthetic videos with known motion: label propagation, keypoint
propagation and point tracking, plus their bad-input errors.

Descriptor stand-ins: a fixed random conv of the frame (tanh, average-pooled to a grid,
mean-removed per frame), on smooth random textures or a real DAVIS frame translated by a few
pixels per frame.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hyperfeat.correspond.propagation import (
    heatmap_peaks,
    keypoint_heatmaps,
    labels_to_mask,
    mask_to_labels,
    propagate_keypoints,
    propagate_labels,
    propagate_mask,
)
from hyperfeat.correspond.track import TRACKERS, track_descriptors
from hyperfeat.correspond.track.window import WindowSettings
from hyperfeat.errors import DataError, HyperfeatError
from hyperfeat.geometry import cells_to_pixels, pixels_to_cells
from tests.helpers import data_dir


def texture(height: int, width: int, sigma: float = 3.5, seed: int = 0) -> torch.Tensor:
    """Smooth random RGB texture (3, H, W) in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.rand(1, 3, height, width, generator=gen)
    r = int(3 * sigma)
    kernel = torch.exp(-(torch.arange(-r, r + 1).float() ** 2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).repeat(3, 1, 1, 1)  # (3, 1, 1, 2r+1)
    out = F.conv2d(F.pad(noise, (r, r, 0, 0), mode="reflect"), kernel, groups=3)
    out = F.conv2d(F.pad(out, (0, 0, r, r), mode="reflect"), kernel.transpose(-1, -2), groups=3)
    return ((out - out.amin()) / (out.amax() - out.amin()))[0]


def random_conv_describe(stride: int = 4, kernel: int = 9, dim: int = 64, seed: int = 0):
    """A fixed random conv net: (B, 3, H, W) → (B, dim, H/stride, W/stride)."""
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(dim, 3, kernel, kernel, generator=gen) / kernel

    def describe(frames: torch.Tensor) -> torch.Tensor:
        out = torch.tanh(F.conv2d(frames - 0.5, weight, padding=kernel // 2))
        out = F.avg_pool2d(out, stride)
        return out - out.mean(dim=(2, 3), keepdim=True)

    return describe


def translating_video(canvas: torch.Tensor, size: tuple[int, int], steps: int, velocity: tuple[int, int]):
    """Frames (T, 3, H, W) of ``canvas`` whose content moves by ``velocity`` (vx, vy) px per frame."""
    width, height = size
    vx, vy = velocity
    x0, y0 = vx * (steps - 1), vy * (steps - 1)  # crop origin of frame 0
    return torch.stack(
        [canvas[:, y0 - vy * t : y0 - vy * t + height, x0 - vx * t : x0 - vx * t + width] for t in range(steps)]
    )


def moving_object_video(steps: int = 6):
    """A textured 48×64 rectangle moving (4, 2) px per frame over a smoother, fainter background
    (so the background it uncovers looks like background, as in real videos)."""
    height, width = 112, 160
    background = 0.5 + 0.5 * (texture(height, width, sigma=8.0, seed=1) - 0.5)
    patch = texture(48, 64, seed=2)
    frames, masks = [], []
    for t in range(steps):
        frame = background.clone()
        mask = torch.zeros(height, width, dtype=torch.long)
        x0, y0 = 24 + 4 * t, 28 + 2 * t
        frame[:, y0 : y0 + 48, x0 : x0 + 64] = patch
        mask[y0 : y0 + 48, x0 : x0 + 64] = 3  # object id 3
        frames.append(frame)
        masks.append(mask)
    return torch.stack(frames), torch.stack(masks), (width, height)


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum()) / max(1.0, float((a | b).sum()))


# ---------------------------------------------------------------------------------------------
# conversions


def test_pixel_cell_scaling_is_plain():
    points = torch.tensor([[0.0, 0.0], [100.0, 50.0]])
    cells = pixels_to_cells(points, (200, 100), (25, 50))  # grid (h, w)
    assert torch.allclose(cells, torch.tensor([[0.0, 0.0], [25.0, 12.5]]))
    assert torch.allclose(cells_to_pixels(cells, (200, 100), (25, 50)), points)


def test_mask_labels_round_trip_keeps_ids():
    mask = torch.zeros(64, 96, dtype=torch.long)
    mask[8:40, 16:56] = 2
    mask[44:60, 60:90] = 5
    labels, ids = mask_to_labels(mask, (24, 16))  # grid (w, h) = (24, 16)
    assert ids == [2, 5] and labels.shape == (3, 16, 24)
    assert torch.allclose(labels.sum(0), torch.ones(16, 24), atol=1e-5)
    back = labels_to_mask(labels, (96, 64), ids)
    assert back.dtype == torch.int64 and back.shape == (64, 96)
    assert set(back.unique().tolist()) == {0, 2, 5}
    for obj in (2, 5):
        assert iou(back == obj, mask == obj) > 0.85
    stacked = labels_to_mask(labels[None].repeat(2, 1, 1, 1), (96, 64), ids)
    assert stacked.shape == (2, 64, 96) and torch.equal(stacked[1], back)


def test_heatmap_peak_is_subcell():
    cells = torch.tensor([[3.3, 2.0], [0.0, 4.6]])
    maps = keypoint_heatmaps(cells, (8, 10), sigma=0.7)  # (J, h, w)
    assert maps.shape == (2, 8, 10)
    assert torch.allclose(heatmap_peaks(maps), cells, atol=0.1)
    assert torch.equal(heatmap_peaks(maps, soft=False), torch.tensor([[3.0, 2.0], [0.0, 5.0]]))


# ---------------------------------------------------------------------------------------------
# label propagation


def brute_force_propagation(desc, first, queue_length, radius, topk, temperature):
    """The protocol written out cell by cell (slow; tiny inputs only)."""
    desc = F.normalize(desc, dim=1)
    num_frames, _, h, w = desc.shape
    out = [first]
    for t in range(1, num_frames):
        queue = [0, *range(max(1, t - queue_length), t)]
        frame = torch.zeros_like(first)
        for i in range(h):
            for j in range(w):
                sims, labels = [], []
                for q in queue:
                    for y in range(h):
                        for x in range(w):
                            if radius is None or (abs(y - i) <= radius and abs(x - j) <= radius):
                                sims.append(float(desc[t, :, i, j] @ desc[q, :, y, x]))
                                labels.append(out[q][:, y, x])
                sims_t = torch.tensor(sims)
                values, index = sims_t.topk(min(topk, len(sims)))
                weights = torch.softmax(values / temperature, 0)
                frame[:, i, j] = sum(wt * labels[k] for wt, k in zip(weights, index.tolist()))
        out.append(frame)
    return torch.stack(out)


@pytest.mark.parametrize("radius", [1, None])
def test_propagate_labels_matches_the_protocol(radius):
    gen = torch.Generator().manual_seed(0)
    desc = torch.randn(4, 8, 5, 6, generator=gen)
    first = torch.softmax(torch.randn(3, 5, 6, generator=gen), dim=0)
    got = propagate_labels(desc, first, queue_length=2, radius=radius, topk=4, temperature=0.1)
    want = brute_force_propagation(desc, first, 2, radius, 4, 0.1)
    assert got.shape == (4, 3, 5, 6)
    assert torch.allclose(got, want, atol=1e-5)


def test_static_video_keeps_its_labels():
    frames, masks, size = moving_object_video(1)
    desc = random_conv_describe()(frames).repeat(4, 1, 1, 1)
    pred = propagate_mask(desc, masks[0], size, queue_length=2, radius=4, topk=5, temperature=0.05)
    assert pred.shape == (4, size[1], size[0])
    assert torch.equal(pred[0], masks[0])
    assert min(iou(p == 3, masks[0] == 3) for p in pred) > 0.95


def test_propagated_mask_follows_a_moving_object():
    frames, masks, size = moving_object_video(6)
    desc = random_conv_describe()(frames)  # (T, 64, 28, 40)
    pred = propagate_mask(desc, masks[0], size, queue_length=3, radius=4, topk=5, temperature=0.05)
    assert pred.shape == masks.shape and pred.dtype == torch.int64
    assert set(pred.unique().tolist()) <= {0, 3}
    scores = [iou(pred[t] == 3, masks[t] == 3) for t in range(len(masks))]
    assert min(scores) > 0.85, scores
    # the object moved 20 px: a mask that stayed put would score far lower
    assert iou(masks[0] == 3, masks[-1] == 3) < 0.65


def test_keypoints_follow_a_moving_object():
    frames, _, size = moving_object_video(6)
    desc = random_conv_describe()(frames)
    points = torch.tensor([[40.0, 40.0], [60.0, 50.0], [72.0, 60.0]])  # inside the object
    tracks = propagate_keypoints(desc, points, size, queue_length=3, radius=4, topk=5, temperature=0.05)
    assert tracks.shape == (6, 3, 2)
    assert torch.equal(tracks[0], points)
    truth = points[None] + torch.arange(6.0)[:, None, None] * torch.tensor([4.0, 2.0])
    error = (tracks - truth).norm(dim=-1)
    assert error.max() < 4.0, error  # one cell is 4 px


# ---------------------------------------------------------------------------------------------
# point tracking


def track_points(desc, queries, size, **settings):
    """The window tracker with ``settings`` → tracks (N, T, 2), visible (N, T)."""
    tracks, visible, _ = track_descriptors(desc, queries, size, "window", WindowSettings(**settings))
    return tracks, visible


def test_tracks_follow_translation_and_leaving_points_turn_invisible():
    size, steps, velocity = (128, 96), 8, (3, 1)
    frames = translating_video(texture(120, 160), size, steps, velocity)
    desc = random_conv_describe()(frames)  # (8, 64, 24, 32)
    queries = torch.tensor([[0, 30.0, 40.0], [0, 64.0, 50.0], [3, 50.0, 30.0], [7, 90.0, 70.0], [0, 117.0, 60.0]])
    tracks, visible = track_points(desc, queries, size, track_radius=4, cycle_threshold=1.5, min_similarity=0.5)
    assert tracks.shape == (5, steps, 2) and visible.shape == (5, steps) and visible.dtype == torch.bool
    times = torch.arange(steps, dtype=torch.float32)
    truth = queries[:, None, 1:] + (times[None, :, None] - queries[:, None, :1]) * torch.tensor(velocity).float()
    error = (tracks - truth).norm(dim=-1)  # (N, T)
    for n, t in enumerate(queries[:, 0].long().tolist()):
        assert torch.equal(tracks[n, t], queries[n, 1:]) and visible[n, t]  # the query itself
    assert error[:4].max() < 3.0, error  # interior points, forward and backward
    assert visible[:4].float().mean() > 0.8
    # the last point crosses x = 127.5 (the frame's right edge) after frame 3
    leaving = truth[4, :, 0] > size[0] - 0.5
    assert leaving[4:].all() and not visible[4, leaving].any()


def test_tracks_on_a_real_translated_frame():
    root = data_dir("davis2017")
    from hyperfeat.images import load_image, pil_to_tensor

    image = load_image(root / "JPEGImages" / "480p" / "bike-packing" / "00000.jpg")
    image = image.resize((364, 192))
    size, steps, velocity = (128, 96), 6, (3, 2)
    canvas = pil_to_tensor(image)[:, 30:150, 80:240]
    frames = translating_video(canvas, size, steps, velocity)
    desc = random_conv_describe(stride=2, kernel=13)(frames)  # (6, 64, 48, 64)
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(16, 2, generator=gen) * torch.tensor([70.0, 40.0]) + 12
    queries = torch.cat([torch.zeros(16, 1), xy], dim=1)
    tracks, visible = track_points(desc, queries, size, track_radius=4, cycle_threshold=1.5, min_similarity=0.5)
    truth = xy[:, None] + torch.arange(steps, dtype=torch.float32)[None, :, None] * torch.tensor(velocity).float()
    error = (tracks - truth).norm(dim=-1)
    assert error.median() < 2.0 and (error < 4.0).float().mean() > 0.85, error
    assert visible.float().mean() > 0.7


# ---------------------------------------------------------------------------------------------
# errors


def test_bad_inputs_raise_clear_errors():
    desc = torch.randn(4, 8, 6, 8)
    size = (64, 48)
    with pytest.raises(DataError, match="empty video"):
        track_points(torch.zeros(0, 8, 6, 8), torch.zeros(1, 3), size)
    with pytest.raises(DataError, match="empty video"):
        propagate_labels(torch.zeros(0, 8, 6, 8), torch.zeros(2, 6, 8))
    with pytest.raises(DataError, match=r"query 1 .*t=4.*\[0, 3\]"):
        track_points(desc, torch.tensor([[0, 5.0, 5.0], [4, 5.0, 5.0]]), size)
    with pytest.raises(DataError, match=r"query 0 .*outside the frame.*\[-0.5, 63.5\]"):
        track_points(desc, torch.tensor([[1, 70.0, 5.0]]), size)
    with pytest.raises(DataError, match=r"query 0 .*outside the frame"):
        track_points(desc, torch.tensor([[1, 5.0, -3.0]]), size)
    with pytest.raises(DataError, match=r"\(N, 3\)"):
        track_points(desc, torch.zeros(2, 2), size)
    with pytest.raises(DataError, match=r"\(5, 7\) \(h, w\).*\(6, 8\)"):
        propagate_labels(desc, torch.zeros(2, 5, 7))
    with pytest.raises(DataError, match=r"\(70, 40\) \(W, H\).*\(64, 48\)"):
        propagate_mask(desc, torch.zeros(40, 70, dtype=torch.long), size)
    with pytest.raises(DataError, match=r"\(T, D, h, w\)"):
        propagate_keypoints(torch.randn(8, 6, 8), torch.zeros(1, 2), size)
    with pytest.raises(DataError, match=r"\(J, 2\)"):
        propagate_keypoints(desc, torch.zeros(3), size)
    assert issubclass(DataError, HyperfeatError)


def test_trackers_reject_points_outside_the_frame_and_misfit_descriptors():
    from hyperfeat.correspond.track.memory import MemoryGroup, MemorySettings

    desc = torch.nn.functional.normalize(torch.randn(4, 8, 6, 8), dim=1)  # (T, D, h, w)
    size = (64, 48)
    far = torch.tensor([[0, 5.0, 5.0], [1, 5000.0, 5000.0]])
    for name in TRACKERS:
        with pytest.raises(
            DataError, match=r"query 1 at \(x, y\)=\(5000, 5000\) is outside the frame.*\(W, H\)=\(64, 48\)"
        ):
            track_descriptors(desc, far, size, name)
        with pytest.raises(DataError, match=r"\(T, D, h, w\).*got \(8, 6, 8\)"):
            track_descriptors(desc[0], far[:1], size, name)  # one frame's descriptors, not a video's
    group = MemoryGroup(desc[0], torch.tensor([[2.0, 3.0]]), MemorySettings())
    with pytest.raises(DataError, match=r"\(D, h, w\) with D = 8.*got shape \(4, 6, 8\)"):
        group.step(desc[1, :4])  # another describer's channel count
    with pytest.raises(DataError, match=r"\(5, 8\) cells after \(6, 8\)"):
        group.step(desc[1, :, :5])  # another grid
    position, visible, confidence = group.step(desc[1])  # the errors left the group usable
    assert position.shape == (1, 2) and visible.shape == confidence.shape == (1,)
