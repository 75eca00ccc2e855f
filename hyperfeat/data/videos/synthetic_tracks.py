"""Synthetic point-tracking clips with exact ground truth, made of real footage.

An object is cut out of a real frame by its segmentation mask and pasted, frame after frame, at
known positions along a smooth trajectory over the frames of another real video; a second
cut-out object crosses in front of it, so some of its points are hidden for a while and then
come back. Every point's track and occlusion flag is known exactly:

* the object is moved by whole pixels (no resampling), so a point (x, y) of the cut-out is at
  ``(x, y) + offset(t)`` in frame t, exactly;
* a point is occluded in frame t when the occluder's mask covers its pixel, or when it lies
  outside the frame.

Queries are points of the object, drawn inside its mask (eroded by ``margin`` px so no query
sits on the object's outline) at the first frame, where the occluder is always clear of it.

    from hyperfeat.data.videos.synthetic_tracks import davis_synthetic_clips
    for clip in davis_synthetic_clips(root, num_clips=4):
        clip.frames      # (T, H, W, 3) uint8
        clip.points      # (N, T, 2) xy pixels, exact
        clip.occluded    # (N, T) bool, exact
        clip.queries     # (N, 3) (t, x, y), t = 0

Used by the tracking benchmark (``benchmarks/tracking.py``) and as training material.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
from PIL import Image

from hyperfeat.data.videos.base import TrackedVideo
from hyperfeat.errors import DataError
from hyperfeat.io import PathLike


@dataclass
class SyntheticTrackClip(TrackedVideo):
    """One synthetic clip (numpy arrays) with its queries (N, 3) and where the tracked object is
    visible, ``object_masks`` (T, H, W) bool."""

    queries: np.ndarray
    object_masks: np.ndarray


@dataclass
class CutOut:
    """An RGB patch (h, w, 3) uint8 and its (h, w) bool mask."""

    rgb: np.ndarray
    mask: np.ndarray


def cut_out(image: Image.Image, mask: np.ndarray, longer_side: int) -> CutOut:
    """The mask's bounding box of ``image``, scaled so its longer side is ``longer_side`` px."""
    mask = np.asarray(mask).astype(bool)
    if mask.shape != (image.size[1], image.size[0]):
        raise DataError(f"cut-out mask {mask.shape[::-1]} (W, H) does not match its image {image.size}")
    if not mask.any():
        raise DataError("cut-out mask is empty")
    rows, cols = np.nonzero(mask)
    box = (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)
    w, h = box[2] - box[0], box[3] - box[1]
    scale = longer_side / max(w, h)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    rgb = np.asarray(image.convert("RGB").crop(box).resize(new, Image.BILINEAR))
    small = Image.fromarray(mask[box[1] : box[3], box[0] : box[2]].astype(np.uint8) * 255).resize(new, Image.NEAREST)
    return CutOut(rgb, np.asarray(small) > 127)


