"""``hyperfeat propagate``: propagate a first-frame object mask through a video."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from hyperfeat.cli.common import add_video_args, command, video_source
from hyperfeat.io import PathLike
from hyperfeat.video.frames import load_frames, precheck_source
from hyperfeat.video.run import propagate
from hyperfeat.viz.masks import overlay_video_frames


def run_propagate_command(
    checkpoint: PathLike,
    frames: PathLike,
    mask_png: PathLike,
    out_dir: PathLike,
    overrides: Sequence[str] = (),
    fps: float = 10,
    hf=None,
) -> dict:
    """``hyperfeat propagate``: propagate the first-frame mask ``mask_png`` (a DAVIS palette PNG of
    object ids, the frames' original size) through ``frames`` (folder or video file).

    Writes one DAVIS-format palette PNG per frame into ``out_dir`` (named after the frame files,
    else ``%05d.png``) and ``out_dir/overlay.mp4`` (the masks blended into the frames). Returns
    {"masks": [paths], "overlay": path, "num_frames": T}.
    """
    from hyperfeat.data.videos.davis import read_mask
    from hyperfeat.io import write_video
    from hyperfeat.viz.masks import palette_mask

    mask = read_mask(mask_png)  # (H, W) object ids; a missing file fails before the backbone loads
    precheck_source(frames)
    if hf is None:
        from hyperfeat.api import Hyperfeatures

        hf = Hyperfeatures.from_checkpoint(checkpoint, overrides=list(overrides))
    video = load_frames(hf, frames)
    masks = propagate(hf, video, mask)  # (T, H, W); checks the mask size before describing the frames
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    one_file_per_frame = len(video.files) == len(video)
    written = []
    for t, frame_mask in enumerate(masks):
        name = f"{video.files[t].stem}.png" if one_file_per_frame else f"{t:05d}.png"
        path = out / name
        palette_mask(frame_mask.numpy()).save(path)
        written.append(path)
    overlay = write_video(overlay_video_frames(video, masks), out / "overlay.mp4", fps=fps)
    return {"masks": written, "overlay": overlay, "num_frames": len(video)}


def _propagate_args(p: argparse.ArgumentParser) -> None:
    add_video_args(p, fps_of="overlay video")
    p.add_argument("--mask", required=True, help="first-frame mask PNG of object ids (DAVIS palette), the frames' size")
    p.add_argument("--out", required=True, help="output folder: one palette PNG per frame and overlay.mp4")


@command("propagate", "propagate a first-frame object mask through a video", _propagate_args)
def run_propagate(args: argparse.Namespace) -> int:
    frames, overrides = video_source(args)
    result = run_propagate_command(args.checkpoint, frames, args.mask, args.out, overrides=overrides, fps=args.fps)
    print(f"wrote {len(result['masks'])} masks to {args.out} and {result['overlay']}")
    return 0
