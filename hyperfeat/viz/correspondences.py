"""Correspondence pictures: source and target side by side, a line from each source point to its
prediction, green when within the PCK threshold of the ground truth, red beyond it.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from matplotlib import patheffects
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from PIL import Image

from hyperfeat.errors import HyperfeatError
from hyperfeat.geometry import rescale_points
from hyperfeat.images import ImageLike, load_image
from hyperfeat.io import PathLike
from hyperfeat.viz.figures import ArrayLike, distinct_colours, save_figure, to_numpy

LINE_GID = "match_line"  # gid of each source → prediction line of a correspondence picture


CORRECT_COLOUR = "#2bd13a"  # line of a prediction within the threshold


WRONG_COLOUR = "#ff2a2a"  # line of a prediction beyond it


MAX_DRAW_SIDE = (
    2048  # longer side of each image as drawn: a figure is ~1400 px wide, a huge photo need not be copied whole
)


def drawing_size(image: Image.Image, max_side: Optional[int] = None) -> Image.Image:
    """``image`` itself, or a copy whose longer side is ``max_side`` (default :data:`MAX_DRAW_SIDE`,
    same aspect) when it is larger."""
    scale = (MAX_DRAW_SIDE if max_side is None else max_side) / max(image.size)
    if scale >= 1:
        return image
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR)


# ---------------------------------------------------------------------------- correspondences


def pair_canvas(left: Image.Image, right: Image.Image, gap: int) -> tuple[np.ndarray, int]:
    """Both images on one white canvas, tops aligned; returns (H, W, 3) and the right image's x offset."""
    height = max(left.height, right.height)
    canvas = np.full((height, left.width + gap + right.width, 3), 255, dtype=np.uint8)
    canvas[: left.height, : left.width] = np.asarray(left)
    offset = left.width + gap
    canvas[: right.height, offset:] = np.asarray(right)
    return canvas, offset


def check_points(name: str, points: ArrayLike, n: Optional[int]) -> np.ndarray:
    """(N, 2) float points, N equal to ``n`` when given."""
    array = to_numpy(points)
    if array.ndim != 2 or array.shape[1] != 2 or (n is not None and array.shape[0] != n):
        want = f"({n}, 2)" if n is not None else "(N, 2)"
        raise HyperfeatError(f"{name} must be {want} xy points; got shape {array.shape}")
    return array


def correct_mask(
    predicted: np.ndarray, target: Optional[np.ndarray], threshold_px: Optional[float]
) -> Optional[np.ndarray]:
    """(N,) bool: prediction within ``threshold_px`` of the ground truth (None without both)."""
    if target is None or threshold_px is None:
        return None
    return np.linalg.norm(predicted - target, axis=1) <= threshold_px


def pair_title(title: Optional[str], correct: Optional[np.ndarray], threshold_px: Optional[float], n: int) -> str:
    """Title with the pair's PCK when it can be computed."""
    parts = [title] if title else []
    if correct is not None and n:
        parts.append(f"PCK@{threshold_px:.1f}px = {100 * correct.mean():.1f}% ({int(correct.sum())}/{n})")
    elif not parts:
        parts.append(f"{n} points")
    return " — ".join(parts)


def legend_handles(correct: Optional[np.ndarray], has_target: bool, threshold_px: Optional[float]) -> list[Line2D]:
    """Proxy artists describing the marker styles (grey) and, with correctness, the line colours."""
    grey = "0.35"
    handles = [Line2D([], [], marker="o", ls="", color=grey, mec="white", label="source point")]
    if correct is None:
        handles.append(Line2D([], [], marker="D", ls="-", color=grey, mec="white", label="prediction"))
    else:
        handles.append(
            Line2D(
                [],
                [],
                marker="D",
                ls="-",
                color=CORRECT_COLOUR,
                mfc=grey,
                mec="white",
                label=f"correct (≤ {threshold_px:.1f}px)",
            )
        )
        handles.append(
            Line2D(
                [],
                [],
                marker="X",
                ls="-",
                color=WRONG_COLOUR,
                mfc=grey,
                mec="black",
                label=f"wrong (> {threshold_px:.1f}px)",
            )
        )
    if has_target:
        handles.append(Line2D([], [], marker="o", ls=":", color=grey, mfc="none", mew=1.5, label="ground truth"))
    return handles


