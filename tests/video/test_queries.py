"""Grid and mask queries, track exports (JSON, CSV, TAP-Vid npz), the GIF's colours, and an
occluded point re-acquired by the memory tracker on a synthetic clip with exact tracks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from hyperfeat.config import load_config
from hyperfeat.correspond.track import track_descriptors
from hyperfeat.data.videos.synthetic_tracks import CutOut, make_clip
from hyperfeat.describe.patches import PatchDescriber
from hyperfeat.errors import DataError
from hyperfeat.io import write_video
from hyperfeat.video.frames import frame_describer, frames_from_uint8
from hyperfeat.video.queries import (
    grid_points,
    grid_queries,
    load_tracks,
    mask_pixels,
    mask_queries,
    parse_queries,
    read_mask_png,
    save_tracks,
)
from hyperfeat.video.stream import describe_stream


def test_grid_queries_are_the_cell_centres_of_an_even_grid():
    q = grid_queries(2, (8, 4), grid_query_frame=3)
    # cells of a 2×2 grid over 8×4 px: x centres at 1.5 and 5.5, y at 0.5 and 2.5 (pixel centres at integers)
    expected = torch.tensor([[3, 1.5, 0.5], [3, 5.5, 0.5], [3, 1.5, 2.5], [3, 5.5, 2.5]])
    torch.testing.assert_close(q, expected)
    assert grid_queries(5, (854, 480)).shape == (25, 3)
    with pytest.raises(DataError, match="does not fit a 6×4 frame"):
        grid_queries(5, (6, 4))
    with pytest.raises(DataError, match="positive"):
        grid_queries(0, (6, 4))


def test_one_grid_one_mask_reader_one_query_parser(tmp_path):
    """The page, the commands and the state-change analysis share these: the grid's points are the
    queries' xy, a palette PNG keeps its ids, a colour PNG is any non-black pixel, bad text is one line."""
    torch.testing.assert_close(grid_points((8, 4), 2), grid_queries(2, (8, 4))[:, 1:])
    from hyperfeat.video.changes import change_queries
    from hyperfeat.web import work

    assert work.page_grid_points((8, 4), 2) == grid_points((8, 4), 2).tolist()
    palette = Image.new("L", (6, 4), 0)  # gray values are ids, as palette indices are
    palette.putpixel((2, 1), 3)
    palette.save(tmp_path / "p.png")
    ids = read_mask_png(tmp_path / "p.png")
    assert ids.shape == (4, 6) and int(ids[1, 2]) == 3 and int(ids.sum()) == 3
    colour = Image.new("RGB", (6, 4), (0, 0, 0))
    colour.putpixel((5, 3), (0, 90, 0))
    colour.save(tmp_path / "c.png")
    assert read_mask_png(tmp_path / "c.png").nonzero().tolist() == [[3, 5]]
    with pytest.raises(DataError, match=r"mask file not found: .*nope.png"):
        read_mask_png(tmp_path / "nope.png")
    with pytest.raises(DataError, match=r"mask is 6×4 \(W×H\) but the video frames are 8×4"):
        mask_pixels(ids, (8, 4))
    with pytest.raises(DataError, match="empty"):
        mask_pixels(torch.zeros(4, 6), (6, 4))
    assert not mask_pixels(torch.zeros(4, 6), (6, 4), allow_empty=True).any()
    queries, is_reference = change_queries(ids, (6, 4), 2)
    assert len(queries) == len(is_reference) and bool(is_reference.any())
    torch.testing.assert_close(parse_queries("0,1.5,2; 3,4,5"), torch.tensor([[0, 1.5, 2], [3, 4, 5]]))
    with pytest.raises(DataError, match=r"^points must look like 't,x,y;t,x,y' \(frame, x, y in pixels\); got '1,2'$"):
        parse_queries("1,2")


def test_mask_queries_lie_inside_the_mask():
    mask = np.zeros((40, 60), np.uint8)
    mask[10:20, 30:50] = 1
    drawn = mask_queries(mask, (60, 40), num_points=50, grid_query_frame=2, seed=1)
    assert drawn.shape == (50, 3) and (drawn[:, 0] == 2).all()
    assert mask[drawn[:, 2].long(), drawn[:, 1].long()].all()
    gridded = mask_queries(mask, (60, 40), grid_size=10)
    every = grid_queries(10, (60, 40))
    inside = [p for p in every.tolist() if mask[round(p[2]), round(p[1])]]
    torch.testing.assert_close(gridded, torch.tensor(inside))
    with pytest.raises(DataError, match="segmentation mask is empty"):
        mask_queries(np.zeros((40, 60)), (60, 40))
    with pytest.raises(DataError, match=r"mask is 60×40 \(W×H\) but the video frames are 64×40"):
        mask_queries(mask, (64, 40))


