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


PAPER_EXPERIMENT = "sd15_spair_full"


def plain_train_overrides(data_root: str) -> list[str]:
    """What plain ``python train.py`` (no config, no overrides) runs: the paper's setting on the
    SPair-71k release under the data root, or a ConfigError saying what to download and where."""
    from pathlib import Path

    from hyperfeat.data.pairs.spair import SPAIR_RELEASE_FOLDER, spair_release_missing
    from hyperfeat.errors import ConfigError

    root = Path(data_root) / SPAIR_RELEASE_FOLDER
    missing = spair_release_missing(root)
    if missing:
        raise ConfigError(
            f"plain `python train.py` trains the paper's setting on SPair-71k, which is not under the data root "
            f"({root} lacks {', '.join(missing[:3])}{', …' if len(missing) > 3 else ''}): download SPair-71k.tar.gz "
            f"from the SPair-71k page of POSTECH CVLab (cvlab.postech.ac.kr/research/SPair-71k) and unpack it in "
            f"{Path(data_root)} (or set HYPERFEAT_DATA_ROOT / paths.data_root to the folder holding "
            f"{SPAIR_RELEASE_FOLDER}/); for an offline run without it: python train.py experiment=smoke"
        )
    return [f"experiment={PAPER_EXPERIMENT}"]


@command("train", "train the aggregation network (Lightning)", _train_args)
def run_train(args: argparse.Namespace) -> int:
    from hyperfeat.config import load_config

    overrides = list(args.overrides) + args.late_overrides
    if args.config is None and not overrides:
        overrides = plain_train_overrides(str(load_config().paths.data_root))
        print(
            f"training the paper's setting ({' '.join(overrides)}) on SPair-71k under {load_config().paths.data_root}"
        )
    cfg = load_config(args.config, overrides)
    require_extra(
        ["lightning", "torchmetrics"] + (["wandb"] if str(cfg.logger.backend) == "wandb" else []) + ["scipy"],
        "training",
    )
    from hyperfeat.errors import TrainingInterrupted
    from hyperfeat.train.trainer import train

    try:
        train(cfg)
    except TrainingInterrupted as stop:  # last.ckpt was saved; the message is already printed
        return stop.exit_code
    return 0
