"""The ``hyperfeat`` command: one subcommand per job, one file per subcommand.

Every subcommand takes ``--config FILE`` and trailing ``key=value`` overrides (``group=name``
picks a preset: backbone=tiny, data=cub, experiment=smoke). Each command module registers
itself with :func:`hyperfeat.cli.common.command`; parsing arguments and writing files happen
only in this package.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from hyperfeat.cli import (  # noqa: F401  (register)
    changes,
    convert,
    evaluate,
    extract,
    match,
    plot_mixing,
    propagate,
    track,
    train,
)
from hyperfeat.cli.common import COMMANDS
from hyperfeat.errors import HyperfeatError


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
