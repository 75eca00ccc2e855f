"""TODO docstring (hyperfeat.video.run)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch

from hyperfeat.errors import HyperfeatError
from hyperfeat.io import PathLike
from hyperfeat.video.frames import load_frames, precheck_source
from hyperfeat.video.run import track
from hyperfeat.viz.tracks import draw_video_tracks


def parse_queries(text: str) -> torch.Tensor:
    """'t,x,y;t,x,y' → (N, 3) float tensor (t a frame index, x and y pixels)."""
    items = [item for item in str(text).replace(" ", "").split(";") if item]
    try:
        rows = [[float(v) for v in item.split(",")] for item in items]
    except ValueError as err:
        raise HyperfeatError(f"points must look like 't,x,y;t,x,y' (frame, x, y in pixels); got {text!r}") from err
    if not rows or any(len(r) != 3 for r in rows):
        raise HyperfeatError(f"points must look like 't,x,y;t,x,y' (frame, x, y in pixels); got {text!r}")
    bad = [r for r in rows if r[0] != int(r[0])]
    if bad:
        raise HyperfeatError(f"the frame index t of a point must be an integer; got {bad[0]}")
    return torch.tensor(rows, dtype=torch.float32)




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
