"""Work and bytes that grow with the data: the feature cache's bytes per image, int8's effect on
the loss, and evaluation with each unique image described once.

    python benchmarks/scale.py                 # cache bytes + int8 loss effect (a few minutes on a CPU)
    python benchmarks/scale.py --eval-pairs 900 --checkpoint CKPT   # also time eval.py on PF-WILLOW

Cache bytes per image are computed from the channel counts and the sizes the UNet makes its
decoder maps at (SD 1.5 at 512 px, the paper's S = 11, R = 64: up_blocks 0-3 at 8², 16², 32², 64²,
1280/1280/640/320 channels × 3 ResNets) and measured on disk for the smoke preset (the tiny
backbone). "before" is the former cache (every map resized to R², float16); "after" the
native-resolution cache at float16 and at int8. The int8 effect: the same training steps from the
same start on the same pairs, once from a float16 and once from an int8 cache. Prints tables and
writes JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from hyperfeat.config import load_config  # noqa: E402
from hyperfeat.testing import loss_curve  # noqa: E402
from hyperfeat.train.cache import FeatureCache, entry_bytes  # noqa: E402

MB = 1e6
SD15_CHANNELS = [1280] * 3 + [1280] * 3 + [640] * 3 + [320] * 3  # up_blocks 0-3, 3 ResNets each
SD15_SIZES = [(8, 8)] * 3 + [(16, 16)] * 3 + [(32, 32)] * 3 + [(64, 64)] * 3  # native, at 512 px
PAPER_S, PAPER_R = 11, 64


def bytes_table_rows(name: str, s: int, channels, sizes, r: int, measured: Optional[dict] = None) -> list[dict]:
    before = s * sum(channels) * r * r * 2
    rows = [{"setting": name, "cache": "before: every map at R², float16", "bytes": before}]
    for dtype in ("float16", "int8"):
        value = entry_bytes(s, channels, sizes, dtype)
        row = {"setting": name, "cache": f"after: native sizes, {dtype}", "bytes": value, "ratio": before / value}
        if measured and dtype in measured:
            row["file_bytes"] = measured[dtype]
        rows.append(row)
    return rows


def smoke_cache(tmp: Path) -> tuple[dict, list, list, dict]:
    """The smoke preset's entry: channels, native sizes and the file bytes at float16 and int8."""
    from hyperfeat.model.backbone import load_backbone
    from hyperfeat.model.features import FeatureExtractor

    cfg = load_config(overrides=["experiment=smoke"])
    backbone = load_backbone(cfg)
    extractor = FeatureExtractor(backbone, cfg.features)
    image = torch.rand(1, 3, int(cfg.features.load_size), int(cfg.features.load_size)) * 2 - 1
    layers = extractor.run_native(image)  # per layer (1, S, C_l, h, w)
    sizes = [tuple(m.shape[-2:]) for m in layers]
    measured = {}
    for dtype in ("float16", "int8"):
        c = load_config(overrides=["experiment=smoke", f"train.cache_dtype={dtype}"])
        cache = FeatureCache(tmp / dtype, c)
        cache.bind(extractor)
        key = cache.key(image[0])
        cache.store(key, [m[0] for m in layers])
        measured[dtype] = cache.path(key).stat().st_size
    info = {"S": extractor.num_timesteps, "R": int(cfg.features.output_resolution)}
    return info, list(extractor.channels), sizes, measured


def int8_effect(pairs: int, steps: int, tmp: Path) -> dict:
    """Loss curves of the same training from a float16 and an int8 cache (smoke preset data)."""
    from hyperfeat.data.pairs import build_pair_dataset
    from hyperfeat.model.backbone import load_backbone
    from hyperfeat.train.cache import CachedPairDataset, collate_cached_pairs
    from hyperfeat.train.module import HyperfeatModule

    cfg = load_config(overrides=["experiment=smoke"])
    backbone = load_backbone(cfg)
    dataset = build_pair_dataset(cfg.data, "train", int(cfg.features.load_size))
    items = [dataset[i] for i in range(min(pairs, len(dataset)))]
    torch.manual_seed(0)
    module = HyperfeatModule(cfg, backbone)
    start = {k: v.clone() for k, v in module.aggregation.state_dict().items()}
    # the native maps once, stored into both caches (so both hold the same values before rounding)
    native = {}
    for it in items:
        for side in ("source_image", "target_image"):
            native.setdefault(FeatureCache(tmp / "key", cfg).key(it[side]), it[side])
    keys = list(native)
    layers = []
    batch = int(cfg.features.batch_size)
    for i in range(0, len(keys), batch):
        out = module.extractor.run_native(torch.stack([native[k] for k in keys[i : i + batch]]))
        layers.extend([[m[b] for m in out] for b in range(len(out[0]))])
    curves, error, caches = {}, {}, {}
    for dtype in ("float32", "float16", "int8"):
        c = load_config(overrides=["experiment=smoke", f"train.cache_dtype={dtype}"])
        cache = FeatureCache(tmp / dtype, c)
        cache.bind(module.extractor)
        caches[dtype] = cache
        for image, maps in zip(keys, layers):
            cache.store(cache.key(native[image]), maps)
        data = CachedPairDataset(items, cache)
        batches = [
            collate_cached_pairs([data[j] for j in range(i, min(i + 4, len(items)))]) for i in range(0, len(items), 4)
        ]
        curves[dtype] = loss_curve(module, batches, steps, float(cfg.train.lr), start)
        error[dtype] = [
            float((cache.get(native[k]).float() - caches["float32"].get(native[k])).abs().max()) for k in keys
        ]  # largest error of any value, per image
    ref = curves["float32"]
    summary = {}
    for dtype, losses in curves.items():
        diff = [abs(a - b) for a, b in zip(losses, ref)]
        summary[dtype] = {
            "first_loss": losses[0],
            "last_loss": losses[-1],
            "max_abs_diff_vs_float32": max(diff),
            "mean_abs_diff_vs_float32": sum(diff) / len(diff),
            "max_abs_map_error": max(error[dtype]),
        }
    return {"pairs": len(items), "steps": steps, "curves": curves, "summary": summary}


