"""Shared fixtures: tiny random backbones (built offline), tiny checkpoints, and the real data
folder. Plain helpers (``data_dir``, ``DATA_ROOT``, ``TINY_OVERRIDES``) are in ``tests/helpers.py``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional, Sequence

import pytest
import torch

from hyperfeat.config import load_config
from tests.helpers import DATA_ROOT, TINY_OVERRIDES, data_dir  # noqa: F401  (re-exported)

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The tiny models are too small for intra-op threads to pay off, and on a busy machine two
# threads made them 10-100x slower: one thread for every test.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_cfg():
    return load_config(overrides=TINY_OVERRIDES)


@pytest.fixture(scope="session")
def tiny_backbone(tiny_cfg):
    from hyperfeat.model.backbone import load_backbone

    return load_backbone(tiny_cfg)


@pytest.fixture(scope="session")
def make_tiny_checkpoint(tmp_path_factory, tiny_backbone) -> Callable[..., Path]:
    """``make_tiny_checkpoint(path=None, seed=0, randomise_mixing=False, overrides=TINY_OVERRIDES)``
    writes an untrained tiny aggregation checkpoint (:func:`hyperfeat.testing.write_tiny_checkpoint`:
    the network built right after ``torch.manual_seed(seed)``, mixing weights then drawn from
    N(0, 1) when ``randomise_mixing``) and returns its path. Without ``path`` the file goes to a
    session folder and is written once per argument set; checkpoints are only ever read, so the
    test files share it."""
    from hyperfeat.testing import write_tiny_checkpoint

    made: dict[tuple, Path] = {}

    def make(
        path: Optional[os.PathLike] = None,
        seed: int = 0,
        randomise_mixing: bool = False,
        overrides: Sequence[str] = TINY_OVERRIDES,
    ) -> Path:
        key = (seed, randomise_mixing, tuple(overrides))
        if path is None and key in made:
            return made[key]
        # every preset in these tests is the tiny model: the session backbone gives the channels
        target = path if path is not None else tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
        written = write_tiny_checkpoint(
            target, overrides=overrides, seed=seed, randomise_mixing=randomise_mixing, backbone=tiny_backbone
        )
        if path is None:
            made[key] = written
        return written

    return make


@pytest.fixture(scope="module")
def checkpoint(make_tiny_checkpoint) -> Path:
    """An untrained tiny checkpoint of the one-step plan (built after manual_seed(0)): the video tests' model."""
    from tests.helpers import ONE_STEP_OVERRIDES

    return make_tiny_checkpoint(overrides=ONE_STEP_OVERRIDES)


@pytest.fixture(scope="module")
def parts():
    """(cfg, backbone, network, channels) of the one-step tiny plan with an untrained network."""
    from tests.helpers import make_parts

    return make_parts()
