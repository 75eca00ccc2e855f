"""What the page asks for, done through the public API (no second implementation).

* match: :meth:`Hyperfeatures.match_mutual` gives the matched point and its mutual-NN flag; the
  heat map is the cosine similarity of the clicked cell's descriptor with every target cell
  (descriptors from :meth:`Hyperfeatures.describe`, kept per image pair for the next click).
* track: frames read with :func:`hyperfeat.video.frames.load_frames`, described chunk by chunk
  with :meth:`Hyperfeatures.describe_video` (so the page can show progress), then
  :meth:`Hyperfeatures.track` on those descriptors; drawn by :mod:`hyperfeat.viz.tracks`.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from hyperfeat.errors import DataError
from hyperfeat.video import queries
from hyperfeat.video.frames import VideoFrames

Report = Callable[[float, str], None]


def png_data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def heat_map_image(similarity: torch.Tensor, target: Image.Image, strength: float = 0.65) -> Image.Image:
    """(h, w) cosine similarities over the target → the target in grey with the similarity in
    viridis (low: dark blue, high: yellow) blended over it, at the target's size."""
    from matplotlib import colormaps

    sim = similarity.float().cpu().numpy()
    lo, hi = float(sim.min()), float(sim.max())
    norm = (sim - lo) / (hi - lo) if hi > lo else np.zeros_like(sim)
    rgb = (colormaps["viridis"](norm)[..., :3] * 255).round().astype(np.uint8)  # (h, w, 3)
    heat = Image.fromarray(rgb).resize(target.size, Image.BILINEAR)
    grey = target.convert("L").convert("RGB")
    return Image.blend(grey, heat, strength)


def similarity_to_point(desc: torch.Tensor, point_xy: Sequence[float], src_wh: tuple[int, int]) -> torch.Tensor:
    """desc (2, D, h, w) of source and target → (h, w) cosine similarity of the source cell under
    ``point_xy`` (source pixels) with every target cell."""
    from hyperfeat.correspond.matching import cosine_similarity, descriptors_at
    from hyperfeat.geometry import pixels_to_cells

    _, _, h, w = desc.shape
    cell = pixels_to_cells(torch.tensor([list(point_xy)], dtype=torch.float32), src_wh, (h, w))  # (1, 2)
    vector = descriptors_at(desc[0], cell, mode="nearest")  # (1, D)
    return cosine_similarity(vector, desc[1])[0]  # (h, w)


def match_point(
    hf,
    source: Path,
    target: Path,
    point_xy: Sequence[float],
    method: str,
    report: Report,
    descriptors: Optional[dict] = None,
    heat_map: bool = True,
) -> dict:
    """One clicked source point → its match in the target, the mutual flag and a heat map."""
    from hyperfeat.images import load_image

    report(0.05, "describing source and target, matching")
    points = torch.tensor([list(point_xy)], dtype=torch.float32)  # (1, 2)
    pred, mutual = hf.match_mutual(source, target, points, method=method)
    result = {
        "source": [float(v) for v in points[0]],
        "target": [float(v) for v in pred[0]],
        "mutual": bool(mutual[0]),
        "method": method,
    }
    if heat_map:
        report(0.7, "similarity heat map")
        key = (str(source), str(target))
        cache = descriptors if descriptors is not None else {}
        if key not in cache:
            cache.clear()  # one pair kept: the next click on the same pair is cheap
            cache[key] = hf.describe([source, target])  # (2, D, h, w)
        target_image = load_image(target)
        sim = similarity_to_point(cache[key], point_xy, load_image(source).size)
        result["heat_map"] = png_data_url(heat_map_image(sim, target_image))
        result["similarity_range"] = [float(sim.min()), float(sim.max())]
    return result


def page_grid_points(size_wh: tuple[int, int], n: int) -> list[list[float]]:
    """An n × n grid of points (x, y) spread over a (W, H) frame (:func:`hyperfeat.video.queries.grid_points`),
    n from 1 to 32 on the page."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 32:
        raise DataError(f"the grid size must be between 1 and 32; got {n}")
    return [[round(float(x), 2), round(float(y), 2)] for x, y in queries.grid_points(size_wh, n).tolist()]


def track_points(
    hf,
    video: VideoFrames,
    points_xy: Sequence[Sequence[float]],
    out_dir: Path,
    report: Report,
    tail_length: int = 10,
    fps: float = 10.0,
    name: str = "video",
) -> dict:
    """Track first-frame points (x, y) (original pixels) through ``video``; write a GIF of the
    tracks, ``tracks.json`` and ``tracks.csv`` into ``out_dir``."""
    from hyperfeat.io import write_video
    from hyperfeat.video.run import check_queries
    from hyperfeat.viz.tracks import draw_video_tracks

    points = [list(map(float, p)) for p in points_xy]
    if not points:
        raise DataError("no points to track: click points on the first frame or add a grid")
    query_points = check_queries(torch.tensor([[0.0, x, y] for x, y in points]), len(video), video.original_size)
    num_frames = len(video)
    step = max(1, int(hf.cfg.video.batch_size))
    chunks = []
    for start in range(0, num_frames, step):
        report(
            0.85 * start / num_frames, f"describing frames {start + 1}-{min(start + step, num_frames)} of {num_frames}"
        )
        chunks.append(hf.describe_video(video.frames[start : start + step]))  # (B, D, h, w)
    report(0.85, "tracking")
    tracks, visible = hf.track(video, query_points, descriptors=torch.cat(chunks))  # (N, T, 2), (N, T)
    report(0.92, "drawing")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_video(draw_video_tracks(video, tracks, visible, tail_length), out_dir / "tracks.gif", fps=fps)
    for file_name in ("tracks.json", "tracks.csv"):  # the track files of the commands (hyperfeat.video.queries)
        queries.save_tracks(
            out_dir / file_name, query_points, tracks, visible, size=video.original_size, meta={"video": name}
        )
    return {
        "num_points": int(tracks.shape[0]),
        "num_frames": num_frames,
        "visible_fraction": float(visible.float().mean()),
        "files": ["tracks.gif", "tracks.json", "tracks.csv"],
    }


def mixing_png(hf, title: str) -> bytes:
    """The loaded network's mixing weights as a PNG heat map (:mod:`hyperfeat.viz.mixing`)."""
    from hyperfeat.model.features import layer_name
    from hyperfeat.viz.figures import figure_to_array
    from hyperfeat.viz.mixing import label_timestep_values, plot_mixing_weights

    feats = hf.cfg.features
    labels = list(hf.extractor.save_steps)
    values = label_timestep_values(str(feats.mode), int(feats.num_steps), labels)
    fig = plot_mixing_weights(
        hf.network.mixing_grid().detach().cpu(),
        labels,
        [layer_name(ij) for ij in hf.extractor.layers],
        title=title,
        channels=list(hf.extractor.channels),
        timestep_values=values,
    )
    buffer = io.BytesIO()
    Image.fromarray(figure_to_array(fig)).save(buffer, format="PNG")
    return buffer.getvalue()


def first_frame_preview(video: VideoFrames) -> str:
    from hyperfeat.video.frames import frames_as_uint8

    return png_data_url(Image.fromarray(frames_as_uint8(video.frames[:1])[0]))
