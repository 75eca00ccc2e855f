"""``hyperfeat serve``: a local web page to match clicked points, track points in a clip and see
the mixing weights of a checkpoint (standard-library HTTP server; see :mod:`hyperfeat.web`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from hyperfeat.cli.common import command


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="aggregation checkpoint (.ckpt)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free port)")
    p.add_argument(
        "--examples",
        default=None,
        metavar="DIR",
        help="a folder of images (searched recursively) offered as examples in Match",
    )
    # trailing key=value overrides apply to the checkpoint's config (e.g. backbone.device=cuda)


def run_serve(args: argparse.Namespace) -> int:
    from hyperfeat.api import Hyperfeatures
    from hyperfeat.web import WebApp, serve_forever

    hf = Hyperfeatures.from_checkpoint(args.checkpoint, overrides=args.late_overrides)
    serve_forever(WebApp(hf, title=Path(args.checkpoint).name, examples=args.examples), host=args.host, port=args.port)
    return 0


command(
    "serve", "start a local web page: match clicked points, track points in a clip, see the mixing weights", _serve_args
)(run_serve)
command("demo", "the same as 'serve' (the name other projects use for their page)", _serve_args)(run_serve)
