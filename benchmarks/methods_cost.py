"""Cost of each correspondence method per image pair (and per point for Hedlin et al.'s matcher).

    python benchmarks/methods_cost.py            # tiny backbone, 128 px, one thread
    python benchmarks/methods_cost.py --points 8

Counts UNet passes and measures seconds on the tiny random model (the counts are those of any
backbone; the seconds scale with the UNet). For ``ldm`` the tiny preset's settings are measured
and the counts of Hedlin et al.'s own settings (129 steps × 5 embeddings, 20 crops × 5) are
given beside them. Prints a table and writes JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from hyperfeat.config import load_config  # noqa: E402
from hyperfeat.describe import registry  # noqa: E402
from hyperfeat.eval.table import format_table  # noqa: E402
from hyperfeat.model.backbone import load_backbone  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--points", type=int, default=4)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "methods_cost.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    overrides = ["backbone=tiny", "features.num_steps=5", "features.save_steps=[4,2,0]", "raw.maps=[[4,1,0]]"]
    cfg = load_config(overrides=overrides)
    backbone = load_backbone(cfg)
    g = torch.Generator().manual_seed(0)
    pair = torch.rand(2, 3, 128, 128, generator=g) * 2 - 1
    rows, record = [], {}
    for name, d, passes in [
        (
            "dift (E=8)",
            registry.build("dift", cfg=cfg, backbone=backbone),
            "8 forward per image (stopped after the block)",
        ),
        ("raw (inversion, 5 steps)", registry.build("raw", cfg=cfg, backbone=backbone), "5 forward per image"),
    ]:
        d.describe_batch(pair)  # warm-up
        start = time.perf_counter()
        d.describe_batch(pair)
        seconds = time.perf_counter() - start
        rows.append([name, passes, "-", f"{seconds:.3f}", "-"])
        record[name] = {"seconds_per_pair": seconds}
    m = registry.build("ldm", cfg=cfg, backbone=backbone)
    points = torch.tensor([[20.0 + 80.0 * i / max(1, args.points - 1), 64.0] for i in range(args.points)])
    m.match(pair[0], pair[1], points)
    s = m.stats
    per = {
        "unet_forward_backward": s["unet_forward_backward"] / s["points"],
        "unet_forward": s["unet_forward"] / s["points"],
        "seconds": s["seconds"] / s["points"],
    }
    settings = cfg.ldm
    rows.append(
        [
            f"ldm (tiny preset: {settings.steps} steps × {settings.num_embeddings}, {settings.num_crops} crops)",
            f"{per['unet_forward_backward']:.0f} fwd+bwd + {per['unet_forward']:.0f} fwd per point",
            f"{per['seconds']:.3f}",
            f"{per['seconds'] * 10:.2f}",
            f"{args.points} points, batched",
        ]
    )
    rows.append(
        ["ldm (Hedlin et al.: 129 steps × 5, 20 crops × 5)", "645 fwd+bwd + 100 fwd per point", "-", "-", "counts only"]
    )
    record["ldm"] = {"per_point": per, "points": args.points, "settings": dict(settings)}
    print(
        format_table(
            ["method", "UNet passes", "s/point", "s/pair (10 points)", "note"],
            rows,
            title="cost per pair, tiny backbone, 128 px, CPU, 1 thread",
        )
    )
    Path(args.out).write_text(json.dumps(record, indent=2, default=str))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
