"""Pictures of a state-change analysis (:class:`hyperfeat.correspond.changes.StateChanges`):
the drift plot, the state timeline and the overlay frames colouring points by state.

Colours: each region has its own hue (region 0, the points that never change, is gray); within
a region, each later state is drawn darker/shifted, one colour per prototype
(:func:`state_colours`). Drawing only: every number comes from the result.
"""

from __future__ import annotations

import warnings
from typing import Optional, Sequence

import numpy as np
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from hyperfeat.io import PathLike
from hyperfeat.viz.figures import distinct_colours, save_figure
from hyperfeat.viz.tracks import draw_marker, frames_to_pil, marker_radius

UNCHANGED = (150, 150, 150)
NOT_ANALYSED = (60, 60, 60)


def region_colours(num_regions: int) -> list[tuple[int, int, int]]:
    """Region r ≥ 1 → a distinct saturated colour; region 0 → gray. Index by region."""
    colours = [UNCHANGED] + [tuple(int(v) for v in c) for c in distinct_colours(max(num_regions - 1, 1))]
    return colours[: max(num_regions, 1)]


def state_colours(result) -> list[tuple[int, int, int]]:
    """One RGB colour per prototype: its region's colour, lighter in the first state and full
    in later ones (region 0: gray)."""
    if result.prototypes is None:
        return []
    num_regions = max(result.prototypes.region) + 1
    base = region_colours(num_regions)
    out = []
    for r, s in zip(result.prototypes.region, result.prototypes.state):
        c = np.array(base[r], dtype=float)
        if r > 0 and s == 0:
            c = 0.45 * c + 0.55 * 255  # before: a pale version
        elif r > 0 and s > 1:
            c = c * (0.8 ** (s - 1))
        out.append(tuple(int(round(v)) for v in c))
    return out


def _event_lines(ax, events, label: bool) -> None:
    for e in events:
        if e.end > e.start:  # a gradual change: its span shaded
            ax.axvspan(e.start - 0.5, e.end - 0.5, color="crimson", alpha=0.12, lw=0)
        ax.axvline(e.start - 0.5, color="crimson", lw=1.2, ls="--", alpha=0.8)
        if label:
            span = f"{e.start}–{e.end}" if e.end > e.start else f"{e.start}"
            ax.text(
                e.start - 0.4,
                0.98,
                f"event {e.index}\nframes {span}\n{len(e.points)} pts",
                transform=ax.get_xaxis_transform(),
                va="top",
                fontsize=7,
                color="crimson",
            )


def plot_drift(result, out_path: Optional[PathLike] = None, title: Optional[str] = None) -> Figure:
    """Two panels over frames: top, each point's drift beyond the references' (its distance to
    its query appearance in channel noise units, minus their median), thin, in its region's colour, with each region's
    mean (thick); bottom, the same in noise units (the jump above the point's recent level), with
    the threshold; events as dashed red lines, gradual ones shaded from start to end."""
    fig = Figure(figsize=(10, 6.5), dpi=100)
    top, bottom = fig.add_subplot(2, 1, 1), fig.add_subplot(2, 1, 2)
    frames = np.arange(result.num_frames)
    regions = result.regions.numpy()
    num_regions = int(regions.max()) + 1 if (regions >= 0).any() else 1
    colours = [np.array(c) / 255 for c in region_colours(num_regions)]
    drift = result.drift.numpy()
    score = result.score.numpy()
    order = np.argsort(regions, kind="stable")  # changed regions drawn last, on top
    for n in order:
        if regions[n] < 0:
            continue
        c = colours[regions[n]]
        alpha = 0.2 if regions[n] == 0 else 0.6
        top.plot(frames, drift[n], color=c, lw=0.7, alpha=alpha)
        bottom.plot(frames, score[n], color=c, lw=0.7, alpha=alpha)
    for r in range(num_regions):
        sel = regions == r
        if sel.any():
            with warnings.catch_warnings():  # frames where the whole region is occluded: a gap, not a warning
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(drift[sel], axis=0)
            name = "unchanged" if r == 0 else f"region {r}"
            top.plot(
                frames, mean, color=colours[r] if r else (0.3, 0.3, 0.3), lw=2.5, label=f"{name} ({int(sel.sum())} pts)"
            )
    bottom.axhline(
        result.threshold, color="crimson", lw=0.8, alpha=0.6, ls=":", label=f"threshold {result.threshold:g}"
    )
    _event_lines(top, result.events, label=True)
    _event_lines(bottom, result.events, label=False)
    top.set_ylabel("drift beyond the references")
    top.set_title(title or "drift of each point from its query appearance", fontsize=10)
    bottom.set_ylabel("jump (noise units)")
    bottom.set_title("jump above the point's recent level, in units of its own and the references' noise", fontsize=10)
    bottom.set_xlabel("frame")
    for ax in (top, bottom):
        ax.set_xlim(-0.5, result.num_frames - 0.5)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left")
    fig.text(0.01, 0.005, result.message[:160], fontsize=7)
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    save_figure(fig, out_path)
    return fig


