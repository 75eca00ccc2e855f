"""``hyperfeat track``: track points through a video and draw them (dot: visible, ring: occluded)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

from hyperfeat.cli.common import (
    CHECKPOINT_HELP,
    add_config_args,
    command,
    with_config_file,
    one_source,
    parse_queries,
)
from hyperfeat.errors import HyperfeatError
from hyperfeat.io import PathLike
from hyperfeat.video.frames import load_frames, precheck_source
from hyperfeat.video.run import track
from hyperfeat.viz.tracks import draw_video_tracks


def _check_out_video(out: PathLike) -> Path:
    from hyperfeat.io import WRITABLE_VIDEO_SUFFIXES

    path = Path(out)
    if path.suffix.lower() not in WRITABLE_VIDEO_SUFFIXES:
        raise HyperfeatError(f"output video {path} must end in one of {', '.join(WRITABLE_VIDEO_SUFFIXES)}")
    return path




def run_track_command(
    checkpoint: PathLike,
    video: PathLike,
    points_text: str,
    out: PathLike,
    overrides: Sequence[str] = (),
    fps: float = 10,
    tail_length: int = 10,
    hf=None,
) -> dict:
    """``hyperfeat track``: track the points ``'t,x,y;…'`` (original pixels) through ``video``
    (folder of frames or a video file) and write ``out`` (.mp4 or .gif): every point in its own
    colour with a fading tail, a filled dot where visible, a ring where occluded. Also writes
    ``out`` with suffix ``.json``: the queries, tracks (N, T, 2) xy and visible (N, T) in pixels
    of the original frames. Returns {"video": path, "json": path, "tracks", "visible"}.

    ``hf``: an already loaded :class:`Hyperfeatures` (then ``checkpoint`` and ``overrides`` are
    only recorded).
    """
    from hyperfeat.io import write_video

    out_path = _check_out_video(out)
    queries = parse_queries(points_text)
    precheck_source(video)  # a missing or empty video fails before the backbone loads
    if hf is None:
        from hyperfeat.api import Hyperfeatures

        hf = Hyperfeatures.from_checkpoint(checkpoint, overrides=list(overrides))
    frames = load_frames(hf, video)
    tracks, visible = track(hf, frames, queries)  # checks the queries before describing the frames
    written = write_video(draw_video_tracks(frames, tracks, visible, tail_length), out_path, fps=fps)
    json_path = out_path.with_suffix(".json")
    record = {
        "video": str(video),
        "checkpoint": str(checkpoint),
        "frame_size_wh": list(frames.original_size),
        "num_frames": len(frames),
        "coordinates": "(x, y) pixels of the original frames, pixel centres at integers",
        "queries": queries.tolist(),
        "tracks": tracks.tolist(),
        "visible": visible.tolist(),
    }
    json_path.write_text(json.dumps(record))
    return {"video": written, "json": json_path, "tracks": tracks, "visible": visible}


def _track_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="VIDEO", help="a video file or a folder of frames, then key=value overrides")
    p.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    p.add_argument("--points", required=True,
                   help='queries "t,x,y;t,x,y": frame index t, (x, y) pixels of the original frames')
    p.add_argument("--out", default="tracks.mp4", help="picture video (.mp4 or .gif); tracks also go to <out>.json")
    p.add_argument("--fps", type=float, default=10.0, help="frames per second of the written video")
    p.add_argument("--tail-length", type=int, default=10, help="frames of fading tail behind each point")
    add_config_args(p)


@command("track", "track points through a video and draw them (dot: visible, ring: occluded)", _track_args)
def run_track(args: argparse.Namespace) -> int:

    video, overrides = one_source(args.inputs, args.late_overrides, "video (file or folder of frames)")
    overrides = with_config_file(args.config, overrides)
    result = run_track_command(args.checkpoint, video, args.points, args.out, overrides=overrides,
                               fps=args.fps, tail_length=args.tail_length)
    tracks, visible = result["tracks"], result["visible"]
    for n in range(tracks.shape[0]):
        print(f"point {n}: visible in {int(visible[n].sum())}/{visible.shape[1]} frames, "
              f"last at ({tracks[n, -1, 0]:.1f}, {tracks[n, -1, 1]:.1f})")
    print(f"wrote {result['video']} and {result['json']}")
    return 0
