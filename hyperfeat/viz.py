"""Pictures: the mixing-weight heat map, correspondence pairs, point tracks, video masks.

Everything here runs headless. Matplotlib is used through its object API
(:class:`matplotlib.figure.Figure` on an Agg canvas), never through pyplot, so importing this
module neither needs a display nor changes the user's matplotlib backend.

Conventions: points are (x, y) in pixels (x right, y down, pixel centres at integers); tracks
are (N, T, 2) xy and visibility (N, T) bool, True = visible. Figures come back as
:class:`~matplotlib.figure.Figure` (heat map, correspondences; :func:`figure_to_array` turns one
into an RGB array for wandb); per-frame pictures (tracks, masks) come back as PIL images.
"""

from __future__ import annotations

import colorsys
from fractions import Fraction
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from matplotlib import colormaps, patheffects
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from PIL import Image, ImageDraw

from hyperfeat.errors import HyperfeatError
from hyperfeat.images import ImageLike, load_image

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence]
PathLike = Union[str, Path]

ANNOTATE_MAX_CELLS = 15  # annotate heat-map cells with percentages up to this many per side
MAX_CELL_GID = "max_cell"  # gid of the rectangle outlining the largest mixing weight
LINE_GID = "match_line"  # gid of each source → prediction line of a correspondence picture
CORRECT_COLOUR = "#2bd13a"  # line of a prediction within the threshold
WRONG_COLOUR = "#ff2a2a"  # line of a prediction beyond it
VIDEO_SUFFIXES = (".gif", ".mp4")
MP4_CODECS = ("libx264", "h264", "mpeg4")  # first one this PyAV build can encode wins


# ---------------------------------------------------------------------------- helpers