def _erode(mask: np.ndarray, margin: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(margin):
        inner = out.copy()
        inner[1:] &= out[:-1]
        inner[:-1] &= out[1:]
        inner[:, 1:] &= out[:, :-1]
        inner[:, :-1] &= out[:, 1:]
        out = inner
    return out


def _paste(frame: np.ndarray, layer: np.ndarray, piece: CutOut, offset: tuple[int, int]) -> None:
    """Paste ``piece`` with its top-left at integer ``offset`` (x, y) into ``frame`` and mark
    ``layer`` (H, W) bool where it lands (both in place; the part outside the frame is dropped)."""
    H, W = frame.shape[:2]
    h, w = piece.mask.shape
    x0, y0 = offset
    fx0, fy0, fx1, fy1 = max(0, x0), max(0, y0), min(W, x0 + w), min(H, y0 + h)
    if fx0 >= fx1 or fy0 >= fy1:
        return
    sub = piece.mask[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
    frame[fy0:fy1, fx0:fx1][sub] = piece.rgb[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0][sub]
    layer[fy0:fy1, fx0:fx1] |= sub


def smooth_path(
    num_frames: int, start: Sequence[float], end: Sequence[float], wobble: float, rng: np.random.Generator
) -> np.ndarray:
    """(T, 2) integer xy: a straight line from ``start`` to ``end`` plus a sine of amplitude
    ``wobble`` px across it, eased in and out, rounded to whole pixels."""
    t = np.linspace(0.0, 1.0, num_frames)
    ease = 0.5 - 0.5 * np.cos(np.pi * t)
    start, end = np.asarray(start, float), np.asarray(end, float)
    line = start + (end - start) * ease[:, None]
    direction = (end - start) / max(np.linalg.norm(end - start), 1e-6)
    normal = np.array([-direction[1], direction[0]])
    phase = rng.uniform(0, 2 * np.pi)
    line += wobble * np.sin(2 * np.pi * t * rng.uniform(0.5, 1.5) + phase)[:, None] * normal
    return np.round(line).astype(np.int64)


def make_clip(
    background: Sequence[Image.Image],
    target: CutOut,
    occluder: CutOut,
    size: tuple[int, int] = (256, 192),
    num_points: int = 32,
    margin: int = 3,
    seed: int = 0,
    name: str = "synthetic",
) -> SyntheticTrackClip:
    """One clip over the ``background`` frames (resized to ``size`` (W, H)): ``target`` moves on a
    smooth path across the frame, ``occluder`` crosses in front of it in the middle of the clip."""
    rng = np.random.default_rng(seed)
    W, H = size
    T = len(background)
    if T < 2:
        raise DataError("a synthetic clip needs at least 2 background frames")
    th, tw = target.mask.shape
    oh, ow = occluder.mask.shape
    # the target goes from one side to the other; its start and end stay inside the frame
    left = rng.random() < 0.5
    x_a, x_b = (0.08 * W, W - tw - 0.08 * W) if left else (W - tw - 0.08 * W, 0.08 * W)
    y_a, y_b = rng.uniform(0.1 * H, max(0.1 * H, H - th - 0.1 * H), size=2)
    target_path = smooth_path(T, (x_a, y_a), (x_b, y_b), 0.05 * H, rng)
    # the occluder meets the target at mid-clip, coming across vertically, clear of it at t = 0
    meet = target_path[T // 2] + np.array([tw / 2 - ow / 2, th / 2 - oh / 2])
    down = rng.random() < 0.5
    reach = 0.6 * (th + oh)  # from just clear of the target to just past it: a long occlusion
    start_y, end_y = (meet[1] - reach, meet[1] + reach) if down else (meet[1] + reach, meet[1] - reach)
    occluder_path = smooth_path(T, (meet[0], start_y), (meet[0], end_y), 0.0, rng)
    # queries inside the eroded target mask, at frame 0
    inner = _erode(target.mask, margin)
    rows, cols = np.nonzero(inner if inner.any() else target.mask)
    pick = rng.choice(len(rows), size=min(num_points, len(rows)), replace=False)
    local = np.stack([cols[pick], rows[pick]], 1).astype(np.float64)  # (N, 2) xy in the cut-out
    frames = np.empty((T, H, W, 3), np.uint8)
    object_masks = np.zeros((T, H, W), bool)
    points = local[:, None, :] + target_path[None, :, :]  # (N, T, 2), exact
    occluded = np.zeros(points.shape[:2], bool)
    for t, image in enumerate(background):
        frame = np.array(image.convert("RGB").resize((W, H), Image.BILINEAR))
        on_target = np.zeros((H, W), bool)
        on_occluder = np.zeros((H, W), bool)
        _paste(frame, on_target, target, tuple(target_path[t]))
        _paste(frame, on_occluder, occluder, tuple(occluder_path[t]))
        frames[t] = frame
        object_masks[t] = on_target & ~on_occluder
        xi, yi = np.round(points[:, t, 0]).astype(int), np.round(points[:, t, 1]).astype(int)
        inside = (xi >= 0) & (xi < W) & (yi >= 0) & (yi < H)
        hidden = np.ones(len(xi), bool)
        hidden[inside] = on_occluder[yi[inside], xi[inside]]
        occluded[:, t] = hidden
    keep = ~occluded[:, 0]  # queries start visible
    points, occluded = points[keep], occluded[keep]
    queries = np.concatenate([np.zeros((len(points), 1)), points[:, 0]], 1)
    size = (int(frames.shape[2]), int(frames.shape[1]))  # (W, H)
    return SyntheticTrackClip(
        name, frames, points.astype(np.float32), occluded, size, queries.astype(np.float32), object_masks
    )


def _first_object(mask_path: Path) -> np.ndarray:
    from hyperfeat.data.videos.davis import read_mask

    mask = read_mask(mask_path).numpy()
    ids = [i for i in np.unique(mask) if i not in (0, 255)]
    if not ids:
        raise DataError(f"no object in {mask_path}")
    areas = [(mask == i).sum() for i in ids]
    return mask == ids[int(np.argmax(areas))]


def davis_synthetic_clips(
    root: PathLike,
    num_clips: int = 4,
    num_frames: int = 24,
    size: tuple[int, int] = (256, 192),
    num_points: int = 32,
    seed: int = 0,
    sequences: Optional[Sequence[str]] = None,
) -> Iterator[SyntheticTrackClip]:
    """Clips from a DAVIS-2017 folder (``JPEGImages/480p``, ``Annotations/480p``): for clip i a
    background sequence, a target cut out of another sequence's first annotated frame and an
    occluder cut out of a third, all chosen by ``seed``."""
    root = Path(root)
    frames_dir, masks_dir = root / "JPEGImages" / "480p", root / "Annotations" / "480p"
    names = sorted(p.name for p in frames_dir.iterdir() if (masks_dir / p.name).is_dir()) if frames_dir.is_dir() else []
    if sequences:
        names = [n for n in names if n in set(sequences)]
    if len(names) < 3:
        raise DataError(f"need at least 3 DAVIS sequences with masks under {root}; found {len(names)}")
    rng = np.random.default_rng(seed)
    for index in range(int(num_clips)):
        bg, obj, occ = rng.choice(names, size=3, replace=False)
        bg_files = sorted((frames_dir / bg).glob("*.jpg"))
        start = int(rng.integers(0, max(1, len(bg_files) - num_frames)))
        files = bg_files[start : start + num_frames]
        if len(files) < num_frames:
            files = (files * (num_frames // max(len(files), 1) + 1))[:num_frames]
        background = [Image.open(f).convert("RGB") for f in files]
        piece = []
        for seq, fraction in ((obj, 0.42), (occ, 0.38)):
            mask_file = sorted((masks_dir / seq).glob("*.png"))[0]
            image = Image.open(frames_dir / seq / f"{mask_file.stem}.jpg").convert("RGB")
            piece.append(cut_out(image, _first_object(mask_file), int(fraction * min(size))))
        yield make_clip(
            background, piece[0], piece[1], size, num_points, seed=seed * 1000 + index, name=f"{bg}+{obj}+{occ}"
        )
