"""Loading the frozen parts through diffusers' real from_pretrained path, on a tiny model."""

import pytest
import torch

from hyperfeat.config import load_config
from hyperfeat.errors import BackboneError
from hyperfeat.model.backbone import load_backbone
from hyperfeat.model.tiny import build_tiny_components, save_tiny_pipeline


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return save_tiny_pipeline(tmp_path_factory.mktemp("sd") / "tiny-sd", seed=3)


def test_folder_has_sd_layout(tiny_folder):
    for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "model_index.json"):
        assert (tiny_folder / name).exists(), name


def test_local_folder_loads_same_weights_frozen(tiny_folder):
    cfg = load_config(overrides=[f"backbone.model={tiny_folder}", "backbone.device=cpu", "backbone.dtype=float32"])
    backbone = load_backbone(cfg)
    unet, vae, text_encoder, _ = build_tiny_components(seed=3)
    for ours, theirs in ((backbone.unet, unet), (backbone.vae, vae), (backbone.text_encoder, text_encoder)):
        for (name, p), (_, q) in zip(ours.state_dict().items(), theirs.state_dict().items()):
            assert torch.equal(p, q), name
        assert not any(p.requires_grad for p in ours.parameters())
        assert not ours.training
    assert backbone.latent_scale == pytest.approx(0.18215)
    ids = backbone.tokenizer("a cat", padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert ids.shape == (1, 77)


def test_dtype_from_config(tiny_folder):
    cfg = load_config(overrides=[f"backbone.model={tiny_folder}", "backbone.device=cpu", "backbone.dtype=bfloat16"])
    backbone = load_backbone(cfg)
    assert next(backbone.unet.parameters()).dtype == torch.bfloat16
    assert backbone.dtype == torch.bfloat16


def test_tiny_seed_changes_weights():
    a = build_tiny_components(seed=0)[0]
    b = build_tiny_components(seed=1)[0]
    assert not torch.equal(a.conv_in.weight, b.conv_in.weight)


def test_missing_folder_is_a_clear_error(tmp_path):
    cfg = load_config(overrides=[f"backbone.model={tmp_path / 'nowhere'}"])
    with pytest.raises(BackboneError, match="not found"):
        load_backbone(cfg)


def test_folder_without_sd_layout_names_missing_parts(tmp_path):
    (tmp_path / "unet").mkdir()
    cfg = load_config(overrides=[f"backbone.model={tmp_path}"])
    with pytest.raises(BackboneError, match="vae/"):
        load_backbone(cfg)


def test_unreachable_hub_id_says_how_to_get_it(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = load_config(overrides=["backbone.model=someone/not-a-cached-model", "backbone.local_files_only=true"])
    with pytest.raises(BackboneError) as info:
        load_backbone(cfg)
    message = str(info.value)
    assert "someone/not-a-cached-model" in message and "backbone=tiny" in message and "local" in message
