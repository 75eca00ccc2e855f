"""``hyperfeat export``: a training checkpoint → a shareable folder (safetensors + config + model card)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional

from hyperfeat.cli.common import command
from hyperfeat.errors import HyperfeatError


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a training checkpoint (.ckpt), a saved folder, or a published name (dhf-sd15 …)")
    p.add_argument("folder", help="folder to write: model.safetensors, config.json, README.md, mixing_weights.png")
    p.add_argument(
        "--metrics",
        default=None,
        help="a JSON file of numbers for the model card (e.g. the one `hyperfeat eval` writes)",
    )
    p.add_argument(
        "--push",
        default=None,
        metavar="REPO_ID",
        help="also upload the folder to this hub repo (log in first with `hf auth login`)",
    )


def _read_metrics(path: str) -> dict:
    """The numbers of a metrics JSON for the card. An evaluation record (what ``hyperfeat eval``
    writes: ``results`` with ``data``, ``task``, ``backbone``) gives its headline scores, each
    named with the data set it was measured on, not its per-category or per-sequence ones; any
    other JSON gives all its numbers as "a/b" keys."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise HyperfeatError(f"cannot read metrics file {path}: {err}") from err
    if isinstance(data, dict) and isinstance(data.get("results"), dict):
        from hyperfeat.eval.compare import headline_keys

        results = data["results"]
        where = ", ".join(f"{k} {data[k]}" for k in ("data", "task", "backbone", "method") if data.get(k))
        return {
            f"{key} ({where})" if where else key: float(results[key])
            for key in headline_keys(results)
            if isinstance(results[key], (int, float)) and not isinstance(results[key], bool)
        }
    flat: dict = {}

    def walk(prefix: str, value) -> None:  # nested JSON → "a/b" keys, numbers only
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}/{key}" if prefix else str(key), item)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[prefix] = float(value)

    walk("", data)
    return flat


def _training_steps(checkpoint: str) -> Optional[int]:
    """The optimiser steps a training checkpoint (.ckpt) was saved after, None when it does not say."""
    path = Path(checkpoint)
    if path.suffix != ".ckpt" or not path.is_file():
        return None
    from hyperfeat.io import safe_torch_load

    try:
        step = safe_torch_load(path, "checkpoint").get("global_step")
    except Exception:  # the export itself reports an unreadable file
        return None
    return int(step) if isinstance(step, int) else None


@command("export", "a checkpoint → a shareable folder: model.safetensors + config.json + model card", _export_args)
def run_export(args: argparse.Namespace) -> int:
    from hyperfeat.model.pretrained import load_pretrained, push_to_hub, save_pretrained

    if args.late_overrides:
        raise HyperfeatError(f"export takes no overrides; got {' '.join(args.late_overrides)}")
    network, meta = load_pretrained(args.checkpoint)
    metrics = _read_metrics(args.metrics) if args.metrics else None
    from hyperfeat.viz.mixing import save_mixing_picture

    steps = _training_steps(args.checkpoint)
    source = f"exported from {Path(args.checkpoint).name}" + (
        f" after {steps} training steps" if steps is not None else ""
    )
    folder = save_pretrained(args.folder, network, meta, metrics=metrics, source=source, picture=save_mixing_picture)
    print(
        f"wrote {folder}: {len(meta.layers)} layers × {len(meta.save_steps)} timesteps; "
        f"load with Hyperfeatures.from_pretrained({str(folder)!r})"
    )
    if args.push:
        push_to_hub(folder, args.push)
        print(f"uploaded to {args.push}")
    return 0
