"""The ``hyperfeat`` command: one subcommand per job, one file per subcommand.

Every subcommand takes ``--config FILE`` and trailing ``key=value`` overrides (``group=name``
picks a preset: backbone=tiny, data=cub, experiment=smoke). Each command module registers
itself with :func:`hyperfeat.cli.common.command`; parsing arguments and writing files happen
only in this package.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
from typing import Optional, Sequence

from hyperfeat.cli import (  # noqa: F401  (register)
    changes,
    config,
    convert,
    evaluate,
    export,
    extract,
    match,
    plot_mixing,
    propagate,
    serve,
    track,
    train,
)
from hyperfeat.cli.common import COMMANDS, DefaultsHelpFormatter
from hyperfeat.errors import HyperfeatError, sigterm_as_interrupt


def build_parser() -> argparse.ArgumentParser:
    from hyperfeat.version import __version__

    parser = argparse.ArgumentParser(prog="hyperfeat", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"hyperfeat {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, configure, _) in COMMANDS.items():
        configure(sub.add_parser(name, help=help_text, description=help_text, formatter_class=DefaultsHelpFormatter))
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    from hyperfeat.quiet import quiet_third_party

    quiet_third_party()
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    for i in range(len(argv) - 1, 0, -1):  # "--points -5,10": a value that starts with a minus sign
        if argv[i - 1].startswith("--") and "=" not in argv[i - 1] and re.match(r"^-\.?\d", argv[i]):
            argv[i - 1 : i + 1] = [f"{argv[i - 1]}={argv[i]}"]
    args, unknown = parser.parse_known_args(argv)
    # key=value overrides may come anywhere on the line, also after options
    bad = [item for item in unknown if item.startswith("-") or "=" not in item]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    args.late_overrides = unknown
    _, _, run = COMMANDS[args.command]
    with sigterm_as_interrupt() as received:
        try:
            code = run(args)
            return 128 + signal.SIGTERM if received and code == 128 + signal.SIGINT else code
        except HyperfeatError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except OSError as err:  # a machine fault outside io.atomic_write (a picture, a video, a folder)
            from hyperfeat.io import write_error

            mapped = write_error(err, free=False)
            what = (
                str(mapped)
                if mapped is not None
                else f"{err.strerror or err}" + (f": {err.filename}" if err.filename else "")
            )
            print(f"error: {what}", file=sys.stderr)
            return 2
        except MemoryError:
            print(
                "error: out of memory; use smaller inputs or batches (features.batch_size, video.batch_size)",
                file=sys.stderr,
            )
            return 2
        except KeyboardInterrupt:
            name = "SIGTERM" if received else "Ctrl-C"
            print(f"interrupted ({name})", file=sys.stderr)
            return 128 + (signal.SIGTERM if received else signal.SIGINT)
