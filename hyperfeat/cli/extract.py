"""``hyperfeat extract``: images → one ``<stem>.pt`` per image with raw maps and/or hyperfeatures."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Optional, Sequence

import torch
from tqdm.auto import tqdm

from hyperfeat.cli.common import (
    CHECKPOINT_HELP,
    add_config_args,
    command,
    split_overrides,
)
from hyperfeat.errors import HyperfeatError
from hyperfeat.images import load_batch, load_image
from hyperfeat.io import atomic_save, gather_images


def extract_to_folder(
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    raw: bool = False,
    checkpoint: Optional[str | os.PathLike] = None,
    config_file: Optional[str | os.PathLike] = None,
    overrides: Sequence[str] = (),
) -> list[Path]:
    """Write ``<out_dir>/<stem>.pt`` per image: ``raw`` (S, C, R, R) float32 when ``raw``,
    ``hyperfeatures`` (D, R, R) float32 when ``checkpoint`` is given, plus the metadata
    (layers, save_steps, original size)."""
    if not raw and checkpoint is None:
        raise HyperfeatError("nothing to extract: pass --raw, --checkpoint CKPT, or both")
    files = gather_images(inputs)
    for f in files:  # every image is checked before any work, so a bad one costs nothing
        load_image(f)

    if checkpoint is not None:
        from hyperfeat.api import Hyperfeatures
        from hyperfeat.cli.common import with_config_file

        # the checkpoint holds the config: a --config file is applied over it like overrides
        hf = Hyperfeatures.from_checkpoint(checkpoint, overrides=with_config_file(config_file, overrides))
        cfg, extractor, network = hf.cfg, hf.extractor, hf.network
    else:
        from hyperfeat.config import load_config
        from hyperfeat.model.backbone import load_backbone
        from hyperfeat.model.features import FeatureExtractor

        cfg = load_config(config_file, overrides)
        extractor, network, hf = FeatureExtractor(load_backbone(cfg), cfg.features), None, None

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    size = int(cfg.features.batch_size)
    written: list[Path] = []
    meta = {
        "layers": [list(ij) for ij in extractor.layers],
        "layer_channels": extractor.channels,
        "save_steps": extractor.save_steps,
    }
    with tqdm(total=len(files), desc="extracting", unit="img") as bar:
        for start in range(0, len(files), size):
            chunk = files[start : start + size]
            batch, sizes = load_batch(chunk, int(cfg.features.load_size))
            if raw:
                maps = extractor.run(batch)  # (B, S, C, R, R)
                with torch.no_grad():
                    desc = network(maps.to(network.mixing_weights.device)).cpu() if network is not None else None
            else:
                maps, desc = None, hf.describe_batch(batch).cpu()
            for b, path in enumerate(chunk):
                record = dict(meta, source=str(path), image_size_wh=list(sizes[b]))
                # clone: a view would save the whole batch's storage in every image's file
                if maps is not None:
                    record["raw"] = maps[b].float().clone()
                if desc is not None:
                    record["hyperfeatures"] = desc[b].float().clone()
                target = out / f"{path.stem}.pt"
                atomic_save(record, target)
                written.append(target)
            bar.update(len(chunk))
    return written


def _extract_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", help="image files or folders, then key=value overrides")
    p.add_argument("--out", required=True, help="output folder: one <image stem>.pt per image")
    p.add_argument("--raw", action="store_true", help="save raw maps (S, C, R, R)")
    p.add_argument(
        "--checkpoint", default=None, help="save hyperfeatures (D, R, R) of these weights: " + CHECKPOINT_HELP
    )
    add_config_args(p)


@command("extract", "images → raw decoder maps and/or hyperfeatures, one .pt per image", _extract_args)
def run_extract(args: argparse.Namespace) -> int:

    inputs, overrides = split_overrides(args.inputs)
    overrides += args.late_overrides
    written = extract_to_folder(
        inputs, args.out, raw=args.raw, checkpoint=args.checkpoint, config_file=args.config, overrides=overrides
    )
    print(f"wrote {len(written)} files to {args.out}")
    return 0
