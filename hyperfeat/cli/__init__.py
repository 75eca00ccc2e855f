"""The ``hyperfeat`` command: one subcommand per job.

Every subcommand takes ``--config FILE`` and trailing ``key=value`` overrides (``group=name``
picks a preset: backbone=tiny, data=cub, experiment=smoke).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

from hyperfeat.errors import HyperfeatError

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}




def command(name: str, help_text: str, configure: Callable[[argparse.ArgumentParser], None]):
    def register(run: Callable[[argparse.Namespace], int]):
        COMMANDS[name] = (help_text, configure, run)
        return run

    return register




def split_overrides(items: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate ``key=value`` overrides from plain arguments (paths)."""
    overrides = [a for a in items if "=" in a and not Path(a).exists()]
    rest = [a for a in items if a not in overrides]
    return rest, overrides




def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="a YAML file merged over the defaults")




# ---------------------------------------------------------------------------- extract
def _extract_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", help="image files or folders, then key=value overrides")
    p.add_argument("--out", required=True, help="output folder: one <image stem>.pt per image")
    p.add_argument("--raw", action="store_true", help="save raw maps (S, C, R, R)")
    p.add_argument("--checkpoint", default=None, help="aggregation checkpoint: save hyperfeatures (D, R, R)")
    add_config_args(p)




@command("extract", "images → raw decoder maps and/or hyperfeatures, one .pt per image", _extract_args)
def run_extract(args: argparse.Namespace) -> int:
    from hyperfeat.cli.extract import extract_to_folder

    inputs, overrides = split_overrides(args.inputs)
    overrides += args.late_overrides
    written = extract_to_folder(inputs, args.out, raw=args.raw, checkpoint=args.checkpoint,
                                config_file=args.config, overrides=overrides)
    print(f"wrote {len(written)} files to {args.out}")
    return 0




# ---------------------------------------------------------------------------- convert-official
def _convert_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("official", help="published checkpoint (.pt with 'aggregation_network')")
    p.add_argument("out", help="hyperfeat checkpoint to write")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    add_config_args(p)




@command("convert-official", "import a published aggregation checkpoint", _convert_args)
def run_convert(args: argparse.Namespace) -> int:
    from hyperfeat.config import load_config
    from hyperfeat.model.convert import convert_official, read_official

    _, saved = read_official(args.official)
    implied = []  # what the published file's own config says, before the user's overrides
    if "save_timestep" in saved:
        implied.append(f"features.save_steps={list(saved['save_timestep'])}")
    if "num_timesteps" in saved:
        implied.append(f"features.num_steps={int(saved['num_timesteps'])}")
    if "projection_dim" in saved:
        implied.append(f"aggregation.projection_dim={int(saved['projection_dim'])}")
    if "output_resolution" in saved:
        implied.append(f"features.output_resolution={int(saved['output_resolution'])}")
    cfg = load_config(args.config, implied + list(args.overrides) + args.late_overrides)
    meta = convert_official(args.official, args.out, cfg)
    print(f"wrote {args.out}: {len(meta.layers)} layers × {len(meta.save_steps)} timesteps {meta.save_steps}, "
          f"channels {meta.feature_dims}")
    return 0




# ---------------------------------------------------------------------------- train
def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", help="key=value config overrides (experiment=smoke, train.max_steps=100 …)")
    add_config_args(p)




@command("train", "train the aggregation network (Lightning)", _train_args)
def run_train(args: argparse.Namespace) -> int:
    from hyperfeat.config import load_config
    from hyperfeat.train.trainer import train

    cfg = load_config(args.config, list(args.overrides) + args.late_overrides)
    train(cfg)
    return 0




# ---------------------------------------------------------------------------- eval
def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", help="key=value overrides: data=spair|cub|pf_willow, task=davis|jhmdb|tapvid …")
    p.add_argument("--checkpoint", required=True, help="aggregation checkpoint (.ckpt)")
    p.add_argument("--save-vis", type=int, default=None, help="write N pictures of predictions")
    p.add_argument("--out", default=None, help="JSON file for all numbers (default: <output_dir>/eval_<data>.json)")




@command("eval", "evaluate a checkpoint (semantic PCK or video tasks)", _eval_args)
def run_eval(args: argparse.Namespace) -> int:
    from hyperfeat.eval.runner import evaluate

    overrides = list(args.overrides) + args.late_overrides
    if args.save_vis is not None:
        overrides.append(f"eval.save_vis={args.save_vis}")
    evaluate(args.checkpoint, overrides, out_json=args.out)
    return 0




# ---------------------------------------------------------------------------- match
def _match_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("source")
    p.add_argument("target")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--points", required=True, help='source points "x1,y1;x2,y2" in source pixels')
    p.add_argument("--method", default="nn", choices=["nn", "mutual_nn", "soft_argmax"])
    p.add_argument("--out", default="match.png", help="picture of the correspondences")




