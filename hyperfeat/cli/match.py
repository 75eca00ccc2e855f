"""``hyperfeat match``: match points from a source image to a target image and draw them."""

from __future__ import annotations

import argparse

from hyperfeat.cli.common import (
    CHECKPOINT_HELP,
    add_config_args,
    command,
    parse_points,
    with_config_file,
)


def _match_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="source image (the points are in its pixels)")
    p.add_argument("target", help="target image")
    p.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    p.add_argument("--points", required=True, help='source points "x1,y1;x2,y2" in source pixels')
    p.add_argument(
        "--method",
        default="nn",
        choices=["nn", "mutual_nn", "soft_argmax"],
        help="nearest neighbour, mutual nearest neighbour or soft-argmax (eval.softmax_temperature)",
    )
    p.add_argument("--out", default="match.png", help="picture of the correspondences")
    add_config_args(p)


@command("match", "match points from a source image to a target image, and draw them", _match_args)
def run_match(args: argparse.Namespace) -> int:
    from hyperfeat.api import Hyperfeatures
    from hyperfeat.viz.correspondences import draw_correspondences

    points = parse_points(args.points)  # a typo fails before the model loads
    from pathlib import Path

    from matplotlib.backend_bases import FigureCanvasBase

    from hyperfeat.errors import HyperfeatError

    kinds = FigureCanvasBase.get_supported_filetypes()
    if Path(args.out).suffix.lower().lstrip(".") not in kinds:  # fail before the work, not after
        raise HyperfeatError(
            f"--out {args.out}: the picture must end in one of {', '.join('.' + k for k in sorted(kinds))}"
        )
    hf = Hyperfeatures.from_checkpoint(args.checkpoint, overrides=with_config_file(args.config, args.late_overrides))
    pred = hf.match(args.source, args.target, points, method=args.method)
    draw_correspondences(
        args.source, args.target, points, pred, None, None, None, out_path=args.out, title=f"{args.method} matches"
    )
    for (x, y), (u, v) in zip(points.tolist(), pred.tolist()):
        print(f"({x:.1f}, {y:.1f}) -> ({u:.1f}, {v:.1f})")
    print(f"wrote {args.out}")
    return 0
