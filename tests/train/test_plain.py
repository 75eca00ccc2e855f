"""Plain ``python train.py`` and the full-release presets: the paper's setting when SPair-71k is
under the data root, else one message saying what to get and where to put it."""

from __future__ import annotations

import pytest

from hyperfeat.cli.train import PAPER_EXPERIMENT, plain_train_overrides
from hyperfeat.config import load_config
from hyperfeat.errors import ConfigError
from tests.helpers import data_dir


def fake_release(root):
    """SPair-71k/ in the release layout, built from the shared 6-pair subset (links) plus empty val lists."""
    native = data_dir("spair_native")
    release = root / "SPair-71k"
    release.mkdir(parents=True)
    for name in ("JPEGImages", "ImageAnnotation"):
        (release / name).symlink_to(native / name)
    (release / "PairAnnotation").mkdir()
    for split in ("trn", "val", "test"):
        source = native / "PairAnnotation" / split
        (release / "PairAnnotation" / split).symlink_to(source) if source.is_dir() else (
            release / "PairAnnotation" / split
        ).mkdir()
    (release / "Layout" / "large").mkdir(parents=True)
    for split in ("trn", "val", "test"):
        source = native / "Layout" / "large" / f"{split}.txt"
        (release / "Layout" / "large" / f"{split}.txt").write_text(source.read_text() if source.is_file() else "")
    return release


def test_plain_train_without_the_release_says_what_to_download(tmp_path):
    with pytest.raises(ConfigError) as err:
        plain_train_overrides(str(tmp_path))
    message = str(err.value)
    assert "\n" not in message and "SPair-71k.tar.gz" in message and str(tmp_path) in message
    assert "experiment=smoke" in message and "PairAnnotation/trn" in message


def test_plain_train_with_the_release_trains_the_paper_setting(tmp_path):
    fake_release(tmp_path)
    overrides = plain_train_overrides(str(tmp_path))
    assert overrides == [f"experiment={PAPER_EXPERIMENT}"]
    cfg = load_config(overrides=overrides + [f"paths.data_root={tmp_path}"])
    assert cfg.backbone.model == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert (cfg.features.num_steps, list(cfg.features.save_steps)) == (50, [49, 45, 40, 35, 30, 25, 20, 15, 10, 5, 0])
    assert (cfg.data.format, cfg.data.train_split, cfg.data.val_split, cfg.data.test_split) == (
        "native",
        "trn",
        "val",
        "test",
    )
    assert (cfg.train.max_steps, cfg.train.pairs_per_step, cfg.train.val_max_pairs) == (5000, 1, 360)


def test_spair_full_reads_the_release_layout(tmp_path):
    from hyperfeat.data.pairs import build_pair_dataset

    fake_release(tmp_path)
    cfg = load_config(overrides=["data=spair_full", f"paths.data_root={tmp_path}"])
    test = build_pair_dataset(cfg.data, "test", 64)
    assert len(test) == 6 and len({r.category for r in test.records}) == 6
    item = test[0]
    assert item["source_image"].shape == (3, 64, 64) and item["valid"].any()