@command("match", "match points from a source image to a target image, and draw them", _match_args)
def run_match(args: argparse.Namespace) -> int:
    from hyperfeat.api import Hyperfeatures, parse_points
    from hyperfeat.viz.correspondences import draw_correspondences

    points = parse_points(args.points)  # a typo fails before the model loads
    hf = Hyperfeatures.from_checkpoint(args.checkpoint, overrides=args.late_overrides)
    pred = hf.match(args.source, args.target, points, method=args.method)
    draw_correspondences(args.source, args.target, points, pred, None, None, None, out_path=args.out,
                         title=f"{args.method} matches")
    for (x, y), (u, v) in zip(points.tolist(), pred.tolist()):
        print(f"({x:.1f}, {y:.1f}) -> ({u:.1f}, {v:.1f})")
    print(f"wrote {args.out}")
    return 0




# ---------------------------------------------------------------------------- plot-mixing
def _plot_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint")
    p.add_argument("--out", default="mixing.png")




@command("plot-mixing", "heat map of the learned mixing weights (layers × timesteps)", _plot_args)
def run_plot_mixing(args: argparse.Namespace) -> int:
    from hyperfeat.model.checkpoint import load_checkpoint
    from hyperfeat.model.features import layer_name
    from hyperfeat.viz.mixing import label_timestep_values, plot_mixing_weights

    network, meta = load_checkpoint(args.checkpoint)
    names = [layer_name(ij) for ij in meta.layers]
    feats = meta.config.features
    values = label_timestep_values(str(feats.mode), int(feats.num_steps), meta.save_steps)
    plot_mixing_weights(network.mixing_grid().detach(), meta.save_steps, names, out_path=args.out,
                        title=f"mixing weights: {Path(args.checkpoint).name}", channels=meta.feature_dims,
                        timestep_values=values)
    print(f"wrote {args.out}")
    return 0




# ---------------------------------------------------------------------------- track / propagate
def _one_source(inputs: Sequence[str], late: Sequence[str], what: str) -> tuple[str, list[str]]:
    """The one video path among the positionals, and every key=value override."""
    sources, overrides = split_overrides(inputs)
    if len(sources) != 1:
        raise HyperfeatError(f"give exactly one {what} (then key=value overrides); got {sources or 'none'}")
    return sources[0], overrides + list(late)




def _track_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="VIDEO", help="a video file or a folder of frames, then key=value overrides")
    p.add_argument("--checkpoint", required=True, help="aggregation checkpoint (.ckpt)")
    p.add_argument("--points", required=True,
                   help='queries "t,x,y;t,x,y": frame index t, (x, y) pixels of the original frames')
    p.add_argument("--out", default="tracks.mp4", help="picture video (.mp4 or .gif); tracks also go to <out>.json")
    p.add_argument("--fps", type=float, default=10.0)
    p.add_argument("--tail-length", type=int, default=10, help="frames of fading tail behind each point")




@command("track", "track points through a video and draw them (dot: visible, ring: occluded)", _track_args)
def run_track(args: argparse.Namespace) -> int:
    from hyperfeat.cli.track import run_track_command

    video, overrides = _one_source(args.inputs, args.late_overrides, "video (file or folder of frames)")
    result = run_track_command(args.checkpoint, video, args.points, args.out, overrides=overrides,
                               fps=args.fps, tail_length=args.tail_length)
    tracks, visible = result["tracks"], result["visible"]
    for n in range(tracks.shape[0]):
        print(f"point {n}: visible in {int(visible[n].sum())}/{visible.shape[1]} frames, "
              f"last at ({tracks[n, -1, 0]:.1f}, {tracks[n, -1, 1]:.1f})")
    print(f"wrote {result['video']} and {result['json']}")
    return 0




def _propagate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="FRAMES", help="a folder of frames or a video file, then key=value overrides")
    p.add_argument("--checkpoint", required=True, help="aggregation checkpoint (.ckpt)")
    p.add_argument("--mask", required=True, help="first-frame mask PNG of object ids (DAVIS palette), the frames' size")
    p.add_argument("--out", required=True, help="output folder: one palette PNG per frame and overlay.mp4")
    p.add_argument("--fps", type=float, default=10.0)




@command("propagate", "propagate a first-frame object mask through a video", _propagate_args)
def run_propagate(args: argparse.Namespace) -> int:
    from hyperfeat.cli.propagate import run_propagate_command

    frames, overrides = _one_source(args.inputs, args.late_overrides, "video (folder of frames or file)")
    result = run_propagate_command(args.checkpoint, frames, args.mask, args.out, overrides=overrides, fps=args.fps)
    print(f"wrote {len(result['masks'])} masks to {args.out} and {result['overlay']}")
    return 0




# ---------------------------------------------------------------------------- entry
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hyperfeat", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, configure, _) in COMMANDS.items():
        configure(sub.add_parser(name, help=help_text, description=help_text))
    return parser




def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    # key=value overrides may come anywhere on the line, also after options
    bad = [item for item in unknown if item.startswith("-") or "=" not in item]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    args.late_overrides = unknown
    _, _, run = COMMANDS[args.command]
    try:
        return run(args)
    except HyperfeatError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2




if __name__ == "__main__":
    sys.exit(main())
