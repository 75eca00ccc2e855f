"""``hyperfeat track``: track points through a video and draw them (dot: visible, cross: occluded)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from hyperfeat.cli.common import adapted, add_adapt_args, add_video_args, command, parse_queries, video_source
from hyperfeat.errors import HyperfeatError
from hyperfeat.io import PathLike


def _check_out_video(out: PathLike) -> Path:
    from hyperfeat.io import WRITABLE_VIDEO_SUFFIXES

    path = Path(out)
    if path.suffix.lower() not in WRITABLE_VIDEO_SUFFIXES:
        raise HyperfeatError(f"output video {path} must end in one of {', '.join(WRITABLE_VIDEO_SUFFIXES)}")
    return path


def tracks_json_path(out: PathLike) -> Path:
    """The tracks file of a picture video: its name with ``.json`` added (``a.mp4`` → ``a.mp4.json``),
    so the GIF and the MP4 of one stem never share it."""
    out = Path(out)
    return out.with_name(out.name + ".json")


def build_queries(
    points_text: Optional[str],
    grid: Optional[int],
    mask_png: Optional[PathLike],
    size: tuple[int, int],
    grid_frame: int = 0,
    num_points: Optional[int] = None,
):
    """The query set of the command: ``--points`` rows, a ``--grid`` over the frame, points inside
    ``--mask`` (its grid points with ``--grid``, else ``num_points`` drawn inside it), or several of
    these together."""
    import torch

    from hyperfeat.video.queries import grid_queries, mask_queries, read_mask_png

    parts = []
    if points_text:
        parts.append(parse_queries(points_text))
    if mask_png is not None:
        mask = read_mask_png(mask_png)
        parts.append(mask_queries(mask, size, grid_size=grid, num_points=num_points, grid_query_frame=grid_frame))
    elif grid is not None:
        parts.append(grid_queries(grid, size, grid_frame))
    if not parts:
        raise HyperfeatError("give the points to track: --points 't,x,y;…', --grid N and/or --mask PNG")
    return torch.cat(parts)


def run_track_command(
    checkpoint: PathLike,
    video: PathLike,
    points_text: Optional[str],
    out: PathLike,
    overrides: Sequence[str] = (),
    fps: float = 10,
    tail_length: int = 10,
    hf=None,
    grid: Optional[int] = None,
    mask: Optional[PathLike] = None,
    grid_frame: int = 0,
    num_points: Optional[int] = None,
    exports: Sequence[PathLike] = (),
    full_resolution: bool = False,
    adapt_steps: int = 0,
    adapt_lr: Optional[float] = None,
    adapt_mirror: Optional[bool] = None,
) -> dict:
    """``hyperfeat track``: track the queries (``points_text`` ``'t,x,y;…'`` in original pixels,
    a ``grid`` × ``grid`` grid at frame ``grid_frame``, points inside the ``mask`` PNG) through
    ``video`` (folder of frames or a video file) and write ``out`` (.mp4 or .gif): every point in
    its own colour with a fading tail, a filled dot where visible, a cross where occluded, a frame
    counter and a legend. Also writes ``<out>.json`` (see :func:`tracks_json_path`) and each of
    ``exports`` (.json, .csv, .npz). ``adapt_steps`` > 0: first adapt the aggregation network to
    this video (:meth:`hyperfeat.api.Hyperfeatures.adapt`, at ``adapt_lr``). The video is read lazily and described in chunks; every file
    appears only when complete, and bad input fails before anything is written.
    Returns {"video", "json", "exports", "tracks", "visible", "confidence"}.
    """
    from hyperfeat.geometry import rescale_points
    from hyperfeat.io import write_video_stream
    from hyperfeat.video.frames import precheck_source
    from hyperfeat.video.queries import TRACK_SUFFIXES, save_tracks
    from hyperfeat.video.run import frame_stream, track_video
    from hyperfeat.video.stream import FrameStream
    from hyperfeat.viz.tracks import iter_draw_tracks

    out_path = _check_out_video(out)
    for path in exports:
        if Path(path).suffix.lower() not in TRACK_SUFFIXES:
            raise HyperfeatError(f"export {path} must end in one of {', '.join(TRACK_SUFFIXES)}")
    if points_text:
        parse_queries(points_text)  # malformed points fail before the backbone loads
    precheck_source(video)  # a missing or empty video fails before the backbone loads
    if hf is None:
        from hyperfeat.api import Hyperfeatures

        hf = Hyperfeatures.from_checkpoint(checkpoint, overrides=list(overrides))
    hf = adapted(hf, video, adapt_steps, adapt_lr, mirror=adapt_mirror)
    stream = frame_stream(hf, video)
    queries = build_queries(points_text, grid, mask, stream.original_size, grid_frame, num_points)
    result = track_video(hf, video, queries)  # checks the queries before describing the frames
    pictures = FrameStream(video, None) if full_resolution else stream
    xy = rescale_points(result.tracks, result.size, pictures.size)
    written = write_video_stream(iter_draw_tracks(iter(pictures), xy, result.visible, tail_length), out_path, fps=fps)
    meta = {"video": str(video), "checkpoint": str(checkpoint), "tracker": str(hf.cfg.video.tracker)}
    json_path = save_tracks(
        tracks_json_path(out_path), result.queries, result.tracks, result.visible, result.confidence, result.size, meta
    )
    exported = [
        save_tracks(p, result.queries, result.tracks, result.visible, result.confidence, result.size, meta)
        for p in exports
    ]
    return {
        "video": written,
        "json": json_path,
        "exports": exported,
        "tracks": result.tracks,
        "visible": result.visible,
        "confidence": result.confidence,
    }


def _track_args(p: argparse.ArgumentParser) -> None:
    add_video_args(p, fps_of="picture video")
    p.add_argument(
        "--points", default=None, help='queries "t,x,y;t,x,y": frame index t, (x, y) pixels of the original frames'
    )
    p.add_argument("--grid", type=int, default=None, help="track an N×N grid of points (inside --mask when given)")
    p.add_argument("--grid-frame", type=int, default=0, help="the frame the grid / mask points start at")
    p.add_argument("--mask", default=None, help="segmentation mask PNG (the frames' size): track points inside it")
    p.add_argument("--num-points", type=int, default=None, help="with --mask and no --grid: points drawn inside (64)")
    p.add_argument("--out", default="tracks.mp4", help="picture video (.mp4 or .gif); tracks also go to <out>.json")
    p.add_argument("--export", action="append", default=[], help="also write the tracks to this .json, .csv or .npz")
    p.add_argument("--full-resolution", action="store_true", help="draw on the frames at their source resolution")
    p.add_argument("--tail-length", type=int, default=10, help="frames of fading tail behind each point")
    add_adapt_args(p)


@command("track", "track points through a video and draw them (dot: visible, cross: occluded)", _track_args)
def run_track(args: argparse.Namespace) -> int:
    video, overrides = video_source(args)
    result = run_track_command(
        args.checkpoint,
        video,
        args.points,
        args.out,
        overrides=overrides,
        fps=args.fps,
        tail_length=args.tail_length,
        grid=args.grid,
        mask=args.mask,
        grid_frame=args.grid_frame,
        num_points=args.num_points,
        exports=args.export,
        full_resolution=args.full_resolution,
        adapt_steps=args.adapt_steps,
        adapt_lr=args.adapt_lr,
        adapt_mirror=args.adapt_mirror,
    )
    tracks, visible = result["tracks"], result["visible"]
    shown = range(min(tracks.shape[0], 10))
    for n in shown:
        print(
            f"point {n}: visible in {int(visible[n].sum())}/{visible.shape[1]} frames, "
            f"last at ({tracks[n, -1, 0]:.1f}, {tracks[n, -1, 1]:.1f})"
        )
    if tracks.shape[0] > len(shown):
        print(f"… and {tracks.shape[0] - len(shown)} more points")
    print(f"wrote {result['video']} and {result['json']}" + "".join(f", {p}" for p in result["exports"]))
    return 0
