"""Clips with a known change of state — or a known change that is *not* one — built from real
footage and its object masks.

A real sequence (frames and per-frame object masks, e.g. DAVIS) is copied and altered with an
exact truth: which pixels changed, from which frame (``start``) to which (``end``, the first
frame fully in the new state; ``end == start`` for a sudden change).

Changes of state (:data:`CHANGE_KINDS`), applied inside the object's mask while it keeps moving
as filmed:

* ``colour``: the object is painted a saturated colour (the one of a fixed palette farthest from
  its own mean colour), keeping its shading — paint, ripening, browning;
* ``colour-gradual``: the same paint faded in over ``GRADUAL_FRAMES`` frames (one event with a
  start and an end);
* ``texture``: its surface is replaced by stripes carrying its own shading;
* ``removed``: the upper half of the object (by its mask's bounding box) is replaced by a blurred
  fill of the surrounding background — a part cut off;
* ``part``: only the left half of the object (by its bounding box) is painted — a change of
  *part* of the object, to be found on that part.

Controls (:data:`CONTROL_KINDS`): changes of the whole picture that are not a change of state of
anything: ``exposure`` (a sudden gain), ``white-balance`` (sudden per-channel gains), ``ramp``
(a lighting ramp over the clip), ``blur`` (focus lost from the middle frame on), ``shake``
(camera shake: a random translation per frame), ``zoom`` (a steady zoom-in), ``compression``
(strong JPEG coding of every frame). Geometric controls move the object too: the clip's
``warps`` map any point of the original clip to where it is now (:meth:`StateChangeClip.map_points`).

Frames are (T, 3, H, W) float in [0, 1]; masks (T, H, W) bool at the frames' size.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from hyperfeat.errors import DataError
from hyperfeat.io import PathLike
from hyperfeat.model.classical import gaussian_blur

CHANGE_KINDS = ("colour", "colour-gradual", "texture", "removed", "part")
CONTROL_KINDS = ("exposure", "white-balance", "ramp", "blur", "shake", "zoom", "compression")
GRADUAL_FRAMES = 6  # a gradual change reaches its new state this many frames after it starts
# saturated paints for the ``colour`` change: red, green, blue, yellow, magenta, cyan
PAINTS = torch.tensor(
    [[1.0, 0.15, 0.1], [0.1, 0.8, 0.2], [0.15, 0.3, 1.0], [1.0, 0.9, 0.1], [0.9, 0.2, 0.9], [0.1, 0.9, 0.9]]
)


@dataclass
class StateChangeClip:
    """frames (T, 3, H, W) in [0, 1]; object (T, H, W) bool: the object's mask per frame;
    changed (T, H, W) bool: the pixels altered by a change of state (empty for a control);
    ``change_frame`` / ``change_end``: first altered frame and first frame fully in the new
    state (None for controls); ``warps`` (T, 3) (scale, dx, dy) in normalised coordinates, the
    geometric change of each frame (None: none)."""

    name: str
    frames: torch.Tensor
    object: torch.Tensor
    changed: torch.Tensor
    change_frame: Optional[int]
    kind: str
    change_end: Optional[int] = None
    warps: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @property
    def is_change(self) -> bool:
        return self.change_frame is not None

    def map_points(self, tracks: torch.Tensor) -> torch.Tensor:
        """Tracks (N, T, 2) xy pixels of the original clip → where those points are in this one."""
        if self.warps is None:
            return tracks
        h, w = self.frames.shape[-2:]
        size = tracks.new_tensor([w, h])
        u = (tracks + 0.5) / size * 2 - 1  # (N, T, 2) normalised, align_corners=False
        scale = self.warps[:, 0].to(tracks)[None, :, None]  # (1, T, 1)
        shift = self.warps[:, 1:].to(tracks)[None]  # (1, T, 2)
        return (u * scale + shift + 1) / 2 * size - 0.5


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


def _box_part(region: torch.Tensor, which: str) -> torch.Tensor:
    """The ``upper`` or ``left`` half of a (H, W) mask, by its bounding box."""
    height, width = region.shape
    if which == "upper":
        rows = region.any(dim=1).nonzero()[:, 0]
        cut = (int(rows.min()) + int(rows.max())) / 2
        return region & (torch.arange(height)[:, None] <= cut)
    cols = region.any(dim=0).nonzero()[:, 0]
    cut = (int(cols.min()) + int(cols.max())) / 2
    return region & (torch.arange(width)[None, :] <= cut)


def apply_state_change(
    frames: torch.Tensor, masks: torch.Tensor, change_frame: int, kind: str, name: str = "clip"
) -> StateChangeClip:
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
    gradual = kind.endswith("-gradual")
    end = min(change_frame + GRADUAL_FRAMES, num_frames - 1) if gradual else change_frame
    paint = None
    if kind in ("colour", "colour-gradual", "part"):  # one colour for the whole change, far from the object's own
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
        shade = frame.mean(dim=0, keepdim=True)  # (1, H, W)
        if paint is not None:
            new = paint[:, None, None] * (0.35 + 0.65 * shade)
            if kind == "part":
                region = _box_part(region, "left")
        elif kind == "texture":
            period = max(4.0, width / 40.0)
            stripes = 0.5 + 0.5 * torch.sign(torch.sin(2 * torch.pi * (xs + ys) / period))  # (H, W)
            new = torch.stack([stripes, 0.3 + 0.0 * stripes, 1.0 - stripes]) * (0.4 + shade)
        else:  # removed: the upper half of the object's bounding box
            region = _box_part(region, "upper")
            new = _blurred_fill(frame, obj[t], radius=max(4, min(height, width) // 12))
        alpha = min(1.0, (t - change_frame + 1) / (end - change_frame + 1)) if gradual else 1.0
        out[t] = torch.where(region[None], (alpha * new + (1 - alpha) * frame).clamp(0, 1), frame)
        changed[t] = region
    return StateChangeClip(
        name=f"{name}-{kind}@{change_frame}",
        frames=out,
        object=obj,
        changed=changed,
        change_frame=int(change_frame),
        kind=kind,
        change_end=int(end),
    )


def brightness_ramp(
    frames: torch.Tensor, gain: tuple[float, float] = (1.0, 0.55), offset: tuple[float, float] = (0.0, 0.08)
) -> torch.Tensor:
    """A global lighting change: frame t is ``frames[t] · g(t) + o(t)``, g and o linear from their
    first to their last value over the clip (clipped to [0, 1])."""
    steps = torch.linspace(0, 1, frames.shape[0])[:, None, None, None]
    g = gain[0] + (gain[1] - gain[0]) * steps
    o = offset[0] + (offset[1] - offset[0]) * steps
    return (frames * g + o).clamp(0, 1)


def _jpeg(frames: torch.Tensor, quality: int) -> torch.Tensor:
    import numpy as np
    from PIL import Image

    from hyperfeat.video.frames import frames_as_uint8, frames_from_uint8

    coded = []
    for pixels in frames_as_uint8(frames):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
        coded.append(np.array(Image.open(buffer).convert("RGB")))
    return frames_from_uint8(np.stack(coded))


def _warp(frames: torch.Tensor, masks: torch.Tensor, warps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per frame, (scale, dx, dy) (T, 3): a point at normalised u moves to ``scale · u + (dx, dy)``
    (:meth:`StateChangeClip.map_points`); frames (T, 3, H, W) and masks (T, H, W) follow."""
    num = frames.shape[0]
    theta = torch.zeros(num, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / warps[:, 0]
    theta[:, :, 2] = -warps[:, 1:] / warps[:, :1]
    grid = F.affine_grid(theta, list(frames.shape), align_corners=False)
    out = F.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=False)
    m = (
        F.grid_sample(masks[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)[:, 0]
        > 0.5
    )
    return out, m


def apply_control(
    frames: torch.Tensor, masks: torch.Tensor, kind: str, name: str = "clip", seed: int = 0
) -> StateChangeClip:
    """A change of the whole picture that is no change of state (see the module doc); from the
    middle frame on for the sudden ones."""
    if kind not in CONTROL_KINDS:
        raise DataError(f"control kind must be one of {', '.join(CONTROL_KINDS)}; got {kind!r}")
    num_frames = frames.shape[0]
    obj = masks.bool() if masks.dtype == torch.bool else masks != 0
    k = num_frames // 2
    out, warps = frames.clone(), None
    if kind == "exposure":
        out[k:] = (frames[k:] * 0.6).clamp(0, 1)
    elif kind == "white-balance":
        out[k:] = (frames[k:] * torch.tensor([1.25, 1.0, 0.7])[None, :, None, None]).clamp(0, 1)
    elif kind == "ramp":
        out = brightness_ramp(frames)
    elif kind == "blur":
        out[k:] = gaussian_blur(frames[k:], 1.5)
    elif kind == "compression":
        out = _jpeg(frames, quality=12)
    else:
        g = torch.Generator().manual_seed(seed)
        warps = torch.zeros(num_frames, 3)
        warps[:, 0] = 1.0
        if kind == "shake":
            warps[1:, 1:] = (torch.rand(num_frames - 1, 2, generator=g) * 2 - 1) * 0.04
        else:  # zoom: 1 → 1.3 over the clip, about the centre
            warps[:, 0] = torch.linspace(1.0, 1.3, num_frames)
        out, obj = _warp(frames, obj, warps)
    return StateChangeClip(
        name=f"{name}-{kind}",
        frames=out.clamp(0, 1),
        object=obj,
        changed=torch.zeros_like(obj),
        change_frame=None,
        kind=kind,
        warps=warps,
    )


def davis_state_change_clip(
    root: PathLike,
    sequence: str,
    kind: Optional[str],
    change_frame: Optional[int] = None,
    num_frames: int = 24,
    frame_size: Optional[int] = 256,
) -> StateChangeClip:
    """A DAVIS-2017 sequence (first ``num_frames`` frames, longer side ``frame_size``) with its
    objects (all ids merged) altered from ``change_frame`` (default: the middle) on: ``kind`` one
    of :data:`CHANGE_KINDS`, of :data:`CONTROL_KINDS`, or None (the unchanged clip)."""
    from hyperfeat.data.videos.davis import DavisDataset

    seq = DavisDataset(root, sequences=[sequence], max_frames=num_frames).load(sequence, frame_size=frame_size)
    if seq.masks.shape[0] != len(seq):
        raise DataError(f"DAVIS sequence {sequence!r} lacks per-frame masks; a state-change clip needs them")
    size_hw = (int(seq.frames.shape[-2]), int(seq.frames.shape[-1]))
    obj = _resize_masks(seq.masks != 0, size_hw)
    if kind is None:
        return StateChangeClip(
            name=f"{sequence}-unchanged",
            frames=seq.frames,
            object=obj,
            changed=torch.zeros_like(obj),
            change_frame=None,
            kind="unchanged",
        )
    if kind in CONTROL_KINDS:
        return apply_control(seq.frames, obj, kind, name=sequence)
    k = len(seq) // 2 if change_frame is None else int(change_frame)
    return apply_state_change(seq.frames, obj, k, kind, name=sequence)


def write_clip(clip: StateChangeClip, out: PathLike) -> dict:
    """Write a clip as ``frames/00000.png …``, its frame-0 object mask ``mask.png`` and its truth
    ``truth.json`` (kind, start, end; null for a control) into the folder ``out``."""
    import json
    from pathlib import Path

    from PIL import Image

    from hyperfeat.video.frames import frames_as_uint8

    folder = Path(out)
    (folder / "frames").mkdir(parents=True, exist_ok=True)
    for t, pixels in enumerate(frames_as_uint8(clip.frames)):
        Image.fromarray(pixels).save(folder / "frames" / f"{t:05d}.png")
    Image.fromarray((clip.object[0].numpy() * 255).astype("uint8")).save(folder / "mask.png")
    truth = {"name": clip.name, "kind": clip.kind, "start": clip.change_frame, "end": clip.change_end}
    (folder / "truth.json").write_text(json.dumps(truth, indent=1))
    return truth


def main(argv: Optional[list] = None) -> None:
    """``python -m hyperfeat.data.videos.state_changes DAVIS_ROOT SEQUENCE --kind KIND --out DIR``:
    a DAVIS-2017 sequence with a known change of state (or a control) as PNG frames, its
    frame-0 mask and its truth, ready for ``hyperfeat changes DIR/frames --mask DIR/mask.png``."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__.split("\n\n")[0])
    parser.add_argument("davis_root", help="the DAVIS-2017 folder (JPEGImages/480p, Annotations/480p)")
    parser.add_argument("sequence")
    parser.add_argument("--kind", default="colour", help=f"none, {', '.join(CHANGE_KINDS + CONTROL_KINDS)}")
    parser.add_argument("--change-frame", type=int, default=None, help="default: the middle frame")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--frame-size", type=int, default=256, help="the frames' longer side")
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args(argv)
    kind = None if args.kind == "none" else args.kind
    if kind is not None and kind not in CHANGE_KINDS + CONTROL_KINDS:
        raise SystemExit(
            f"error: --kind must be none or one of {', '.join(CHANGE_KINDS + CONTROL_KINDS)}; got {kind!r}"
        )
    try:
        clip = davis_state_change_clip(
            args.davis_root, args.sequence, kind, args.change_frame, args.frames, args.frame_size
        )
    except DataError as err:
        raise SystemExit(f"error: {err}") from None
    truth = write_clip(clip, args.out)
    print(f"wrote {len(clip)} frames of {truth['name']} to {args.out} (truth: {truth})")


if __name__ == "__main__":
    main()
