"""``hyperfeat plot-mixing``: heat map of a checkpoint's mixing weights, layers × timesteps."""

from __future__ import annotations

import argparse
from pathlib import Path

from hyperfeat.cli.common import (
    CHECKPOINT_HELP,
    command,
)


def _plot_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help=CHECKPOINT_HELP)
    p.add_argument("--out", default="mixing.png", help="the picture (PNG)")


@command("plot-mixing", "heat map of the learned mixing weights (layers × timesteps)", _plot_args)
def run_plot_mixing(args: argparse.Namespace) -> int:
    from hyperfeat.model.features import layer_name
    from hyperfeat.model.pretrained import load_pretrained
    from hyperfeat.viz.mixing import label_timestep_values, plot_mixing_weights

    network, meta = load_pretrained(args.checkpoint)
    names = [layer_name(ij) for ij in meta.layers]
    feats = meta.config.features
    values = label_timestep_values(str(feats.mode), int(feats.num_steps), meta.save_steps)
    plot_mixing_weights(network.mixing_grid().detach(), meta.save_steps, names, out_path=args.out,
                        title=f"mixing weights: {Path(args.checkpoint).name}", channels=meta.feature_dims,
                        timestep_values=values)
    print(f"wrote {args.out}")
    return 0
