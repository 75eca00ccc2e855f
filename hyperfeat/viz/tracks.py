"""Track pictures: every point in its own colour with a fading tail; a filled dot where
visible, a cross where occluded; a frame counter and a legend; ground truth beside prediction."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image, ImageDraw

from hyperfeat.errors import HyperfeatError
from hyperfeat.images import ImageLike, load_image
from hyperfeat.video.frames import VideoFrames, frames_as_uint8
from hyperfeat.viz.figures import ArrayLike, distinct_colours, to_numpy


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
    """Filled dot (visible) or a cross (occluded) at ``xy``, each with a dark rim for contrast."""
    x, y = float(xy[0]), float(xy[1])
    if visible:
        draw.ellipse([x - radius - 1, y - radius - 1, x + radius + 1, y + radius + 1], fill=(0, 0, 0, 255))
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=(*colour, 255))
    else:
        width = max(2, radius // 2)
        for (ax, ay), (bx, by) in (((-1, -1), (1, 1)), ((-1, 1), (1, -1))):
            line = [(x + ax * radius, y + ay * radius), (x + bx * radius, y + by * radius)]
            draw.line(line, fill=(0, 0, 0, 255), width=width + 2)
            draw.line(line, fill=(*colour, 255), width=width)


def draw_caption(canvas: Image.Image, text: str, corner: str = "top") -> None:
    """White text on a dark band at the top or bottom left of ``canvas`` (in place)."""
    from PIL import ImageFont

    draw = ImageDraw.Draw(canvas, "RGBA")
    font = ImageFont.load_default()
    box = draw.textbbox((0, 0), text, font=font)
    tw, th = box[2] - box[0], box[3] - box[1]
    y = 2 if corner == "top" else canvas.size[1] - th - 6
    draw.rectangle([0, y - 2, tw + 8, y + th + 4], fill=(0, 0, 0, 170))
    draw.text((4, y - box[1]), text, fill=(255, 255, 255, 255), font=font)


def draw_legend(canvas: Image.Image, radius: int) -> None:
    """ "● visible  ✕ occluded" at the bottom left, drawn with the real markers (in place)."""
    from PIL import ImageFont

    draw = ImageDraw.Draw(canvas, "RGBA")
    font = ImageFont.load_default()
    h = canvas.size[1]
    height = 2 * radius + 8
    draw.rectangle([0, h - height, 150 + 4 * radius, h], fill=(0, 0, 0, 170))
    cy = h - height / 2
    draw_marker(draw, np.array([radius + 4, cy]), True, (255, 255, 255), radius)
    draw.text((2 * radius + 10, cy - 6), "visible", fill=(255, 255, 255, 255), font=font)
    x2 = 2 * radius + 70
    draw_marker(draw, np.array([x2 + radius, cy]), False, (255, 255, 255), radius)
    draw.text((x2 + 2 * radius + 6, cy - 6), "occluded", fill=(255, 255, 255, 255), font=font)


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
    counter: bool = True,
    legend: bool = True,
    title: str = "",
) -> list[Image.Image]:
    """One RGB picture per frame: every point in its own colour with a fading tail.

    ``tracks`` (N, T, 2) xy pixels, ``visible`` (N, T) bool (all visible if None). The tail
    joins the last ``tail_length`` positions, alpha falling with age (halved over occluded
    steps). Visible points are filled dots, occluded ones crosses at the predicted place.
    Non-finite positions are skipped; ``show_occluded=False`` drops occluded positions too
    (for ground truth, whose occluded positions are placeholders). ``counter`` writes
    "title  frame t+1/T" at the top, ``legend`` the marker legend at the bottom. Returns T images
    of the frame size.
    """
    images = frames_to_pil(frames)
    check_tracks(tracks, visible, len(images))  # one position per frame
    return list(iter_draw_tracks(images, tracks, visible, tail_length, show_occluded, counter, legend, title))


def iter_draw_tracks(
    images,
    tracks: ArrayLike,
    visible: Optional[ArrayLike] = None,
    tail_length: int = 10,
    show_occluded: bool = True,
    counter: bool = True,
    legend: bool = True,
    title: str = "",
):
    """:func:`draw_tracks` over an iterable of frames (PIL images, (3, H, W) tensors in [0, 1] or
    (H, W, 3) arrays), one picture at a time; ``tracks`` (N, T, 2) sets T."""
    xy = to_numpy(tracks)
    if xy.ndim != 3 or xy.shape[2] != 2:
        raise HyperfeatError(f"tracks must be (N, T, 2); got shape {xy.shape}")
    xy, vis = check_tracks(xy, visible, xy.shape[1])
    if not show_occluded:
        xy = np.where(vis[..., None], xy, np.nan)  # (N, T, 2)
    colours = [tuple(int(v) for v in c) for c in distinct_colours(xy.shape[0])]
    num_frames = xy.shape[1]
    for t, frame in enumerate(images):
        if isinstance(frame, torch.Tensor) and frame.ndim == 3 and frame.shape[0] == 3:
            frame = Image.fromarray(frames_as_uint8(frame[None])[0])
        canvas = load_image(frame).copy()
        draw = ImageDraw.Draw(canvas, "RGBA")  # RGBA fills blend into the RGB frame
        radius = marker_radius(canvas.size)
        start = max(0, t - max(0, tail_length))
        for n, colour in enumerate(colours):
            draw_tail(draw, xy[n, start : t + 1], vis[n, start : t + 1], colour, max(1, radius // 2))
        for n, colour in enumerate(colours):
            if np.isfinite(xy[n, t]).all():
                draw_marker(draw, xy[n, t], bool(vis[n, t]), colour, radius)
        if counter:
            draw_caption(canvas, f"{title}  frame {t + 1}/{num_frames}".strip())
        if legend:
            draw_legend(canvas, radius)
        yield canvas


def side_by_side(left: Image.Image, right: Image.Image, gap: int = 4) -> Image.Image:
    """Two pictures of one height next to each other, a dark gap between them."""
    out = Image.new("RGB", (left.size[0] + gap + right.size[0], max(left.size[1], right.size[1])), (20, 20, 20))
    out.paste(left, (0, 0))
    out.paste(right, (left.size[0] + gap, 0))
    return out


def draw_tracks_vs_truth(
    video: VideoFrames, tracks, visible, gt_tracks, gt_visible, score: str, tail_length: int = 10
) -> list[Image.Image]:
    """Ground truth (left) beside prediction (right), in original pixels scaled to the frames."""
    from hyperfeat.geometry import rescale_points

    frames = frames_as_uint8(video.frames)
    gt = rescale_points(torch.as_tensor(gt_tracks).float(), video.original_size, video.size)
    pred = rescale_points(torch.as_tensor(tracks).float(), video.original_size, video.size)
    left = draw_tracks(frames, gt, gt_visible, tail_length, show_occluded=False, legend=False, title="ground truth")
    right = draw_tracks(frames, pred, visible, tail_length, title=f"prediction ({score})")
    return [side_by_side(a, b) for a, b in zip(left, right)]


# ---------------------------------------------------------------------------- skeletons

# JHMDB's 15 joints (0-based): neck, belly, face, shoulders R/L, hips R/L, elbows R/L, knees R/L,
# wrists R/L, ankles R/L; the limbs joining them
JHMDB_SKELETON = (
    (2, 0),
    (0, 1),
    (0, 3),
    (0, 4),
    (3, 7),
    (7, 11),
    (4, 8),
    (8, 12),
    (1, 5),
    (1, 6),
    (5, 9),
    (9, 13),
    (6, 10),
    (10, 14),
)


def draw_skeleton(
    frame: ImageLike,
    joints: np.ndarray,
    valid: np.ndarray,
    limbs: Sequence[tuple[int, int]],
    colours: Sequence[tuple],
    caption: str = "",
) -> Image.Image:
    """One frame with joints (J, 2) xy pixels as dots in their own colours and the ``limbs``
    between valid joints as white lines; joints with ``valid`` (J,) False or non-finite are left
    out. ``caption`` is written at the top."""
    canvas = load_image(frame).copy()
    draw = ImageDraw.Draw(canvas, "RGBA")
    radius = marker_radius(canvas.size)
    ok = valid & np.isfinite(joints).all(axis=1)
    for a, b in limbs:
        if ok[a] and ok[b]:
            draw.line([tuple(joints[a]), tuple(joints[b])], fill=(255, 255, 255, 200), width=max(1, radius // 2))
    for j in np.nonzero(ok)[0]:
        draw_marker(draw, joints[j], True, colours[j], radius)
    if caption:
        draw_caption(canvas, caption)
    return canvas


def draw_joints_vs_truth(
    video: VideoFrames, joints, gt_joints, gt_valid, score: str, limbs: Sequence[tuple[int, int]] = JHMDB_SKELETON
) -> list[Image.Image]:
    """Ground-truth joints (left) beside the propagated ones (right) with their skeleton: joints
    (T, J, 2) xy in original pixels scaled to the frames; ``gt_valid`` (T, J) bool marks the
    ground-truth joints to draw (inside the frame). The same joint has the same colour on both
    sides; the right one is titled "prediction (``score``)"."""
    from hyperfeat.geometry import rescale_points

    frames = frames_as_uint8(video.frames)
    gt = rescale_points(torch.as_tensor(gt_joints).float(), video.original_size, video.size).numpy()  # (T, J, 2)
    pred = rescale_points(torch.as_tensor(joints).float(), video.original_size, video.size).numpy()
    valid = to_numpy(gt_valid, bool)
    if gt.shape != pred.shape or valid.shape != gt.shape[:2] or gt.shape[0] != len(frames):
        raise HyperfeatError(
            f"joints {pred.shape}, ground truth {gt.shape} and valid {valid.shape} must be "
            f"(T, J, 2), (T, J, 2), (T, J) with T = {len(frames)} frames"
        )
    colours = [tuple(int(v) for v in c) for c in distinct_colours(gt.shape[1])]
    everywhere = np.ones(pred.shape[1], bool)
    out = []
    for t, frame in enumerate(frames):
        left = draw_skeleton(frame, gt[t], valid[t], limbs, colours, f"ground truth  frame {t + 1}/{len(frames)}")
        right = draw_skeleton(frame, pred[t], everywhere, limbs, colours, f"prediction ({score})")
        out.append(side_by_side(left, right))
    return out