def time_eval(checkpoint: str, max_pairs: Optional[int]) -> dict:
    """Wall time of eval.py on PF-WILLOW with the tiny backbone (the checkpoint's config)."""
    from hyperfeat.eval.runner import evaluate

    overrides = ["data=pf_willow", f"paths.output_dir={tempfile.mkdtemp()}"]
    if max_pairs:
        overrides.append(f"data.max_pairs={max_pairs}")
    start = time.perf_counter()
    record = evaluate(checkpoint, overrides)
    wall = time.perf_counter() - start
    r = record["results"]
    return {
        "pairs": r["pairs_evaluated"],
        "images_described": r["images_described"],
        "images_reused": r["images_reused"],
        "wall_s": wall,
        "pck_bbox@0.1": r["pck_bbox@0.1"],
    }


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pairs", type=int, default=8, help="training pairs for the int8 effect")
    p.add_argument("--steps", type=int, default=30, help="training steps for the int8 effect")
    p.add_argument("--checkpoint", help="a tiny-backbone checkpoint: also time eval.py on PF-WILLOW")
    p.add_argument("--eval-pairs", type=int, default=None, help="PF-WILLOW pairs to evaluate (default: all 900)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "scale_results.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("WANDB_MODE", "offline")
    out: dict = {"threads": args.threads, "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        info, channels, sizes, measured = smoke_cache(tmp)
        rows = bytes_table_rows(
            f"SD 1.5, S = {PAPER_S}, R = {PAPER_R} (analytic)", PAPER_S, SD15_CHANNELS, SD15_SIZES, PAPER_R
        )
        rows += bytes_table_rows(
            f"smoke preset (tiny), S = {info['S']}, R = {info['R']}", info["S"], channels, sizes, info["R"], measured
        )
        out["cache_bytes_per_image"] = rows
        print("\ncache bytes per image")
        print(f"{'setting':<42} {'cache':<36} {'MB':>10} {'file MB':>9} {'smaller':>8}")
        for row in rows:
            file_mb = f"{row['file_bytes'] / MB:.3f}" if "file_bytes" in row else "-"
            ratio = f"{row['ratio']:.2f}x" if "ratio" in row else "1x"
            print(f"{row['setting']:<42} {row['cache']:<36} {row['bytes'] / MB:>10.3f} {file_mb:>9} {ratio:>8}")
        effect = int8_effect(args.pairs, args.steps, tmp)
        out["int8_effect"] = effect
        print(f"\ntraining loss from the cache ({effect['pairs']} smoke pairs, {effect['steps']} steps, same start)")
        print(
            f"{'cache dtype':<12} {'first':>8} {'last':>8} {'max |Δ| vs float32':>20} {'mean |Δ|':>10} {'max map err':>12}"
        )
        for dtype, s in effect["summary"].items():
            print(
                f"{dtype:<12} {s['first_loss']:>8.4f} {s['last_loss']:>8.4f} {s['max_abs_diff_vs_float32']:>20.5f} "
                f"{s['mean_abs_diff_vs_float32']:>10.5f} {s['max_abs_map_error']:>12.5f}"
            )
    if args.checkpoint:
        ev = time_eval(args.checkpoint, args.eval_pairs)
        out["eval_pf_willow"] = ev
        print(
            f"\neval.py data=pf_willow: {ev['pairs']} pairs, {ev['images_described']} images described, "
            f"{ev['images_reused']} reused, {ev['wall_s']:.1f} s"
        )
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
