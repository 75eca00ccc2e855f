"""Clips with a known change of state, built from real footage and its object masks.

A real sequence (frames and per-frame object masks, e.g. DAVIS) is copied, and from a chosen
frame ``k`` on the object's appearance is altered inside its mask while it keeps moving as
filmed:

* ``colour``: the object is painted a saturated colour, the one of a fixed palette farthest from
  its own mean colour at ``k``, keeping its shading — paint, ripening, browning (a hue rotation
  would leave a white, gray or black object as it was: no change to find);
* ``texture``: its surface is replaced by stripes carrying its own shading — a new texture;
* ``removed``: the upper half of the object (by its mask's bounding box) is replaced by a blurred
  fill of the surrounding background — a part cut off.

:func:`brightness_ramp` makes the control: a global gain and offset over the whole frame that
should *not* read as a change of state. Frames are (T, 3, H, W) float in [0, 1]; masks (T, H, W)
bool at the frames' size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from hyperfeat.errors import DataError
from hyperfeat.io import PathLike

CHANGE_KINDS = ("colour", "texture", "removed")
# saturated paints for the ``colour`` change: red, green, blue, yellow, magenta, cyan
PAINTS = torch.tensor([[1.0, 0.15, 0.1], [0.1, 0.8, 0.2], [0.15, 0.3, 1.0],
                       [1.0, 0.9, 0.1], [0.9, 0.2, 0.9], [0.1, 0.9, 0.9]])


@dataclass
class StateChangeClip:
    """frames (T, 3, H, W) in [0, 1]; object (T, H, W) bool: the object's mask per frame;
    changed (T, H, W) bool: the pixels altered (empty before ``change_frame``)."""

    name: str
    frames: torch.Tensor
    object: torch.Tensor
    changed: torch.Tensor
    change_frame: Optional[int]
    kind: str

    def __len__(self) -> int:
        return int(self.frames.shape[0])


def _resize_masks(masks: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    if tuple(masks.shape[-2:]) == tuple(size_hw):
        return masks.bool()
    return F.interpolate(masks[:, None].float(), size=size_hw, mode="nearest")[:, 0] > 0.5


def _blurred_fill(frame: torch.Tensor, hole: torch.Tensor, radius: int) -> torch.Tensor:
    """Normalised box blur of the frame (3, H, W) outside ``hole`` (H, W): a smooth background
    fill. The window doubles until every hole pixel has background around it (at last: the mean
    background colour)."""
    keep = (~hole).float()[None, None]  # (1, 1, H, W)
    fill = frame.mean(dim=(1, 2), keepdim=True).expand_as(frame).clone()
    if keep.sum() > 0:
        fill[:] = (frame * keep[0]).sum(dim=(1, 2), keepdim=True) / keep.sum()
    todo = torch.ones_like(hole)
    r = radius
    while todo.any() and r < 4 * max(frame.shape[-2:]):
        k = 2 * r + 1
        num = F.avg_pool2d(frame[None] * keep, k, stride=1, padding=r, count_include_pad=False)[0]
        den = F.avg_pool2d(keep, k, stride=1, padding=r, count_include_pad=False)[0]
        ready = todo & (den[0] > 0.05)
        fill = torch.where(ready[None], num / den.clamp_min(1e-6), fill)
        todo &= ~ready
        r = min(2 * r, max(frame.shape[-2:]) // 2) if 2 * r <= max(frame.shape[-2:]) // 2 else 4 * max(frame.shape[-2:])
    return fill.clamp(0, 1)


def apply_state_change(frames: torch.Tensor, masks: torch.Tensor, change_frame: int, kind: str,
                       name: str = "clip") -> StateChangeClip:
    """Alter the object (``masks`` (T, H, W) bool or ids, nonzero = object) from ``change_frame`` on."""
    if kind not in CHANGE_KINDS:
        raise DataError(f"state-change kind must be one of {', '.join(CHANGE_KINDS)}; got {kind!r}")
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise DataError(f"frames must be (T, 3, H, W); got {tuple(frames.shape)}")
    num_frames, _, height, width = frames.shape
    if not 0 < change_frame < num_frames:
        raise DataError(f"change_frame must be in [1, {num_frames - 1}]; got {change_frame}")
    if masks.shape[0] != num_frames:
        raise DataError(f"{masks.shape[0]} masks for {num_frames} frames")
    obj = _resize_masks(masks != 0 if not masks.dtype == torch.bool else masks, (height, width))
    out = frames.clone()
    changed = torch.zeros_like(obj)
    paint = None
    if kind == "colour":  # one colour for the whole change, far from the object's own
        region_k = obj[change_frame] if obj[change_frame].any() else obj.any(dim=0)
        own = frames[change_frame][:, region_k].mean(dim=1) if region_k.any() else frames[change_frame].mean(dim=(1, 2))
        paint = PAINTS[int(((PAINTS - own[None]) ** 2).sum(dim=1).argmax())]  # (3,)
    ys = torch.arange(height)[:, None].float()
    xs = torch.arange(width)[None, :].float()
    for t in range(change_frame, num_frames):
        region = obj[t].clone()
        if not region.any():
            continue
        frame = out[t]
        if kind == "colour":
            shade = frame.mean(dim=0, keepdim=True)  # (1, H, W)
            new = paint[:, None, None] * (0.35 + 0.65 * shade)
        elif kind == "texture":
            shade = frame.mean(dim=0, keepdim=True)  # (1, H, W)
            period = max(4.0, width / 40.0)
            stripes = 0.5 + 0.5 * torch.sign(torch.sin(2 * torch.pi * (xs + ys) / period))  # (H, W)
            new = torch.stack([stripes, 0.3 + 0.0 * stripes, 1.0 - stripes]) * (0.4 + shade)
        else:  # removed: the upper half of the object's bounding box
            rows = region.any(dim=1).nonzero()[:, 0]
            top, bottom = int(rows.min()), int(rows.max())
            region &= ys[:, 0][:, None].expand(height, width) <= (top + bottom) / 2
            new = _blurred_fill(frame, obj[t], radius=max(4, min(height, width) // 12))
        out[t] = torch.where(region[None], new.clamp(0, 1), frame)
        changed[t] = region
    return StateChangeClip(name=f"{name}-{kind}@{change_frame}", frames=out, object=obj, changed=changed,
                           change_frame=int(change_frame), kind=kind)


def brightness_ramp(frames: torch.Tensor, gain: tuple[float, float] = (1.0, 0.55),
                    offset: tuple[float, float] = (0.0, 0.08)) -> torch.Tensor:
    """A global lighting change: frame t is ``frames[t] · g(t) + o(t)``, g and o linear from their
    first to their last value over the clip (clipped to [0, 1])."""
    steps = torch.linspace(0, 1, frames.shape[0])[:, None, None, None]
    g = gain[0] + (gain[1] - gain[0]) * steps
    o = offset[0] + (offset[1] - offset[0]) * steps
    return (frames * g + o).clamp(0, 1)


def davis_state_change_clip(root: PathLike, sequence: str, kind: Optional[str], change_frame: Optional[int] = None,
                            num_frames: int = 24, frame_size: Optional[int] = 256) -> StateChangeClip:
    """A DAVIS-2017 sequence (first ``num_frames`` frames, longer side ``frame_size``) with its
    objects (all ids merged) altered from ``change_frame`` (default: the middle) on. ``kind``
    None or ``"ramp"`` gives the unchanged clip or its :func:`brightness_ramp` (``change_frame`` None)."""
    from hyperfeat.data.videos.davis import DavisDataset

    seq = DavisDataset(root, sequences=[sequence], max_frames=num_frames).load(sequence, frame_size=frame_size)
    if seq.masks.shape[0] != len(seq):
        raise DataError(f"DAVIS sequence {sequence!r} lacks per-frame masks; a state-change clip needs them")
    size_hw = (int(seq.frames.shape[-2]), int(seq.frames.shape[-1]))
    obj = _resize_masks(seq.masks != 0, size_hw)
    if kind is None or kind == "ramp":
        frames = seq.frames if kind is None else brightness_ramp(seq.frames)
        return StateChangeClip(name=f"{sequence}-{kind or 'unchanged'}", frames=frames, object=obj,
                               changed=torch.zeros_like(obj), change_frame=None, kind=kind or "unchanged")
    k = len(seq) // 2 if change_frame is None else int(change_frame)
    return apply_state_change(seq.frames, obj, k, kind, name=sequence)
