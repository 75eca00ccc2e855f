"""What every command shares: the command registry, overrides on the line, point parsing."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from hyperfeat.errors import HyperfeatError
from hyperfeat.video.queries import parse_queries, parse_rows  # noqa: F401  (parse_queries: the video commands')

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


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every argument's help ends with its default, except where there is none to tell (None,
    an off flag, a required option)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, argparse.SUPPRESS) or action.required:
            return action.help or ""
        return super()._get_help_string(action)


CHECKPOINT_HELP = (
    "trained weights: a .ckpt, a saved folder or .safetensors, a published name (dhf-sd15, "
    "dhf-sd15-onestep, dhf-sd21) or a hub id owner/name"
)


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="a YAML file merged over the defaults (before key=value overrides)",
    )


def add_video_args(
    parser: argparse.ArgumentParser,
    *,
    fps_of: str,
    checkpoint_help: str = CHECKPOINT_HELP,
    checkpoint_required: bool = True,
) -> None:
    """The arguments every video command (track, propagate, changes) takes: the video then
    key=value overrides, the weights, --fps of what it writes, --config."""
    parser.add_argument(
        "inputs", nargs="+", metavar="VIDEO", help="a video file or a folder of frames, then key=value overrides"
    )
    parser.add_argument("--checkpoint", required=checkpoint_required, default=None, help=checkpoint_help)
    parser.add_argument("--fps", type=float, default=10.0, help=f"frames per second of the {fps_of}")
    add_config_args(parser)


def video_source(args: argparse.Namespace) -> tuple[str, list[str]]:
    """A video command's one video path and its overrides (``--config FILE`` first, then key=value)."""
    video, overrides = one_source(args.inputs, args.late_overrides, "video (file or folder of frames)")
    return video, with_config_file(args.config, overrides)


def with_config_file(config_file, overrides: Sequence[str]) -> list[str]:
    """For commands whose config comes from a checkpoint: ``--config FILE`` as overrides, then ``overrides``."""
    from hyperfeat.config import config_file_overrides

    return (config_file_overrides(config_file) if config_file else []) + list(overrides)


def require_extra(modules: Sequence[str], what: str, extra: str = "train") -> None:
    """Raise a one-line error naming the pip extra when ``modules`` are not installed."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise HyperfeatError(
            f"{what} needs {', '.join(missing)}, which the slim install leaves out: pip install 'hyperfeat[{extra}]'"
        )


def one_source(inputs: Sequence[str], late: Sequence[str], what: str) -> tuple[str, list[str]]:
    """The one video path among the positionals, and every key=value override."""
    sources, overrides = split_overrides(inputs)
    if len(sources) != 1:
        raise HyperfeatError(f"give exactly one {what} (then key=value overrides); got {sources or 'none'}")
    return sources[0], overrides + list(late)


def parse_points(text: str) -> torch.Tensor:
    """'x1,y1;x2,y2' → (N, 2) float tensor (image points of ``match``; video queries are
    :func:`hyperfeat.video.queries.parse_queries`)."""
    return torch.tensor(parse_rows(text, 2, "x1,y1;x2,y2"), dtype=torch.float32)


def adapted(
    hf, video, steps: int, lr: Optional[float], name: Optional[str | Path] = None, mirror: Optional[bool] = None
):
    """``hf`` adapted to ``video`` (a path or loaded frames; ``name`` names it in the printed
    line) by ``steps`` self-supervised steps (``--adapt-steps``); ``hf`` itself when 0.
    ``mirror`` (``--adapt-mirror``): None takes the adaptation's default."""
    if not steps:
        return hf
    if int(steps) < 0:
        raise HyperfeatError(f"--adapt-steps must be >= 0; got {steps}")
    if not hasattr(hf, "adapt"):
        raise HyperfeatError(
            f"--adapt-steps needs trained hyperfeatures (a checkpoint); {type(hf).__name__} has no "
            f"aggregation network to adapt"
        )
    walk = {} if mirror is None else {"mirror": bool(mirror)}
    out = hf.adapt(video, steps=int(steps), lr=None if lr is None else float(lr), progress=True, **walk)
    info = out.adaptation
    if info.objective == "warp":
        loss = f"warp loss (warped copies of its frames) {info.warp_before:.3f} → {info.warp_after:.3f}"
    else:
        loss = f"walk loss{' (mirrored home)' if info.mirror else ''} {info.loss_before:.3f} → {info.loss_after:.3f}"
        if info.objective == "walk+warp":
            loss += f", warp loss {info.warp_before:.3f} → {info.warp_after:.3f}"
    print(f"adapted the aggregation network to {name if name is not None else video}: {steps} steps, {loss}")
    return out


def add_adapt_args(p: argparse.ArgumentParser) -> None:
    from hyperfeat.train.adapt import LEARNING_RATES  # the one home of the adaptation's defaults

    p.add_argument(
        "--adapt-steps",
        type=int,
        default=0,
        help="test-time adaptation: this many self-supervised steps on the video first (0: none)",
    )
    p.add_argument(
        "--adapt-lr",
        type=float,
        default=None,
        help=f"learning rate of --adapt-steps (default: the adaptation's own: {LEARNING_RATES['warp']:g} on warped "
        f"copies of the video's frames, what a network not trained on the walk adapts by, {LEARNING_RATES['walk']:g} "
        "for the walk)",
    )
    p.add_argument(
        "--adapt-mirror",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="adapt by the walk, ending each walk on the mirrored first frame (--adapt-mirror) or not "
        "(--no-adapt-mirror), so that descriptors of position alone cannot win it (default: the adaptation's "
        "own; the mirror costs one more backbone pass per frame)",
    )
