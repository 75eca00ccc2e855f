"""``hyperfeat train`` (and ``python train.py``): train the aggregation network."""

from __future__ import annotations

import argparse

from hyperfeat.cli.common import (
    add_config_args,
    command,
    require_extra,
)


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", help="key=value config overrides (experiment=smoke, train.max_steps=100 …)")
    add_config_args(p)


@command("train", "train the aggregation network (Lightning)", _train_args)
def run_train(args: argparse.Namespace) -> int:
    from hyperfeat.config import load_config

    cfg = load_config(args.config, list(args.overrides) + args.late_overrides)
    require_extra(["lightning", "torchmetrics"] + (["wandb"] if str(cfg.logger.backend) == "wandb" else [])
                  + ["scipy"], "training")
    from hyperfeat.errors import TrainingInterrupted
    from hyperfeat.train.trainer import train

    try:
        train(cfg)
    except TrainingInterrupted as stop:  # last.ckpt was saved; the message is already printed
        return stop.exit_code
    return 0