def to_numpy(values: ArrayLike, dtype: type = np.float64) -> np.ndarray:
    """Tensor, array or nested list → numpy array of ``dtype`` (detached, on CPU)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype)


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render ``fig`` and return it as (H, W, 3) uint8 RGB (e.g. for ``wandb.Image``)."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()  # (H, W, 3)


def save_figure(fig: Figure, out_path: Optional[PathLike]) -> None:
    """Write ``fig`` as an image (format from the suffix, PNG by default) if a path is given."""
    if out_path is None:
        return
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format=path.suffix.lstrip(".").lower() or "png", dpi=fig.dpi)


def distinct_colours(n: int) -> np.ndarray:
    """(n, 3) uint8 saturated colours with evenly spaced hues (alternating brightness)."""
    hues = np.arange(n) / max(n, 1)
    values = [1.0 if i % 2 == 0 else 0.8 for i in range(n)]  # neighbours differ in brightness too
    rgb = [colorsys.hsv_to_rgb(h, 0.9, v) for h, v in zip(hues, values)]
    return (np.array(rgb, dtype=np.float64).reshape(n, 3) * 255).round().astype(np.uint8)


# ---------------------------------------------------------------------------- mixing weights


def noisy_to_clean_order(timestep_labels: Sequence[int]) -> np.ndarray:
    """Indices that sort timestep labels from the noisiest to the cleanest UNet call.

    A label k is the inversion step at t = seq_next[N-1-k] (see ``schedule.py``): label 0 is the
    noisiest call and the largest label the cleanest (t = -1), so this is ascending label order.
    """
    return np.argsort(np.asarray(timestep_labels), kind="stable")


def layer_tick_labels(layer_names: Sequence[str], channels: Optional[Sequence[int]]) -> list[str]:
    """``up_blocks.0.resnets.2`` or, with channel counts, ``up_blocks.0.resnets.2 (1280)``."""
    if channels is None:
        return list(layer_names)
    if len(channels) != len(layer_names):
        raise HyperfeatError(f"got {len(channels)} channel counts for {len(layer_names)} layers")
    return [f"{name} ({c})" for name, c in zip(layer_names, channels)]


def check_weights(weights: np.ndarray, timestep_labels: Sequence[int], layer_names: Sequence[str]) -> None:
    """Raise unless ``weights`` is (S, L) for S timestep labels and L layer names."""
    expected = (len(timestep_labels), len(layer_names))
    if weights.ndim != 2 or weights.shape != expected:
        raise HyperfeatError(
            f"mixing weights must be (timesteps, layers) = {expected}; got shape {weights.shape}"
        )


def annotate_cells(ax, grid: np.ndarray, norm, cmap) -> None:
    """Write each cell's value (percent) in a colour that reads on the cell's colour."""
    fontsize = 8 if max(grid.shape) > 8 else 10
    for (row, col), value in np.ndenumerate(grid):  # grid (L, S)
        r, g, b, _ = cmap(norm(value))
        dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
        ax.text(col, row, f"{value:.1f}", ha="center", va="center", fontsize=fontsize,
                color="white" if dark else "black")


def outline_max_cell(ax, grid: np.ndarray) -> tuple[int, int]:
    """Outline the largest cell of ``grid`` (L, S); returns its (row, col)."""
    row, col = np.unravel_index(int(np.argmax(grid)), grid.shape)
    ax.add_patch(Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="red",
                           linewidth=2.5, gid=MAX_CELL_GID, zorder=3))
    return int(row), int(col)


def plot_mixing_weights(
    weights: ArrayLike,
    timestep_labels: Sequence[int],
    layer_names: Sequence[str],
    out_path: Optional[PathLike] = None,
    title: Optional[str] = None,
    channels: Optional[Sequence[int]] = None,
    timestep_values: Optional[Sequence[int]] = None,
) -> Figure:
    """Heat map of softmax mixing weights (S, L): layers down the y axis, timesteps across x.

    Columns are ordered from the noisiest to the cleanest timestep (ascending label), cells show
    the weight in percent when the grid is at most 15 × 15, and the largest cell is outlined in
    red (its rectangle has gid ``"max_cell"``). ``channels`` (one per layer) is added to the
    layer labels; ``timestep_values`` (the diffusion timestep t of each label, −1 for the clean
    latent; see :func:`label_timestep_values`) is written under the labels. The title (``title``
    or "Mixing weights") is followed by the largest weight, where it is, and the uniform weight.
    Writes the figure to ``out_path`` (PNG by suffix) when given.
    """
    w = to_numpy(weights)  # (S, L)
    check_weights(w, timestep_labels, layer_names)
    if timestep_values is not None and len(timestep_values) != len(timestep_labels):
        raise HyperfeatError(f"got {len(timestep_values)} timestep values for {len(timestep_labels)} labels")
    order = noisy_to_clean_order(timestep_labels)
    grid = 100.0 * w[order].T  # (L, S) percent, columns noisy → clean
    n_layers, n_steps = grid.shape
    cell = 0.55 if max(grid.shape) <= ANNOTATE_MAX_CELLS else 0.3
    fig = Figure(figsize=(4.2 + cell * n_steps, 1.9 + cell * n_layers), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    cmap = colormaps["viridis"]
    image = ax.imshow(grid, cmap=cmap, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(n_steps), labels=step_tick_labels(timestep_labels, timestep_values, order))
    ylabels = layer_tick_labels(layer_names, channels)
    ax.set_yticks(range(n_layers), labels=ylabels)
    ax.tick_params(labelsize=8)
    ax.set_xlabel("timestep label" + (" and t" if timestep_values is not None else "") + " (noisiest → cleanest)")
    ax.set_ylabel("decoder layer" + (" (channels)" if channels is not None else ""))
    if max(grid.shape) <= ANNOTATE_MAX_CELLS:
        annotate_cells(ax, grid, image.norm, cmap)
    row, col = outline_max_cell(ax, grid)
    fig.colorbar(image, ax=ax, label="mixing weight (%)", shrink=0.9, aspect=30)
    summary = (f"max {grid.max():.1f}% (red: {layer_names[row]}, label {timestep_labels[order[col]]}), "
               f"uniform {100 / grid.size:.1f}%")
    ax.set_title(f"{title or 'Mixing weights'}\n{summary}", fontsize=9)
    save_figure(fig, out_path)
    return fig


def step_tick_labels(labels: Sequence[int], values: Optional[Sequence[int]], order: np.ndarray) -> list[str]:
    """Column labels in ``order``: the label, with timestep values a second line ``t=180`` (``clean`` for t = −1)."""
    if values is None:
        return [str(labels[i]) for i in order]
    return [f"{labels[i]}\n" + ("clean" if int(values[i]) < 0 else f"t={int(values[i])}") for i in order]


def label_timestep_values(mode: str, num_steps: int, labels: Sequence[int]) -> list[int]:
    """The diffusion timestep t of each label for feature ``mode`` (−1: the clean latent).

    Inversion and noise modes call the UNet at the inversion's timesteps; generation labels
    its step i, at t = seq[N−1−i] (see ``schedule.py``).
    """
    from hyperfeat import schedule

    if mode == "generation":
        by_label = {s.label: s.t for s in schedule.generation_steps(int(num_steps))}
        return [by_label[int(k)] for k in labels]
    return schedule.label_timesteps(int(num_steps), [int(k) for k in labels])


# ---------------------------------------------------------------------------- correspondences


def side_by_side(left: Image.Image, right: Image.Image, gap: int) -> tuple[np.ndarray, int]:
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


def correct_mask(predicted: np.ndarray, target: Optional[np.ndarray], threshold_px: Optional[float]) -> Optional[np.ndarray]:
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
        handles.append(Line2D([], [], marker="D", ls="-", color=CORRECT_COLOUR, mfc=grey, mec="white",
                              label=f"correct (≤ {threshold_px:.1f}px)"))
        handles.append(Line2D([], [], marker="X", ls="-", color=WRONG_COLOUR, mfc=grey, mec="black",
                              label=f"wrong (> {threshold_px:.1f}px)"))
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
    correct = correct_mask(pred, tgt, threshold_px)

    gap = max(8, src_img.width // 50)
    canvas, offset = side_by_side(src_img, tgt_img, gap)
    width_in = min(14.0, max(8.0, canvas.shape[1] / 100))
    fig = Figure(figsize=(width_in, width_in * canvas.shape[0] / canvas.shape[1] + 0.9), dpi=100,
                 layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(canvas)
    ax.set_axis_off()
    draw_point_pairs(ax, src, pred, tgt, correct, offset)
    ax.set_xlim(-0.5, canvas.shape[1] - 0.5)
    ax.set_ylim(canvas.shape[0] - 0.5, -0.5)
    ax.set_title(pair_title(title, correct, threshold_px, len(src)), fontsize=11)
    ax.legend(handles=legend_handles(correct, tgt is not None, threshold_px), loc="upper center",
              bbox_to_anchor=(0.5, 0.0), ncol=4, fontsize=8, frameon=False)
    save_figure(fig, out_path)
    return fig


def draw_point_pairs(ax, src: np.ndarray, pred: np.ndarray, tgt: Optional[np.ndarray],
                     correct: Optional[np.ndarray], offset: int) -> None:
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


# ---------------------------------------------------------------------------- tracks and video


def frames_to_pil(frames: Union[np.ndarray, torch.Tensor, Sequence[ImageLike]]) -> list[Image.Image]:
    """(T, H, W, 3) uint8 array/tensor or a list of images → list of RGB PIL images."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    if isinstance(frames, np.ndarray):
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise HyperfeatError(f"frames must be (T, H, W, 3); got shape {frames.shape}")
        return [load_image(np.ascontiguousarray(f)) for f in frames]
    return [load_image(f) for f in frames]


