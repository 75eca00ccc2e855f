"""Mask pictures: the DAVIS palette, palette PNGs of object ids and masks blended into frames."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from hyperfeat.errors import HyperfeatError
from hyperfeat.images import ImageLike, load_image
from hyperfeat.video.frames import VideoFrames, frames_as_uint8
from hyperfeat.viz.figures import ArrayLike, to_numpy


def overlay_video_frames(video: VideoFrames, masks: torch.Tensor, alpha: float = 0.5):
    """Overlay pictures: masks (T, H, W) at the original size, resized (nearest) to the frames'
    size, blended into the frames as read."""
    from PIL import Image

    images = []
    width, height = video.size
    for frame, mask in zip(frames_as_uint8(video.frames), masks):
        ids = mask.cpu().numpy()
        if ids.size and (ids.min() < 0 or ids.max() > 255):
            raise HyperfeatError(f"mask ids must lie in 0…255 to be drawn; got {ids.min()}…{ids.max()}")
        ids = ids.astype(np.uint8)
        if ids.shape != (height, width):
            ids = np.asarray(Image.fromarray(ids).resize((width, height), Image.NEAREST))
        images.append(overlay_masks(frame, ids, alpha=alpha))
    return images


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


def draw_masks_vs_truth(
    video: VideoFrames, masks: torch.Tensor, gt_masks: torch.Tensor, score: str, alpha: float = 0.5
) -> list[Image.Image]:
    """Ground truth (left) beside the propagated masks (right), both (T, H, W) object ids at the
    original size, blended into the frames as read; "ground truth  frame t/T" and "prediction
    (``score``)" written on them. Void (255) in the ground truth is drawn as background."""
    from hyperfeat.viz.tracks import draw_caption, side_by_side

    gt = torch.as_tensor(gt_masks).clone()
    gt[gt == 255] = 0
    left = overlay_video_frames(video, gt, alpha=alpha)
    right = overlay_video_frames(video, torch.as_tensor(masks), alpha=alpha)
    num_frames = len(left)
    for t, (a, b) in enumerate(zip(left, right)):
        draw_caption(a, f"ground truth  frame {t + 1}/{num_frames}")
        draw_caption(b, f"prediction ({score})")
    return [side_by_side(a, b) for a, b in zip(left, right)]
