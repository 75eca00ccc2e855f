"""``hyperfeat plot-mixing``: heat map of a checkpoint's mixing weights, layers × timesteps;
several checkpoints side by side on one colour scale (two of one plan: with their difference)."""

from __future__ import annotations

import argparse
from pathlib import Path

from hyperfeat.cli.common import CHECKPOINT_HELP, command
from hyperfeat.errors import HyperfeatError

MAX_CHECKPOINTS = 4  # panels side by side that still read


def _plot_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "checkpoints",
        nargs="+",
        metavar="CHECKPOINT",
        help=f"one to {MAX_CHECKPOINTS} checkpoints, drawn side by side: " + CHECKPOINT_HELP,
    )
    p.add_argument("--out", default="mixing.png", help="the picture (PNG)")


@command(
    "plot-mixing",
    "heat map of the learned mixing weights (layers × timesteps); several checkpoints side by side",
    _plot_args,
)
def run_plot_mixing(args: argparse.Namespace) -> int:
    from hyperfeat.model.features import layer_name
    from hyperfeat.model.pretrained import load_pretrained
    from hyperfeat.viz.mixing import MixingPanel, label_timestep_values, plot_mixing_comparison

    if len(args.checkpoints) > MAX_CHECKPOINTS:
        raise HyperfeatError(
            f"plot-mixing draws at most {MAX_CHECKPOINTS} checkpoints side by side; got {len(args.checkpoints)}"
        )
    names = [Path(c).name for c in args.checkpoints]
    if len(set(names)) < len(names):  # e.g. two runs' last.ckpt: tell them apart by their folder
        names = [str(Path(*Path(c).parts[-2:])) for c in args.checkpoints]
    panels = []
    for checkpoint, name in zip(args.checkpoints, names):
        network, meta = load_pretrained(checkpoint)
        feats = meta.config.features
        panels.append(
            MixingPanel(
                network.mixing_grid().detach(),
                meta.save_steps,
                [layer_name(ij) for ij in meta.layers],
                title=f"mixing weights: {name}",
                channels=meta.feature_dims,
                timestep_values=label_timestep_values(str(feats.mode), int(feats.num_steps), meta.save_steps),
            )
        )
    plot_mixing_comparison(panels, out_path=args.out)
    print(f"wrote {args.out}")
    return 0
