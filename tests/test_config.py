"""Config composition: presets, overrides and clear errors."""

import pytest

from hyperfeat.config import load_config, preset_names
from hyperfeat.errors import ConfigError


def test_defaults_are_paper_faithful():
    cfg = load_config()
    assert cfg.backbone.model == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert cfg.features.mode == "inversion" and cfg.features.num_steps == 50
    assert list(cfg.features.save_steps) == [49, 45, 40, 35, 30, 25, 20, 15, 10, 5, 0]
    assert cfg.features.layers == "all" and cfg.features.output_resolution == 64
    assert cfg.features.image_size == 512 and cfg.features.prompt == ""
    assert cfg.aggregation.projection_dim == 384 and cfg.aggregation.temperature == pytest.approx(0.07)
    assert cfg.train.lr == pytest.approx(1e-3) and cfg.train.weight_decay == 0


def test_presets_and_overrides():
    cfg = load_config(overrides=["backbone=sd21base", "features.num_steps=1", "features.save_steps=[0]"])
    assert cfg.backbone.model == "stabilityai/stable-diffusion-2-1-base" and cfg.features.image_size == 512
    assert list(cfg.features.save_steps) == [0]
    assert {"sd15", "sd21base", "sd21", "tiny"} <= set(preset_names("backbone"))
    # DIFT's backbone: SD 2.1 itself, 768 px, v-prediction (so no inversion plan reading ε)
    cfg = load_config(overrides=["backbone=sd21"])
    assert cfg.backbone.model == "stabilityai/stable-diffusion-2-1"
    assert (cfg.features.image_size, cfg.dift.image_size, cfg.features.mode) == (768, 768, "noise")
    assert load_config(overrides=["experiment=sd21_spair"]).backbone.model == "stabilityai/stable-diffusion-2-1-base"


def test_unknown_key_lists_valid_ones():
    with pytest.raises(ConfigError) as info:
        load_config(overrides=["features.num_stepz=3"])
    message = str(info.value)
    assert "features.num_stepz" in message and "num_steps" in message and "save_steps" in message


def test_unknown_top_level_key_and_preset():
    with pytest.raises(ConfigError, match="valid keys under the top level"):
        load_config(overrides=["featurez.mode=noise"])
    with pytest.raises(ConfigError, match="sd15"):
        load_config(overrides=["backbone=sd3"])


def test_bad_values_are_named():
    with pytest.raises(ConfigError, match="save_steps"):
        load_config(overrides=["features.num_steps=10", "features.save_steps=[12]"])
    with pytest.raises(ConfigError, match="features.mode"):
        load_config(overrides=["features.mode=magic"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(overrides=["features.mode"])


def test_config_file_is_checked(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("features:\n  num_steps: 1\n  save_steps: [0]\n")
    assert load_config(good).features.num_steps == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("features:\n  steps: 1\n")
    with pytest.raises(ConfigError, match=r"features.steps.*bad.yaml"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_generation_mode_is_refused_at_load_with_the_valid_modes():
    with pytest.raises(ConfigError, match=r"features.mode=generation .*valid modes: inversion, noise"):
        load_config(overrides=["features.mode=generation"])
    with pytest.raises(ConfigError, match=r"inversion or noise; got 'warp'"):
        load_config(overrides=["features.mode=warp"])