def plot_timeline(result, out_path: Optional[PathLike] = None) -> Figure:
    """Points (rows, grouped by region) × frames: the colour of each point's state; black where
    the point was not analysed, hatched lighter where the tracker called it occluded."""
    colours = state_colours(result)
    states = result.point_states.numpy()  # (N, T)
    regions = result.regions.numpy()
    order = np.lexsort((np.arange(len(regions)), -np.where(regions > 0, 1, 0), regions))
    order = (
        [n for n in order if regions[n] > 0]
        + [n for n in order if regions[n] == 0]
        + [n for n in order if regions[n] < 0]
    )
    img = np.zeros((len(order), result.num_frames, 3), dtype=np.uint8)
    vis = result.visible.numpy()
    for row, n in enumerate(order):
        for t in range(result.num_frames):
            s = states[n, t]
            c = np.array(colours[s] if s >= 0 else NOT_ANALYSED, dtype=float)
            if s >= 0 and not vis[n, t]:
                c = 0.6 * c + 0.4 * 40
            img[row, t] = c.astype(np.uint8)
    fig = Figure(figsize=(10, 4.5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(
        img, aspect="auto", interpolation="nearest", extent=(-0.5, result.num_frames - 0.5, len(order) - 0.5, -0.5)
    )
    _event_lines(ax, result.events, label=False)
    # region labels along the left
    start = 0
    for r in sorted(set(regions[order].tolist()), key=lambda v: (v <= 0, v < 0, v)):
        count = int((regions == r).sum())
        name = {0: "unchanged", -1: "not analysed"}.get(r, f"region {r}")
        ax.text(-0.6, start + count / 2, f"{name} ({count})", ha="right", va="center", fontsize=7)
        start += count
    ax.set_yticks([])
    ax.set_xlabel("frame")
    ax.set_title(
        "state of each point over time (one colour per region and state; darker: occluded; "
        "dark: between a change's start and end)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.subplots_adjust(left=0.15)
    save_figure(fig, out_path)
    return fig


def draw_state_overlay(frames, result, scale: Sequence[float] = (1.0, 1.0)) -> list[Image.Image]:
    """One picture per frame: every analysed point at its tracked place, coloured by its current
    state (filled: visible, ring: occluded), and a banner on event frames. ``frames``: (T, H, W, 3)
    uint8 or images; ``scale``: (sx, sy) from the tracks' pixels to the frames' pixels."""
    images = frames_to_pil(frames)
    colours = state_colours(result)
    xy = result.tracks.numpy() * np.asarray(scale, dtype=float)[None, None]
    vis = result.visible.numpy()
    states = result.point_states.numpy()
    event_frames = {e.start: e for e in result.events}
    out = []
    for t, frame in enumerate(images):
        canvas = frame.copy()
        draw = ImageDraw.Draw(canvas, "RGBA")
        radius = marker_radius(canvas.size)
        for n in range(xy.shape[0]):
            s = states[n, t]
            if s < 0 or not np.isfinite(xy[n, t]).all():
                continue
            draw_marker(draw, xy[n, t], bool(vis[n, t]), colours[s], radius)
        text = f"frame {t}"
        if t in event_frames:
            e = event_frames[t]
            text += f"  EVENT {e.index}: {len(e.points)} points change"

            draw.rectangle([0, 0, canvas.size[0], 4], fill=(220, 20, 60, 255))
        draw.rectangle(
            [0, canvas.size[1] - 16, min(canvas.size[0], 8 + 6 * len(text)), canvas.size[1]], fill=(0, 0, 0, 160)
        )
        draw.text((4, canvas.size[1] - 14), text, fill=(255, 255, 255, 255))
        out.append(canvas)
    return out


def draw_event_picture(
    frame, result, event, scale: Sequence[float] = (1.0, 1.0), out_path: Optional[PathLike] = None
) -> Image.Image:
    """The frame where ``event`` ends (its new state reached), its points drawn large in their
    region's colour, the other analysed points small (gray: unchanged, darker: other events), a
    legend and a title naming the frames. ``frame``: (H, W, 3) uint8 or an image."""
    image = frames_to_pil([frame])[0].convert("RGB")
    zoom = max(1.0, 480 / image.size[0])  # small frames drawn larger, so points and text can be read
    if zoom > 1:
        image = image.resize((round(image.size[0] * zoom), round(image.size[1] * zoom)), Image.BILINEAR)
        scale = (scale[0] * zoom, scale[1] * zoom)
    width, height = image.size
    band = 34
    canvas = Image.new("RGB", (width, height + band), (255, 255, 255))
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas, "RGBA")
    num_regions = int(result.regions.max()) + 1 if len(result.regions) else 1
    colours = region_colours(max(num_regions, 2))
    t = min(event.end, result.num_frames - 1)
    xy = result.tracks[:, t].numpy() * np.asarray(scale, dtype=float)[None]
    radius = marker_radius(image.size)
    members = set(event.points)
    for n in range(xy.shape[0]):
        if int(result.regions[n]) < 0 or n in members or not np.isfinite(xy[n]).all():
            continue
        colour = (
            UNCHANGED if int(result.regions[n]) == 0 else tuple(int(v * 0.6) for v in colours[int(result.regions[n])])
        )
        draw_marker(draw, xy[n], bool(result.visible[n, t]), colour, max(1, radius // 2))
    own = colours[event.region] if event.region < len(colours) else (220, 20, 60)
    for n in event.points:
        if np.isfinite(xy[n]).all():
            draw_marker(draw, xy[n], bool(result.visible[n, t]), own, radius + 1)
    span = f"frames {event.start}-{event.end} (gradual)" if event.end > event.start else f"frame {event.start} (sudden)"
    draw.text(
        (4, height + 2),
        f"event {event.index}: {span}, {len(event.points)} points, {event.score:.1f} noise units; shown at frame {t}",
        fill=(0, 0, 0),
    )
    x = 4
    for label, colour in ((f"changed (region {event.region})", own), ("unchanged", UNCHANGED)):
        draw.ellipse([x, height + 20, x + 8, height + 28], fill=colour)
        draw.text((x + 12, height + 18), label, fill=(0, 0, 0))
        x += 14 + 7 * len(label)
    if out_path is not None:
        canvas.save(out_path)
    return canvas
