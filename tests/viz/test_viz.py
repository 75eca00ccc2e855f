"""Pictures: mixing-weight heat map, correspondences, tracks, videos, DAVIS masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from hyperfeat.io import write_video
from hyperfeat.viz.correspondences import draw_correspondences
from hyperfeat.viz.figures import distinct_colours, figure_to_array
from hyperfeat.viz.masks import davis_palette, overlay_masks, palette_mask
from hyperfeat.viz.mixing import MAX_CELL_GID, MixingPanel, plot_mixing_comparison, plot_mixing_weights
from hyperfeat.viz.tracks import draw_tracks, marker_radius
from tests.helpers import data_dir

LABELS = [49, 45, 40, 35, 30, 25, 20, 15, 10, 5, 0]  # the paper's save order: cleanest first
LAYERS = [f"up_blocks.{i}.resnets.{j}" for i in range(4) for j in range(3)]
CHANNELS = [1280] * 6 + [640] * 3 + [320] * 3


def peaked_weights(step: int, layer: int, shape=(len(LABELS), len(LAYERS))) -> torch.Tensor:
    """(S, L) softmax weights whose largest entry is at (step, layer)."""
    logits = torch.zeros(shape)
    logits[step, layer] = 2.0
    return torch.softmax(logits.flatten(), 0).view(shape)


def max_cell(fig: Figure):
    (rect,) = [p for p in fig.axes[0].patches if p.get_gid() == MAX_CELL_GID]
    return rect


# ---------------------------------------------------------------------------- mixing weights


def test_heat_map_png_written(tmp_path):
    out = tmp_path / "plots" / "mixing.png"
    fig = plot_mixing_weights(peaked_weights(0, 0), LABELS, LAYERS, out_path=out, channels=CHANNELS)
    assert isinstance(fig, Figure)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as img:
        assert 400 <= img.width <= 3000 and 300 <= img.height <= 3000


def test_heat_map_tick_labels_in_order():
    fig = plot_mixing_weights(peaked_weights(0, 0), LABELS, LAYERS)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == LAYERS
    # label 0 is the noisiest UNet call (t = 960 for N = 50), the largest label the cleanest
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(k) for k in sorted(LABELS)]
    assert "noisiest → cleanest" in ax.get_xlabel()
    assert len(fig.axes) == 2  # heat map + colour bar


def test_heat_map_channel_counts_in_layer_labels():
    fig = plot_mixing_weights(peaked_weights(0, 0), LABELS, LAYERS, channels=CHANNELS)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels[0] == "up_blocks.0.resnets.0 (1280)" and labels[-1] == "up_blocks.3.resnets.2 (320)"


@pytest.mark.parametrize("step,layer", [(0, 0), (2, 9), (10, 4)])
def test_outlined_cell_is_argmax(step, layer):
    fig = plot_mixing_weights(peaked_weights(step, layer), LABELS, LAYERS)
    column = sorted(LABELS).index(LABELS[step])  # columns run noisy → clean
    assert max_cell(fig).get_xy() == (column - 0.5, layer - 0.5)
    texts = fig.axes[0].texts  # one percentage per cell, reading row-major
    assert len(texts) == len(LABELS) * len(LAYERS)
    assert float(texts[layer * len(LABELS) + column].get_text()) == pytest.approx(
        100 * peaked_weights(step, layer)[step, layer].item(), abs=0.05
    )


def test_heat_map_large_grid_not_annotated():
    labels = list(range(20))
    fig = plot_mixing_weights(peaked_weights(3, 1, (20, 12)), labels, LAYERS)
    assert len(fig.axes[0].texts) == 0
    assert max_cell(fig).get_xy() == (2.5, 0.5)


def test_heat_map_shape_mismatch():
    with pytest.raises(ValueError, match=r"\(11, 12\)"):
        plot_mixing_weights(torch.ones(12, 11) / 132, LABELS, LAYERS)


def test_two_checkpoints_side_by_side_share_one_scale_and_show_their_difference():
    first, second = peaked_weights(0, 0), peaked_weights(10, 4)
    fig = plot_mixing_comparison(
        [MixingPanel(first, LABELS, LAYERS, "semantic"), MixingPanel(second, LABELS, LAYERS, "temporal")]
    )
    heat_axes = [ax for ax in fig.axes if ax.images and ax.get_title()]
    assert [ax.get_title().split("\n")[0] for ax in heat_axes] == ["semantic", "temporal", "difference: right − left"]
    left, right, diff = (ax.images[0] for ax in heat_axes)
    assert (left.norm.vmin, left.norm.vmax) == (right.norm.vmin, right.norm.vmax)  # one colour scale
    assert right.norm.vmax == pytest.approx(100 * float(max(first.max(), second.max())))
    order = np.argsort(LABELS)  # columns noisy → clean
    expected = 100 * (second.numpy()[order] - first.numpy()[order]).T  # (L, S)
    np.testing.assert_allclose(np.asarray(diff.get_array()), expected, atol=1e-5)
    columns = [sorted(LABELS).index(LABELS[s]) for s in (0, 10)]  # each panel outlines its own largest cell
    outlined = [[p for p in ax.patches if p.get_gid() == MAX_CELL_GID][0].get_xy() for ax in heat_axes[:2]]
    assert outlined == [(columns[0] - 0.5, -0.5), (columns[1] - 0.5, 3.5)]


def test_checkpoints_of_other_plans_side_by_side_without_difference():
    fig = plot_mixing_comparison(
        [MixingPanel(peaked_weights(0, 0), LABELS, LAYERS), MixingPanel(np.full((2, 3), 1 / 6), [1, 0], LAYERS[:3])]
    )
    assert sum(1 for ax in fig.axes if ax.get_title().startswith("difference")) == 0
    assert sum(1 for ax in fig.axes if ax.images and ax.get_title()) == 2
    with pytest.raises(ValueError, match="at least one"):
        plot_mixing_comparison([])


def test_figure_to_array():
    fig = plot_mixing_weights(np.full((2, 3), 1 / 6), [1, 0], LAYERS[:3])
    array = figure_to_array(fig)
    assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3
    assert array.shape[:2] == (round(fig.get_figheight() * fig.dpi), round(fig.get_figwidth() * fig.dpi))


# ---------------------------------------------------------------------------- correspondences


def test_correspondences_pck_in_title(tmp_path):
    src = np.zeros((40, 60, 3), np.uint8)
    tgt = Image.new("RGB", (50, 30), (200, 200, 200))
    points = np.array([[5.0, 5.0], [20.0, 10.0], [30.0, 30.0], [1.0, 1.0]])
    truth = np.array([[10.0, 10.0], [20.0, 20.0], [40.0, 5.0], [0.0, 0.0]])
    pred = truth + np.array([[1.0, 0.0], [0.0, 2.0], [9.0, 0.0], [50.0, 50.0]])
    valid = np.array([True, True, True, False])  # the last, far-off point is not annotated
    out = tmp_path / "pair.png"
    fig = draw_correspondences(src, tgt, points, pred, truth, valid, threshold_px=3.0, out_path=out, title="cat")
    title = fig.axes[0].get_title()
    assert title.startswith("cat") and "66.7%" in title and "(2/3)" in title
    assert out.exists()


def test_correspondences_without_ground_truth():
    img = np.zeros((20, 20, 3), np.uint8)
    fig = draw_correspondences(img, img, [[1, 2]], torch.tensor([[3.0, 4.0]]))
    assert "PCK" not in fig.axes[0].get_title()
    with pytest.raises(ValueError, match="predicted_points"):
        draw_correspondences(img, img, [[1, 2]], [[3, 4], [5, 6]])


def test_a_huge_pair_is_drawn_at_reduced_size_with_its_points_scaled(monkeypatch):
    import hyperfeat.viz.correspondences as corr

    monkeypatch.setattr(corr, "MAX_DRAW_SIDE", 100)  # stands for 2048 on a 10000-pixel photo
    src = Image.new("RGB", (400, 200))  # drawn at 100×50
    tgt = Image.new("RGB", (80, 60))  # small enough: drawn as it is
    points, pred = np.array([[200.0, 100.0], [0.0, 199.0]]), np.array([[40.0, 30.0], [79.0, 0.0]])
    truth = pred + np.array([[2.0, 0.0], [8.0, 0.0]])  # PCK judged in the images' own pixels: 1 of 2 within 4 px
    fig = corr.draw_correspondences(src, tgt, points, pred, truth, threshold_px=4.0)
    ax = fig.axes[0]
    canvas = ax.get_images()[0].get_array()
    gap = max(8, 100 // 50)
    assert canvas.shape[:2] == (60, 100 + gap + 80), "the source at 100×50, the target unchanged"
    lines = [line.get_xydata() for line in ax.get_lines() if line.get_gid() == corr.LINE_GID]
    expected = [[[50.0, 25.0], [100 + gap + 40.0, 30.0]], [[0.0, 49.75], [100 + gap + 79.0, 0.0]]]
    np.testing.assert_allclose(np.array(lines), expected)
    assert "(1/2)" in ax.get_title()


# ---------------------------------------------------------------------------- tracks


GREY = (90, 90, 90)


def grey_frames(t: int, h: int = 64, w: int = 96) -> np.ndarray:
    return np.full((t, h, w, 3), GREY, np.uint8)  # (T, H, W, 3)


def test_draw_tracks_sizes_and_dots():
    frames = grey_frames(4)
    tracks = np.zeros((2, 4, 2))
    tracks[0] = [[10 + 5 * t, 20] for t in range(4)]  # moving, visible
    tracks[1] = [70, 40]  # static, occluded from frame 2 on
    visible = np.array([[True] * 4, [True, True, False, False]])
    out = draw_tracks(frames, tracks, visible, tail_length=3)
    assert len(out) == 4 and all(im.size == (96, 64) and im.mode == "RGB" for im in out)
    colours = distinct_colours(2)
    for t, im in enumerate(out):
        pixels = np.asarray(im)
        assert tuple(pixels[20, 10 + 5 * t]) == tuple(colours[0])
        assert tuple(pixels[40, 70]) == tuple(colours[1])  # a dot or a cross: both cover the centre
    r = marker_radius((96, 64)) + 1
    dot = np.asarray(out[0])[40 - r : 41 + r, 70 - r : 71 + r]
    cross = np.asarray(out[3])[40 - r : 41 + r, 70 - r : 71 + r]
    in_colour = lambda w: (w == colours[1]).all(-1)
    assert (in_colour(cross) != in_colour(dot)).any()  # the occluded marker is another shape
    assert (cross == GREY).all(-1).any()  # with the frame showing between its arms


def test_draw_tracks_tail_fades():
    frames = grey_frames(5)
    tracks = np.array([[[10 + 15 * t, 32] for t in range(5)]], float)  # (1, 5, 2)
    out = draw_tracks(list(map(Image.fromarray, frames)), tracks, np.ones((1, 5), bool), tail_length=4)
    colour = distinct_colours(1)[0].astype(float)
    last = np.asarray(out[-1]).astype(float)
    strength = [np.abs(last[32, 10 + 15 * t + 7] - GREY).sum() for t in range(4)]  # segment midpoints
    assert all(a < b for a, b in zip(strength, strength[1:]))  # older segments are fainter
    assert np.abs(last[32, 10 + 15 * 3 + 7] - colour).sum() < np.abs(last[32, 17] - colour).sum()
    untouched = draw_tracks(frames, tracks, None, tail_length=0)[-1]
    assert tuple(np.asarray(untouched)[32, 17]) == GREY  # no tail at all


def test_draw_tracks_bad_shape():
    with pytest.raises(ValueError, match="tracks"):
        draw_tracks(grey_frames(3), np.zeros((2, 4, 2)), None)


# ---------------------------------------------------------------------------- video


def moving_frames(t: int = 6, size=(33, 25)) -> list[Image.Image]:
    """``t`` distinct frames of an odd size (W, H)."""
    frames = []
    for i in range(t):
        array = np.zeros((size[1], size[0], 3), np.uint8)
        array[:, : 4 * (i + 1)] = (255, 40 * i, 0)
        frames.append(Image.fromarray(array))
    return frames


def test_write_gif(tmp_path):
    path = write_video(moving_frames(), tmp_path / "t.gif", fps=5)
    with Image.open(path) as img:
        assert img.n_frames == 6 and img.size == (33, 25)


def test_write_mp4(tmp_path):
    import av

    path = write_video(moving_frames(), tmp_path / "t.mp4", fps=8)
    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 6
    assert decoded[0].shape == (26, 34, 3)  # padded to even width and height


def test_write_video_bad_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"\.avi"):
        write_video(moving_frames(), tmp_path / "t.avi")


# ---------------------------------------------------------------------------- masks


def test_overlay_leaves_background():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    mask = np.zeros((30, 40), np.int64)
    mask[5:15, 5:20] = 1
    mask[18:28, 22:38] = 2
    out = np.asarray(overlay_masks(frame, mask, alpha=0.5))
    assert out.shape == frame.shape
    assert np.array_equal(out[mask == 0], frame[mask == 0])
    palette = davis_palette()
    for obj in (1, 2):
        inside = mask == obj
        assert (np.abs(out[inside].astype(int) - frame[inside]).sum(axis=1) > 0).all()
        # the blend moves each pixel towards the object's colour
        before = np.abs(frame[inside].astype(int) - palette[obj]).sum()
        assert np.abs(out[inside].astype(int) - palette[obj]).sum() < before
    with pytest.raises(ValueError, match="does not match"):
        overlay_masks(frame, mask[:10])


def test_palette_mask_round_trip(tmp_path):
    mask = np.arange(12 * 20).reshape(12, 20) % 7  # ids 0…6
    image = palette_mask(mask)
    assert image.mode == "P" and image.size == (20, 12)
    image.save(tmp_path / "00000.png")
    with Image.open(tmp_path / "00000.png") as back:
        assert back.mode == "P"
        assert np.array_equal(np.asarray(back), mask)
        assert back.getpalette()[:9] == [0, 0, 0, 128, 0, 0, 0, 128, 0]
    with pytest.raises(ValueError, match="0…255"):
        palette_mask(np.full((2, 2), 300))


def test_palette_matches_davis_release():
    root = data_dir("davis2017")
    with Image.open(root / "Annotations" / "480p" / "bike-packing" / "00000.png") as ann:
        palette = np.array(ann.getpalette()).reshape(-1, 3)
    assert np.array_equal(davis_palette(), palette)


def grey_video(t: int, h: int = 64, w: int = 96, original: tuple[int, int] = (192, 128)):
    from hyperfeat.video.frames import VideoFrames

    frames = torch.full((t, 3, h, w), GREY[0] / 255.0)  # (T, 3, H, W)
    return VideoFrames(frames, original, (w, h), w / original[0], [])


def test_masks_vs_truth_truth_left_prediction_right():
    from hyperfeat.viz.masks import draw_masks_vs_truth

    video = grey_video(3)
    gt = torch.zeros(3, 128, 192, dtype=torch.long)  # (T, H, W) at the original size
    gt[:, 40:80, 0:60] = 1  # the truth's object: frames' rows 20:40, cols 0:30
    gt[:, 100:128, 150:192] = 255  # void: drawn as background
    pred = torch.zeros_like(gt)
    pred[:, 80:100, 120:192] = 2  # the prediction's object: rows 40:50, cols 60:96
    out = draw_masks_vs_truth(video, pred, gt, "J&F 12.3")
    assert len(out) == 3 and out[0].size == (2 * 96 + 4, 64)
    pixels = np.asarray(out[1])
    left, right = pixels[:, :96], pixels[:, 100:]
    grey = lambda region: (region == GREY).all(-1)
    assert not grey(left[24:36, 4:26]).any() and grey(right[24:36, 4:26]).all()
    assert not grey(right[42:48, 64:92]).any() and grey(left[42:48, 64:92]).all()
    assert grey(left[52:64, 78:96]).all()  # void left as the frame
    palette = davis_palette().astype(int)
    assert np.abs(left[30, 10].astype(int) - palette[1]).sum() < np.abs(np.array(GREY) - palette[1]).sum()
    assert np.abs(right[45, 80].astype(int) - palette[2]).sum() < np.abs(np.array(GREY) - palette[2]).sum()


def test_joints_vs_truth_same_colour_each_side():
    from hyperfeat.viz.tracks import JHMDB_SKELETON, draw_joints_vs_truth

    video = grey_video(2, h=128, w=192, original=(384, 256))
    gt = torch.zeros(2, 15, 2)
    gt[:, :, 0] = torch.linspace(40, 340, 15)  # a row of joints, original pixels (21 px apart)
    gt[:, :, 1] = 160
    pred = gt.clone()
    pred[:, :, 1] = 220  # the prediction lower down
    valid = torch.ones(2, 15, dtype=torch.bool)
    valid[:, 14] = False  # a joint outside the frame: not drawn on the truth side
    out = draw_joints_vs_truth(video, pred, gt, valid, "PCK@0.1 50.0")
    assert len(out) == 2 and out[0].size == (2 * 192 + 4, 128)
    pixels = np.asarray(out[1])
    colours = distinct_colours(15)
    for j in (0, 7, 13):
        x = int(round(float(gt[0, j, 0]) / 2))
        assert tuple(pixels[80, x]) == tuple(colours[j])  # truth at y 160 / 2
        assert tuple(pixels[110, 196 + x]) == tuple(colours[j])  # prediction at y 220 / 2, right half
    x14 = int(round(float(gt[0, 14, 0]) / 2))
    assert tuple(pixels[80, x14]) == GREY and tuple(pixels[110, 196 + x14]) == tuple(colours[14])
    assert len(JHMDB_SKELETON) == 14 and {j for limb in JHMDB_SKELETON for j in limb} == set(range(15))
    with pytest.raises(ValueError, match="joints"):
        draw_joints_vs_truth(video, pred[:1], gt, valid, "")
