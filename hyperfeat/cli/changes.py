"""``hyperfeat changes``: find changes of state of tracked points in a video and draw them."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Optional, Sequence

from hyperfeat.cli.common import (
    CHECKPOINT_HELP,
    adapted,
    add_adapt_args,
    add_video_args,
    command,
    parse_queries,
    video_source,
)
from hyperfeat.describe import registry
from hyperfeat.errors import HyperfeatError
from hyperfeat.io import PathLike, atomic_write
from hyperfeat.video.queries import read_mask_png

DESCRIBERS = registry.DENSE


def build_describer(describer: str, checkpoint: Optional[PathLike], overrides: Sequence[str]):
    """The describer named on the command line, by its registered name
    (:mod:`hyperfeat.describe.registry`): a trained checkpoint (``hyperfeatures``, adaptable with
    ``--adapt-steps``) or any other, e.g. the training-free ``local-stats``, which needs no model."""
    registry.check_name(describer, "--describer", dense=True)
    if registry.REGISTRY[describer].needs_checkpoint and checkpoint is None:
        raise HyperfeatError(
            f"--checkpoint is required with --describer {describer} "
            "(or use --describer local-stats, which needs no model)"
        )
    if describer == "hyperfeatures":
        from hyperfeat.api import Hyperfeatures

        return Hyperfeatures.from_checkpoint(checkpoint, overrides=list(overrides))
    return registry.build(describer, overrides, checkpoint=checkpoint)


def tracked_references(given: dict, mask, frames, tracks_path: PathLike):
    """Check a loaded track file against the video, and with a frame-0 ``mask`` (H, W) flag
    its points outside the object as references → (N,) bool, or None without a mask."""
    num_frames = given["visible"].shape[1]
    if num_frames != len(frames):
        raise HyperfeatError(f"track file {tracks_path} has {num_frames} frames but the video has {len(frames)}")
    size = tuple(frames.original_size)
    if given.get("size") is not None and tuple(given["size"]) != size:
        raise HyperfeatError(
            f"track file {tracks_path} is for {given['size'][0]}×{given['size'][1]} frames "
            f"but the video is {size[0]}×{size[1]} (W×H)"
        )
    if mask is None:
        return None
    from hyperfeat.video.queries import in_mask, mask_pixels

    inside = in_mask(
        mask_pixels(mask, size, allow_empty=True), given["tracks"][:, 0]
    )  # positions at frame 0, the mask's frame
    if not bool(inside.any()):
        raise HyperfeatError(f"no point of track file {tracks_path} lies inside the mask at frame 0")
    return ~inside


def run_changes_command(
    video: PathLike,
    out_dir: PathLike,
    checkpoint: Optional[PathLike] = None,
    describer: str = "hyperfeatures",
    grid: Optional[int] = None,
    points_text: Optional[str] = None,
    mask_path: Optional[PathLike] = None,
    overrides: Sequence[str] = (),
    fps: float = 10,
    hf=None,
    adapt_steps: int = 0,
    adapt_lr: Optional[float] = None,
    adapt_mirror: Optional[bool] = None,
    tracks_path: Optional[PathLike] = None,
    states_path: Optional[PathLike] = None,
) -> dict:
    """Analyse ``video`` and write into ``out_dir``: ``drift.png`` (drift curves, events, region
    colours), ``timeline.png`` (state per point and frame), ``overlay.mp4`` (points coloured by
    state), ``events.json`` / ``events.csv`` (one row per event) and ``changes.json`` (every curve,
    region and segment). ``adapt_steps`` > 0: adapt the aggregation network to this video first
    (hyperfeatures only). Also ``event_<i>.png`` (the frame where each event's new state is
    reached, its points marked, with a legend) and ``states.pt`` (the learnt states, for
    ``states_path`` of another run). ``states_path``: states saved by an earlier run label this
    video's frames (inside ``mask_path``'s object when given), written to ``labels.json`` / ``labels.csv``.
    ``tracks_path``: a track file (``hyperfeat track``'s JSON/CSV/NPZ, or a
    TAP-Vid-layout NPZ from another tracker) read instead of tracking; with ``mask_path`` its
    points whose frame-0 position lies outside the mask are the background references.
    Returns the paths and the result."""
    from hyperfeat.io import write_video
    from hyperfeat.video.changes import video_changes
    from hyperfeat.video.frames import frames_as_uint8, load_frames, precheck_source
    from hyperfeat.viz.changes import draw_event_picture, draw_state_overlay, plot_drift, plot_timeline

    chosen = [
        n
        for n, v in (
            ("--grid", grid if mask_path is None else None),
            ("--points", points_text),
            ("--mask", mask_path if tracks_path is None else None),
            ("--tracks", tracks_path),
        )
        if v is not None
    ]
    if len(chosen) != 1 or (tracks_path is not None and grid is not None):
        raise HyperfeatError(
            f"give exactly one of --grid N, --points 't,x,y;…', --mask PNG or --tracks FILE "
            f"(--grid may come with --mask as its density, --mask with --tracks to name the "
            f"object); got {chosen + (['--grid'] if tracks_path and grid else []) or 'none'}"
        )
    queries = parse_queries(points_text) if points_text is not None else None
    mask = read_mask_png(mask_path) if mask_path is not None else None
    given = None
    states = None
    if states_path is not None:
        from hyperfeat.correspond.changes import load_states

        states = load_states(states_path)
    if tracks_path is not None:
        from hyperfeat.video.queries import load_tracks

        given = load_tracks(tracks_path)
    precheck_source(video)
    desc = hf if hf is not None else build_describer(describer, checkpoint, overrides)
    frames = load_frames(desc, video)
    desc = adapted(desc, frames, adapt_steps, adapt_lr, name=video, mirror=adapt_mirror)
    from hyperfeat.video.run import describe_frames

    maps = describe_frames(desc, frames, progress=True)  # (T, D, h, w), described once
    if given is not None:
        result = video_changes(
            desc,
            frames,
            queries=given["queries"],
            tracks=given["tracks"],
            visible=given["visible"],
            is_reference=tracked_references(given, mask, frames, tracks_path),
            descriptors=maps,
        )
    else:
        result = video_changes(desc, frames, queries=queries, grid=grid, mask=mask, descriptors=maps)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "drift": out / "drift.png",
        "timeline": out / "timeline.png",
        "events_json": out / "events.json",
        "events_csv": out / "events.csv",
        "changes_json": out / "changes.json",
    }
    plot_drift(result, paths["drift"], title=f"{Path(video).name}: drift of each point from its query appearance")
    plot_timeline(result, paths["timeline"])
    scale = (frames.size[0] / frames.original_size[0], frames.size[1] / frames.original_size[1])
    paths["overlay"] = write_video(
        draw_state_overlay(frames_as_uint8(frames.frames), result, scale), out / "overlay.mp4", fps=fps
    )
    header = {
        "video": str(video),
        "describer": describer,
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "frame_size_wh": list(frames.original_size),
        "num_frames": len(frames),
        "coordinates": "(x, y) pixels of the original frames, pixel centres at integers",
    }
    events = {
        **header,
        "message": result.message,
        "found": result.found,
        "events": [e.to_dict() for e in result.events],
    }
    atomic_write(paths["events_json"], lambda p: Path(p).write_text(json.dumps(events, indent=1)))
    atomic_write(paths["changes_json"], lambda p: Path(p).write_text(json.dumps({**header, **result.to_dict()})))

    def write_csv(p: str) -> None:
        with open(p, "w", newline="") as f:
            writer = csv.DictWriter(
                f, fieldnames=["event", "frame", "start", "end", "num_points", "strength", "score", "region", "points"]
            )
            writer.writeheader()
            writer.writerows(result.events_table())

    atomic_write(paths["events_csv"], write_csv)
    pictures = frames_as_uint8(frames.frames)
    for e in result.events:
        paths[f"event_{e.index}"] = out / f"event_{e.index}.png"
        atomic_write(
            paths[f"event_{e.index}"],
            lambda p, e=e: draw_event_picture(pictures[min(e.end, len(pictures) - 1)], result, e, scale).save(
                p, format="PNG"
            ),
        )
    if result.prototypes is not None:
        paths["states"] = result.save(out / "states.pt")
    labels = None
    if states is not None:
        labels = label_video(states, maps, mask, frames)
        paths["labels_json"], paths["labels_csv"] = out / "labels.json", out / "labels.csv"
        atomic_write(
            paths["labels_json"],
            lambda p: Path(p).write_text(json.dumps({**header, "states": str(states_path), **labels}, indent=1)),
        )

        def write_labels(p: str) -> None:
            with open(p, "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["frame", "state", "share"])
                writer.writerows(zip(range(len(labels["state"])), labels["state"], labels["share"]))

        atomic_write(paths["labels_csv"], write_labels)
    return {**paths, "result": result, "labels": labels}


def label_video(states, maps, mask, frames) -> dict:
    """Each frame's state of the main changed region of ``states`` (a
    :class:`~hyperfeat.correspond.changes.StatePrototypes`): the state most of the cells inside
    the frame-0 ``mask`` (or of the whole frame) are nearest to, and the share of cells it won."""
    import torch

    masks = None
    if mask is not None:
        from hyperfeat.video.queries import mask_pixels

        masks = mask_pixels(mask, tuple(frames.original_size), allow_empty=True)[None].expand(len(frames), -1, -1)
    region = states.main_region
    state, share = states.label_frames(maps.float(), masks, region=region)
    switches = [int(t) for t in torch.nonzero(state[1:] != state[:-1])[:, 0] + 1]
    return {
        "region": region,
        "state": state.tolist(),
        "share": [round(float(v), 4) for v in share],
        "switches": switches,
    }


def _changes_args(p: argparse.ArgumentParser) -> None:
    add_video_args(
        p,
        fps_of="overlay video",
        checkpoint_required=False,
        checkpoint_help="trained weights, needed by --describer hyperfeatures: " + CHECKPOINT_HELP,
    )
    p.add_argument(
        "--describer",
        default="hyperfeatures",
        choices=DESCRIBERS,
        help="a registered describer: hyperfeatures (a checkpoint) or a weight-free one, e.g. local-stats "
        "(local colour/texture statistics, no model)",
    )
    p.add_argument(
        "--grid", type=int, default=None, help="an N × N grid of points on frame 0 (with --mask: its density)"
    )
    p.add_argument("--points", default=None, help='queries "t,x,y;t,x,y" in pixels of the original frames')
    p.add_argument(
        "--mask", default=None, help="PNG mask of frame 0: object points inside, background references outside"
    )
    p.add_argument(
        "--tracks",
        default=None,
        help="a track file to analyse along instead of tracking: hyperfeat track's JSON/CSV/NPZ or a "
        "TAP-Vid-layout NPZ from another tracker (with --mask: points outside it at frame 0 are references)",
    )
    p.add_argument(
        "--states",
        default=None,
        help="states.pt of an earlier run: label this video's frames with those states (labels.json, labels.csv)",
    )
    p.add_argument("--out", default="changes", help="output folder")
    add_adapt_args(p)


@command(
    "changes", "find changes of state of tracked points (drift plot, timeline, overlay video, events)", _changes_args
)
def run_changes(args: argparse.Namespace) -> int:
    video, overrides = video_source(args)
    result = run_changes_command(
        video,
        args.out,
        checkpoint=args.checkpoint,
        describer=args.describer,
        grid=args.grid,
        points_text=args.points,
        mask_path=args.mask,
        overrides=overrides,
        fps=args.fps,
        adapt_steps=args.adapt_steps,
        adapt_lr=args.adapt_lr,
        adapt_mirror=args.adapt_mirror,
        tracks_path=args.tracks,
        states_path=args.states,
    )
    print(result["result"].message)
    if result["labels"] is not None:
        labels = result["labels"]
        print(
            f"states of {args.states}: region {labels['region']}, state per frame {labels['state']}"
            + (f", switches at frame(s) {labels['switches']}" if labels["switches"] else ", no switch")
        )
    print("wrote " + ", ".join(str(result[k]) for k in ("drift", "timeline", "overlay", "events_json", "events_csv")))
    return 0