def marker_radius(size: tuple[int, int]) -> int:
    """Dot radius in pixels for a frame of ``size`` (W, H)."""
    return max(3, min(size) // 80)


def draw_tail(draw: ImageDraw.ImageDraw, path: np.ndarray, vis: np.ndarray, colour: tuple, width: int) -> None:
    """Segments along ``path`` (K, 2), oldest first, alpha falling with age (halved where occluded)."""
    k = len(path)
    for j in range(k - 1):
        a, b = path[j], path[j + 1]
        if not (np.isfinite(a).all() and np.isfinite(b).all()) or np.hypot(*(b - a)) < 0.5:
            continue
        alpha = 255 * (j + 1) / k  # age k-1-j: the newest segment is the most opaque
        if not (vis[j] and vis[j + 1]):
            alpha /= 2
        draw.line([tuple(a), tuple(b)], fill=(*colour, int(round(alpha))), width=width)


def draw_marker(draw: ImageDraw.ImageDraw, xy: np.ndarray, visible: bool, colour: tuple, radius: int) -> None:
    """Filled dot (visible) or hollow ring (occluded) at ``xy``, with a dark rim for contrast."""
    x, y = float(xy[0]), float(xy[1])
    outer = [x - radius - 1, y - radius - 1, x + radius + 1, y + radius + 1]
    inner = [x - radius, y - radius, x + radius, y + radius]
    if visible:
        draw.ellipse(outer, fill=(0, 0, 0, 255))
        draw.ellipse(inner, fill=(*colour, 255))
    else:
        draw.ellipse(outer, outline=(0, 0, 0, 255), width=1)
        draw.ellipse(inner, outline=(*colour, 255), width=max(2, radius // 2))


def check_tracks(tracks: ArrayLike, visible: Optional[ArrayLike], num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, T, 2) float tracks and (N, T) bool visibility for T = ``num_frames``."""
    xy = to_numpy(tracks)
    if xy.ndim != 3 or xy.shape[2] != 2 or xy.shape[1] != num_frames:
        raise HyperfeatError(f"tracks must be (N, {num_frames}, 2) for {num_frames} frames; got shape {xy.shape}")
    vis = np.ones(xy.shape[:2], bool) if visible is None else to_numpy(visible, bool)
    if vis.shape != xy.shape[:2]:
        raise HyperfeatError(f"visible must be {xy.shape[:2]} (N, T) like tracks; got shape {vis.shape}")
    return xy, vis


def draw_tracks(
    frames: Union[np.ndarray, torch.Tensor, Sequence[ImageLike]],
    tracks: ArrayLike,
    visible: Optional[ArrayLike] = None,
    tail_length: int = 10,
    show_occluded: bool = True,
) -> list[Image.Image]:
    """One RGB picture per frame: every point in its own colour with a fading tail.

    ``tracks`` (N, T, 2) xy pixels, ``visible`` (N, T) bool (all visible if None). The tail
    joins the last ``tail_length`` positions, alpha falling with age (halved over occluded
    steps). Visible points are filled dots, occluded ones hollow rings at the predicted place.
    Non-finite positions are skipped; ``show_occluded=False`` drops occluded positions too
    (for ground truth, whose occluded positions are placeholders). Returns T images of the
    frame size.
    """
    images = frames_to_pil(frames)
    xy, vis = check_tracks(tracks, visible, len(images))
    if not show_occluded:
        xy = np.where(vis[..., None], xy, np.nan)  # (N, T, 2)
    colours = [tuple(int(v) for v in c) for c in distinct_colours(xy.shape[0])]
    out = []
    for t, frame in enumerate(images):
        canvas = frame.copy()
        draw = ImageDraw.Draw(canvas, "RGBA")  # RGBA fills blend into the RGB frame
        radius = marker_radius(canvas.size)
        start = max(0, t - max(0, tail_length))
        for n, colour in enumerate(colours):
            draw_tail(draw, xy[n, start : t + 1], vis[n, start : t + 1], colour, max(1, radius // 2))
        for n, colour in enumerate(colours):
            if np.isfinite(xy[n, t]).all():
                draw_marker(draw, xy[n, t], bool(vis[n, t]), colour, radius)
        out.append(canvas)
    return out


def even_size(image: Image.Image) -> Image.Image:
    """Pad one column/row (copying the edge) so width and height are even, as yuv420p needs."""
    w, h = image.size
    if w % 2 == 0 and h % 2 == 0:
        return image
    array = np.asarray(image)
    array = np.pad(array, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return Image.fromarray(array)


def pick_mp4_codec() -> str:
    """The first encoder of ``MP4_CODECS`` this PyAV build has."""
    import av

    for name in MP4_CODECS:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - PyAV raises different types across versions
            continue
    raise HyperfeatError(f"no MP4 encoder available in PyAV (tried {', '.join(MP4_CODECS)}); write a .gif instead")


def write_mp4(frames: list[Image.Image], path: Path, fps: float) -> None:
    """Encode RGB frames as H.264 (or MPEG-4 part 2) yuv420p with PyAV."""
    import av

    codec = pick_mp4_codec()
    first = even_size(frames[0])
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = first.size
        stream.pix_fmt = "yuv420p"
        if codec == "mpeg4":
            stream.bit_rate = 8_000_000
        else:
            stream.options = {"crf": "18"}
        for frame in frames:
            video_frame = av.VideoFrame.from_ndarray(np.asarray(even_size(frame)), format="rgb24")
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode())  # flush


def write_gif(frames: list[Image.Image], path: Path, fps: float) -> None:
    """Looping GIF; note PIL merges identical consecutive frames into one longer frame."""
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(round(1000 / fps)),
                   loop=0, disposal=1)


def write_video(frames: Sequence[Image.Image], out_path: PathLike, fps: float = 10) -> Path:
    """Write frames as ``.gif`` (PIL) or ``.mp4`` (PyAV) by the suffix; returns the path.

    All frames must share one size; MP4 frames are padded to even width/height.
    """
    path = Path(out_path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise HyperfeatError(f"cannot write video {path}: suffix {path.suffix!r} is not one of {', '.join(VIDEO_SUFFIXES)}")
    images = [load_image(f) for f in frames]
    if not images:
        raise HyperfeatError(f"cannot write video {path}: no frames")
    if fps <= 0:
        raise HyperfeatError(f"fps must be positive; got {fps}")
    sizes = {im.size for im in images}
    if len(sizes) > 1:
        raise HyperfeatError(f"cannot write video {path}: frames differ in size {sorted(sizes)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    (write_gif if suffix == ".gif" else write_mp4)(images, path, fps)
    return path


# ---------------------------------------------------------------------------- masks


def davis_palette() -> np.ndarray:
    """(256, 3) uint8: the palette of the DAVIS-2017 annotation PNGs.

    Ids 0–21 take the PASCAL-VOC bit pattern (each id's bits spread over R, G, B from the high
    bit down) with 192 written as 191, as in the DAVIS release; ids 22–255 are greys (i, i, i).
    """
    palette = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)  # (256, 3) grey ramp
    for i in range(22):
        rgb, code = [0, 0, 0], i
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((code >> channel) & 1) << (7 - bit)
            code >>= 3
        palette[i] = [191 if v == 192 else v for v in rgb]
    return palette


def check_mask(mask: ArrayLike) -> np.ndarray:
    """(H, W) integer ids in 0…255 as uint8."""
    if isinstance(mask, Image.Image):
        mask = np.asarray(mask)
    ids = to_numpy(mask, np.int64)
    if ids.ndim != 2:
        raise HyperfeatError(f"mask must be (H, W) object ids; got shape {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() > 255):
        raise HyperfeatError(f"mask ids must lie in 0…255 for a palette PNG; got {ids.min()}…{ids.max()}")
    return ids.astype(np.uint8)


def palette_mask(mask: ArrayLike) -> Image.Image:
    """(H, W) object ids → mode 'P' image with the DAVIS palette (save as PNG for DAVIS format)."""
    image = Image.fromarray(check_mask(mask), mode="P")
    image.putpalette(davis_palette().reshape(-1).tolist())
    return image


def object_edges(ids: np.ndarray) -> np.ndarray:
    """(H, W) bool: object pixels with a 4-neighbour of another id."""
    edge = np.zeros(ids.shape, bool)
    edge[1:, :] |= ids[1:, :] != ids[:-1, :]
    edge[:-1, :] |= ids[:-1, :] != ids[1:, :]
    edge[:, 1:] |= ids[:, 1:] != ids[:, :-1]
    edge[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    return edge & (ids > 0)


def overlay_masks(frame: ImageLike, mask: ArrayLike, alpha: float = 0.5, edges: bool = True) -> Image.Image:
    """Blend each object's DAVIS colour into ``frame``; background (id 0) pixels stay untouched.

    ``mask`` (H, W) object ids of the frame's size; ``alpha`` is the colour's weight. With
    ``edges`` the object's boundary pixels take the full colour, so touching objects separate.
    """
    rgb = np.asarray(load_image(frame), dtype=np.float64)  # (H, W, 3)
    ids = check_mask(mask)
    if ids.shape != rgb.shape[:2]:
        raise HyperfeatError(f"mask shape {ids.shape} does not match frame (H, W) = {rgb.shape[:2]}")
    colour = davis_palette()[ids].astype(np.float64)  # (H, W, 3)
    blended = (1 - alpha) * rgb + alpha * colour
    if edges:
        blended[object_edges(ids)] = colour[object_edges(ids)]
    out = np.where((ids > 0)[..., None], blended, rgb)
    return Image.fromarray(out.round().clip(0, 255).astype(np.uint8))
