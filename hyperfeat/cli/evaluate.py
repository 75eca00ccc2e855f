"""``hyperfeat eval`` (and ``python eval.py``): evaluate a checkpoint on a semantic or video task."""

from __future__ import annotations

import argparse

from hyperfeat.cli.common import (
    CHECKPOINT_HELP,
    add_config_args,
    command,
    require_extra,
    with_config_file,
)


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "overrides", nargs="*", help="key=value overrides: data=spair|cub|pf_willow, task=davis|jhmdb|tapvid …"
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        help=CHECKPOINT_HELP + "; needed by method=hyperfeatures "
        "(the default) and method=pruned, not by dift, raw, ldm",
    )
    p.add_argument(
        "--compare",
        action="store_true",
        help="run every method of compare.methods on the same pairs (or videos) and print one table",
    )
    p.add_argument("--save-vis", type=int, default=None, help="write N pictures of predictions")
    p.add_argument("--out", default=None, help="JSON file for all numbers (None: <output_dir>/eval_<data>.json)")
    add_config_args(p)


@command("eval", "evaluate a checkpoint (semantic PCK or video tasks)", _eval_args)
def run_eval(args: argparse.Namespace) -> int:
    require_extra(["torchmetrics", "scipy"], "evaluation")
    import sys

    from hyperfeat.eval.runner import evaluate
    from hyperfeat.eval.semantic import EvaluationInterrupted

    overrides = with_config_file(args.config, list(args.overrides) + args.late_overrides)
    if args.save_vis is not None:
        overrides.append(f"eval.save_vis={args.save_vis}")
    try:
        if args.compare:
            from hyperfeat.eval.compare import compare

            compare(overrides, checkpoint=args.checkpoint, out_json=args.out)
            return 0
        method = next((o.split("=", 1)[1] for o in reversed(overrides) if o.startswith("method=")), "hyperfeatures")
        if method == "hyperfeatures" and args.checkpoint is not None:
            evaluate(args.checkpoint, overrides, out_json=args.out)
            return 0
        from hyperfeat.eval.compare import evaluate_method

        evaluate_method(overrides, checkpoint=args.checkpoint, out_json=args.out)
    except EvaluationInterrupted as stop:
        done = f"after {stop.done} of {stop.total} pairs" if stop.total else "before any result"
        print(f"interrupted {done}: partial record written to {getattr(stop, 'path', '?')}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # while loading, before any pair
        print("interrupted before the evaluation started: nothing written", file=sys.stderr)
        return 130
    return 0
