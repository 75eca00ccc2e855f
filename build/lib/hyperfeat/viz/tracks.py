"""TODO docstring (hyperfeat.video_api, hyperfeat.viz)."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image, ImageDraw

from hyperfeat.errors import HyperfeatError
from hyperfeat.images import ImageLike, load_image
from hyperfeat.video.frames import VideoFrames, frames_as_uint8
from hyperfeat.viz.common import ArrayLike, distinct_colours, to_numpy


def draw_video_tracks(video: VideoFrames, tracks: torch.Tensor, visible: torch.Tensor, tail_length: int = 10):
    """Track pictures on the frames as read: tracks (N, T, 2) in original pixels are scaled to the
    frames' size."""
    from hyperfeat.geometry import rescale_points

    xy = rescale_points(tracks.float(), video.original_size, video.size)
    return draw_tracks(frames_as_uint8(video.frames), xy, visible, tail_length=tail_length)




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