@pytest.mark.parametrize("suffix", [".json", ".csv", ".npz"])
def test_exports_round_trip(tmp_path, suffix):
    gen = torch.Generator().manual_seed(0)
    queries = torch.tensor([[0, 10.5, 20.25], [3, 1.0, 2.0], [1, 7.0, 7.0]])
    tracks = torch.rand(3, 5, 2, generator=gen) * 100
    visible = torch.rand(3, 5, generator=gen) > 0.3
    confidence = torch.rand(3, 5, generator=gen)
    path = save_tracks(tmp_path / f"t{suffix}", queries, tracks, visible, confidence, (120, 80))
    back = load_tracks(path)
    torch.testing.assert_close(back["queries"].float(), queries, atol=1e-4, rtol=0)
    torch.testing.assert_close(back["tracks"].float(), tracks, atol=1e-4, rtol=0)
    torch.testing.assert_close(back["confidence"].float(), confidence, atol=1e-4, rtol=0)
    assert torch.equal(back["visible"].bool(), visible)
    if suffix == ".npz":  # the TAP-Vid layout: query points (t, y, x) and occluded flags
        data = np.load(path)
        np.testing.assert_allclose(data["query_points"][0], [0, 20.25, 10.5])
        assert data["occluded"].dtype == bool and (data["occluded"] == ~visible.numpy()).all()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
    with pytest.raises(DataError, match="must end in one of"):
        save_tracks(tmp_path / "t.txt", queries, tracks, visible)


def test_gif_keeps_the_colours_of_small_marks(tmp_path):
    rng = np.random.default_rng(0)
    frames = []
    for t in range(3):  # a photo-like frame (smooth, many colours) with two small pure-colour dots
        base = np.asarray(
            Image.fromarray(rng.integers(60, 200, (12, 16, 3), dtype=np.uint8)).resize((160, 120), Image.BICUBIC)
        )
        image = Image.fromarray(base.copy())
        draw = ImageDraw.Draw(image)
        draw.ellipse([20 + t, 20, 28 + t, 28], fill=(0, 255, 0))
        draw.ellipse([90, 60, 98, 68], fill=(0, 0, 255))
        frames.append(image)
    path = write_video(frames, tmp_path / "dots.gif", fps=5)
    with Image.open(path) as gif:
        for t in range(3):
            gif.seek(t)
            rgb = gif.convert("RGB")
            assert rgb.getpixel((24 + t, 24)) == (0, 255, 0)
            assert rgb.getpixel((94, 64)) == (0, 0, 255)
            error = np.abs(np.asarray(rgb, float) - np.asarray(frames[t], float)).mean()
            assert error < 8, error  # the photo itself stays close too (192 median-cut colours)


def _texture(size, seed):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size[1] // 6 + 1, size[0] // 6 + 1, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize(size, Image.NEAREST))


# the share of reappeared points found again within 4 px: the memory tracker searches the whole
# frame every frame (0.8 or more); the coherent one only for points lost or whose local match does
# not return, and finds 0.7 here; behind the bar it calls 0.53 occluded (the memory tracker 0.6 or
# more). On real footage the coherent tracker is the better one (benchmarks/tracking.py).
@pytest.mark.parametrize("tracker, found_again, hidden_called", [("coherent", 0.65, 0.5), ("memory", 0.8, 0.6)])
def test_occluded_point_is_reacquired_after_it_reappears(tracker, found_again, hidden_called):
    """A textured square moves right over a smooth background; a plain grey bar comes down across
    it mid-clip. Points hidden by the bar for several frames must be found again, marked visible,
    within 4 px of their exact tracks once the bar has passed."""
    W, H, T = 128, 96, 14
    yy, xx = np.mgrid[0:H, 0:W]
    background = np.stack([xx * 255 // W, yy * 255 // H, np.full_like(xx, 128)], -1).astype(np.uint8)
    target = CutOut(_texture((28, 28), 1), np.ones((28, 28), bool))
    occluder = CutOut(np.full((44, 40, 3), 110, np.uint8), np.ones((44, 40), bool))
    clip = make_clip([Image.fromarray(background)] * T, target, occluder, (W, H), num_points=24, margin=3, seed=3)
    hidden_then_back = clip.occluded[:, 3:-3].any(1) & ~clip.occluded[:, -2:].any(1)
    assert hidden_then_back.sum() >= 3, "the clip must hide some points and show them again"
    describer = PatchDescriber(
        load_config(overrides=["backbone=tiny", "features.load_size=128"]), patch=7, stride=2, dim=32, colour_weight=3.0
    )
    frames = frames_from_uint8(clip.frames)
    store = describe_stream(iter(frames), frame_describer(describer), T, 4, "float32", progress=False)
    queries = torch.from_numpy(clip.queries)
    tracks, visible, confidence = track_descriptors(store, queries, (W, H), tracker)
    truth = torch.from_numpy(clip.points)
    back = torch.from_numpy(hidden_then_back)
    error = (tracks[back, -2:] - truth[back, -2:]).norm(dim=-1)  # (n, 2)
    assert (error < 4).float().mean() >= found_again, error
    assert visible[back, -2:].float().mean() >= found_again
    occluded = torch.from_numpy(clip.occluded)
    assert (~visible[occluded]).float().mean() >= hidden_called  # behind the bar many are called occluded
    assert ((confidence >= 0) & (confidence <= 1)).all()


def test_dift_video_preset_and_track_json_names():
    from hyperfeat.cli.track import tracks_json_path

    cfg = load_config(overrides=["experiment=dift_video"])
    assert (cfg.video.queue_length, cfg.video.radius, cfg.video.topk, cfg.video.temperature) == (28, 15, 15, 0.2)
    assert tracks_json_path("out/a.mp4").name == "a.mp4.json"
    assert tracks_json_path("out/a.gif") != tracks_json_path("out/a.mp4")