def draw_correspondences(
    source_image: ImageLike,
    target_image: ImageLike,
    source_points: ArrayLike,
    predicted_points: ArrayLike,
    target_points: Optional[ArrayLike] = None,
    valid: Optional[ArrayLike] = None,
    threshold_px: Optional[float] = None,
    out_path: Optional[PathLike] = None,
    title: Optional[str] = None,
) -> Figure:
    """Source and target side by side, each source point joined to its prediction.

    Points are (N, 2) xy pixels of their own image; each point has its own colour (source dot,
    prediction, ground truth). Ground truth (``target_points``) is a hollow circle with a dotted
    line from the prediction. With ``threshold_px`` (and ground truth) the source → prediction
    line is green for a prediction within it of the ground truth, red otherwise (the prediction
    a diamond or a cross), and the title gives the pair's PCK; without, the line takes the
    point's colour. ``valid`` (N,) hides points that have no annotation. Writes the figure to
    ``out_path`` when given.
    """
    src_img, tgt_img = load_image(source_image), load_image(target_image)
    src = check_points("source_points", source_points, None)
    n = src.shape[0]
    pred = check_points("predicted_points", predicted_points, n)
    tgt = None if target_points is None else check_points("target_points", target_points, n)
    keep = np.ones(n, bool) if valid is None else to_numpy(valid, bool).reshape(n)
    src, pred = src[keep], pred[keep]
    tgt = None if tgt is None else tgt[keep]
    correct = correct_mask(pred, tgt, threshold_px)  # judged in the images' own pixels

    # drawn at reduced size: points follow their image (geometry's one scaling rule)
    small_src, small_tgt = drawing_size(src_img), drawing_size(tgt_img)
    src = rescale_points(src, src_img.size, small_src.size)
    pred = rescale_points(pred, tgt_img.size, small_tgt.size)
    tgt = None if tgt is None else rescale_points(tgt, tgt_img.size, small_tgt.size)
    src_img, tgt_img = small_src, small_tgt
    gap = max(8, src_img.width // 50)
    canvas, offset = pair_canvas(src_img, tgt_img, gap)
    width_in = min(14.0, max(8.0, canvas.shape[1] / 100))
    fig = Figure(figsize=(width_in, width_in * canvas.shape[0] / canvas.shape[1] + 0.9), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(canvas)
    ax.set_axis_off()
    draw_point_pairs(ax, src, pred, tgt, correct, offset)
    ax.set_xlim(-0.5, canvas.shape[1] - 0.5)
    ax.set_ylim(canvas.shape[0] - 0.5, -0.5)
    ax.set_title(pair_title(title, correct, threshold_px, len(src)), fontsize=11)
    ax.legend(
        handles=legend_handles(correct, tgt is not None, threshold_px),
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=4,
        fontsize=8,
        frameon=False,
    )
    save_figure(fig, out_path)
    return fig


def draw_point_pairs(
    ax, src: np.ndarray, pred: np.ndarray, tgt: Optional[np.ndarray], correct: Optional[np.ndarray], offset: int
) -> None:
    """Markers and lines of every kept point; target-image x is shifted by ``offset``."""
    colours = distinct_colours(len(src)) / 255.0  # (N, 3)
    halo = [patheffects.withStroke(linewidth=2.8, foreground="black", alpha=0.35)]  # lines read on any image
    for i, colour in enumerate(colours):
        px, py = pred[i, 0] + offset, pred[i, 1]
        line = colour if correct is None else (CORRECT_COLOUR if correct[i] else WRONG_COLOUR)
        ax.plot([src[i, 0], px], [src[i, 1], py], color=line, lw=1.4, path_effects=halo, gid=LINE_GID)
        if tgt is not None:
            gx, gy = tgt[i, 0] + offset, tgt[i, 1]
            ax.plot([px, gx], [py, gy], color=colour, lw=1.2, ls=":")
            ax.plot(gx, gy, marker="o", ms=9, mfc="none", mec=colour, mew=1.8)
        ax.plot(src[i, 0], src[i, 1], marker="o", ms=6.5, color=colour, mec="white", mew=0.9)
        if correct is not None and not correct[i]:
            ax.plot(px, py, marker="X", ms=9, color=colour, mec="black", mew=0.8)
        else:
            ax.plot(px, py, marker="D", ms=6, color=colour, mec="white", mew=0.9)
