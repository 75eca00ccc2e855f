"""A first training run is quiet: no Lightning tips or accelerator banner, no "checkpoint
directory is not empty" for a folder holding only .gitkeep, no third-party deprecation noise,
and the wandb run folder named at the end."""

from __future__ import annotations

import logging
import warnings

import pytest

from hyperfeat.quiet import quiet_third_party
from hyperfeat.train.trainer import train
from tests.train.test_training import QUIET, small_cfg

NOISE = ("💡 Tip", "GPU available: ", "TPU available: ", "anonymous setting", "LeafSpec", "exists and is not empty")


def test_first_run_is_quiet_and_names_the_wandb_folder(tmp_path, tiny_backbone, capfd, caplog, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / ".gitkeep").touch()  # what a fresh clone has
    cfg = small_cfg(tmp_path, "train.max_steps=2", "logger.backend=wandb", "logger.wandb_mode=offline")
    caplog.set_level(logging.INFO)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg, backbone=tiny_backbone, **QUIET)
    out, err = capfd.readouterr()
    said = out + err + "\n".join(r.getMessage() for r in caplog.records) + "\n".join(str(w.message) for w in caught)
    for noise in NOISE:
        assert noise not in said, noise
    run = next((tmp_path / "out" / "wandb").glob("offline-run-*"))
    assert f"wandb run: {run} (upload with `wandb sync {run}`)" in out


def test_quiet_filters_only_third_party_noise(caplog):
    from lightning.pytorch.utilities.rank_zero import rank_zero_info

    quiet_third_party()
    caplog.set_level(logging.INFO)
    rank_zero_info("💡 Tip: install something")
    rank_zero_info("GPU available: False, used: False")
    rank_zero_info("a line that matters")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["a line that matters"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_third_party()
        warnings.warn_explicit("old API", DeprecationWarning, "x.py", 1, module="diffusers.models")
        warnings.warn_explicit("old API", DeprecationWarning, "x.py", 1, module="hyperfeat.data")
        warnings.warn("feature cache file is stale", UserWarning)
    assert [str(w.message) for w in caught] == ["old API", "feature cache file is stale"]
