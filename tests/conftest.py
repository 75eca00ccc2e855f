"""Shared fixtures: tiny random backbones (built offline) and the real data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from hyperfeat.config import load_config

DATA_ROOT = Path(os.environ.get("HYPERFEAT_DATA_ROOT", Path(__file__).resolve().parents[2] / "shared" / "data"))

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The tiny models are too small for intra-op threads to pay off, and on a busy machine two
# threads made them 10-100x slower: one thread for every test.
torch.set_num_threads(1)

TINY_OVERRIDES = ["backbone=tiny", "features.num_steps=5", "features.save_steps=[4,2,0]"]


def data_dir(name: str) -> Path:
    """A real data subset below the data root, or skip the test saying what is missing."""
    path = DATA_ROOT / name
    if not path.exists():
        pytest.skip(f"real data {name!r} not found at {path} (set HYPERFEAT_DATA_ROOT to the data folder)")
    return path


@pytest.fixture(scope="session")
def tiny_cfg():
    return load_config(overrides=TINY_OVERRIDES)


@pytest.fixture(scope="session")
def tiny_backbone(tiny_cfg):
    from hyperfeat.model.backbone import load_backbone

    return load_backbone(tiny_cfg)
