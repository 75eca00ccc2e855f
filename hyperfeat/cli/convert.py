"""``hyperfeat convert-official``: import a published aggregation checkpoint of the reference implementation."""

from __future__ import annotations

import argparse

from hyperfeat.cli.common import (
    add_config_args,
    command,
)


def _convert_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("official", help="published checkpoint (.pt with 'aggregation_network')")
    p.add_argument("out", help="hyperfeat checkpoint to write")
    p.add_argument("overrides", nargs="*", help="key=value config overrides (features.save_steps=[...] …)")
    add_config_args(p)


@command("convert-official", "import a published aggregation checkpoint", _convert_args)
def run_convert(args: argparse.Namespace) -> int:
    from hyperfeat.config import load_config
    from hyperfeat.model.convert import (
        convert_official,
        implied_overrides,
        read_official,
    )

    _, saved = read_official(args.official)
    implied = implied_overrides(saved)  # the published file's own config, before the user's overrides
    given = list(args.overrides) + args.late_overrides
    if "num_timesteps" not in saved and not any(o.startswith("features.num_steps=") for o in given):
        import sys

        print(
            f"warning: {args.official} does not say its number of DDIM steps; assuming the config's "
            f"features.num_steps (give features.num_steps=N if it was trained with another)",
            file=sys.stderr,
        )
    cfg = load_config(args.config, implied + given)
    meta = convert_official(args.official, args.out, cfg)
    print(
        f"wrote {args.out}: {len(meta.layers)} layers × {len(meta.save_steps)} timesteps {meta.save_steps}, "
        f"channels {meta.feature_dims}"
    )
    return 0
