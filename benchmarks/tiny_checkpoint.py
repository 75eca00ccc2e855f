"""Build a tiny, untrained aggregation checkpoint on the offline tiny backbone (for benchmarks).

python benchmarks/tiny_checkpoint.py OUT.ckpt [key=value ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

TINY = ["backbone=tiny", "features.num_steps=1", "features.save_steps=[0]"]


def build_tiny_checkpoint(path: Path, overrides: list[str] = ()) -> Path:
    from hyperfeat.config import load_config
    from hyperfeat.model.backbone import load_backbone
    from hyperfeat.model.checkpoint import CheckpointMeta, build_network, save_checkpoint
    from hyperfeat.model.features import FeatureExtractor

    cfg = load_config(overrides=[*TINY, *overrides])
    extractor = FeatureExtractor(load_backbone(cfg), cfg.features)
    torch.manual_seed(0)
    network = build_network(cfg, extractor.channels)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(
        path, network, CheckpointMeta(cfg, extractor.channels, extractor.layers, list(cfg.features.save_steps))
    )
    return path


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    print(build_tiny_checkpoint(Path(sys.argv[1]), sys.argv[2:]))
