"""The classical backbone: a weight-free filter bank in the shape of the diffusion feature bank."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hyperfeat.config import load_config
from hyperfeat.errors import ConfigError
from hyperfeat.model.backbone import load_backbone
from hyperfeat.model.checkpoint import build_network, load_checkpoint
from hyperfeat.model.classical import ClassicalSettings, box_pool, shift
from hyperfeat.model.features import FeatureExtractor
from hyperfeat.model.identity import feature_identity
from tests.helpers import scene

OVERRIDES = [
    "backbone=classical",
    "features.load_size=64",
    "features.image_size=64",
    "features.output_resolution=16",
    "backbone.classical.strides=[16,8,4,2]",
]


@pytest.fixture(scope="module")
def cfg():
    return load_config(overrides=OVERRIDES)


@pytest.fixture(scope="module")
def extractor(cfg):
    return FeatureExtractor(load_backbone(cfg), cfg.features)


def images(n: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) in [-1, 1]: crops of the test scene."""
    pics = [
        torch.from_numpy(scene((size + 16, size + 16), seed=seed + k)).permute(2, 0, 1)[:, :size, :size]
        for k in range(n)
    ]
    return torch.stack(pics).float() / 127.5 - 1


def test_deterministic_across_runs_and_fresh_backbones(cfg, extractor):
    x = images()
    first = extractor.run(x)
    again = FeatureExtractor(load_backbone(cfg), cfg.features).run(x)
    assert torch.equal(first, again)
    assert torch.isfinite(first).all() and first.abs().amax() > 0
    # an image's maps do not depend on the batch it is in
    assert torch.allclose(extractor.run(x[1:]), first[1:], atol=1e-4)


def test_layers_match_the_configured_channels_and_grids(cfg, extractor):
    channels = list(cfg.backbone.classical.channels)
    strides = list(cfg.backbone.classical.strides)
    assert extractor.channels == channels and len(extractor.layers) == 3 * len(strides)
    native = extractor.run_native(images(1))
    size = int(cfg.features.image_size)
    for (i, j), maps, c in zip(extractor.layers, native, channels):
        assert maps.shape == (1, len(cfg.features.save_steps), c, size // strides[i], size // strides[i]), (i, j)
        # every layer is normalised per location: at most unit length, near it where there is signal
        norms = maps.norm(dim=2)
        assert norms.max() <= 1 + 1e-5 and norms.median() > 0.9, (i, j)


def test_stated_channels_must_match_what_the_settings_make():
    with pytest.raises(ConfigError, match="do not match"):
        load_backbone(load_config(overrides=["backbone=classical", "backbone.classical.orientations=6"]))
    s = ClassicalSettings(orientations=6)
    assert s.layer_channels()[2] == 24  # 2×2 cells × 6 orientations


def test_bank_shape_is_what_the_aggregation_network_takes(cfg, extractor):
    raw = extractor.run(images())
    s, c, r = len(cfg.features.save_steps), sum(cfg.backbone.classical.channels), int(cfg.features.output_resolution)
    assert raw.shape == (2, s, c, r, r)
    network = build_network(cfg, extractor.channels)
    out = network(raw)
    assert out.shape == (2, int(cfg.aggregation.projection_dim), r, r)
    # the streaming path (each map as it is made) gives the store-all result
    from hyperfeat.model.aggregation import StreamingAggregator

    streaming = StreamingAggregator(network)
    extractor.run(images(), consumer=streaming.add)
    assert torch.allclose(streaming.result(), out, atol=1e-5)


def test_identity_is_its_own_and_follows_its_settings():
    classical = feature_identity(load_config(overrides=["backbone=classical"]))
    tiny = feature_identity(load_config(overrides=["backbone=tiny"]))
    sd = feature_identity(load_config(overrides=["backbone=sd15"]))
    assert classical != tiny and classical != sd
    assert classical["backbone"]["model_id"] == "classical"
    blurred = feature_identity(load_config(overrides=["backbone=classical", "backbone.classical.blur=3.0"]))
    assert blurred != classical
    # the other backbones' identities (cache keys) did not gain the classical settings
    assert "classical" not in tiny["backbone"] and "classical" not in sd["backbone"]


def test_timesteps_are_blur_levels(cfg, extractor):
    unet = extractor.backbone.unet
    sigmas = [unet.blur_sigma(t) for t in (-1, 0, 250, 500, 999)]
    assert sigmas[0] == 0 and all(a < b for a, b in zip(sigmas, sigmas[1:]))
    assert sigmas[-1] == pytest.approx(float(cfg.backbone.classical.blur), rel=0.01)
    raw = extractor.run_native(images(1))[-3][0]  # the finest jet layer (S, 12, h, w), timesteps in save order
    labels = list(cfg.features.save_steps)  # the largest label is t = -1 (sharp), label 0 the most blurred
    sharp, blurred = raw[labels.index(max(labels))], raw[labels.index(min(labels))]

    def roughness(m):  # mean difference between neighbouring cells
        return (m[:, 1:] - m[:, :-1]).abs().mean() + (m[:, :, 1:] - m[:, :, :-1]).abs().mean()

    assert roughness(blurred) < 0.8 * roughness(sharp)


def test_inversion_and_noise_plans_see_the_same_clean_image():
    """With zero predicted noise the inversion keeps x_t = √ᾱ·x0, which the bank undoes: the
    noise plan at the same labels differs only by its noise, which the blur damps."""
    base = OVERRIDES + ["features.num_steps=4", "features.save_steps=[3,1,0]"]
    inv_cfg, noise_cfg = load_config(overrides=base), load_config(overrides=base + ["features.mode=noise"])
    backbone = load_backbone(inv_cfg)
    x = images(1)
    inv = FeatureExtractor(backbone, inv_cfg.features).run(x)
    noisy = FeatureExtractor(backbone, noise_cfg.features).run(x)
    assert torch.allclose(inv[:, 0], noisy[:, 0], atol=1e-5)  # label 3: t = -1, no noise either way
    assert not torch.allclose(inv[:, 2], noisy[:, 2], atol=1e-3)
    assert F.cosine_similarity(inv[:, 2], noisy[:, 2], dim=1).mean() > 0.5


def test_descriptors_follow_content_not_position(cfg):
    """A shifted crop of the same scene: each cell's nearest raw descriptor in the other crop is
    the cell showing the same content (the random tiny UNet's maps fail this)."""
    cfg = load_config(overrides=["backbone=classical"])  # the preset: 128 px, 32² maps
    extractor = FeatureExtractor(load_backbone(cfg), cfg.features)
    big = torch.from_numpy(scene((192, 192), seed=3)).permute(2, 0, 1).float() / 127.5 - 1
    offset = 16  # pixels = 4 cells of 4 px
    a, b = big[:, :128, :128], big[:, offset : offset + 128, offset : offset + 128]
    raw = extractor.run(torch.stack([a, b]))  # (2, S, C, 32, 32)
    desc = F.normalize(raw.flatten(1, 2), dim=1).flatten(2)  # (2, S·C, 1024)
    cells = torch.arange(32 * 32).view(32, 32)[8:24, 8:24].flatten()  # interior cells of b
    sim = desc[0].T @ desc[1][:, cells]  # (1024, n): cells of a vs chosen cells of b
    best = sim.argmax(0)
    expected = cells + (offset // 4) * 32 + offset // 4  # same content in a: 4 rows and 4 columns further
    assert (best == expected).float().mean() > 0.8


def test_pooling_helpers():
    x = torch.rand(2, 3, 20, 24, dtype=torch.float64)
    for size in (2, 3, 8):
        half = size // 2
        reference = F.avg_pool2d(F.pad(x, (half,) * 4, mode="replicate"), 2 * half + 1, stride=1)
        assert torch.allclose(box_pool(x, size), reference)
    moved = shift(x, 2, -3)
    assert torch.equal(moved[..., 5, 7], x[..., 7, 4])
    assert torch.equal(moved[..., -1, 0], x[..., -1, 0])  # borders replicated


def test_smoke_training_runs_and_its_checkpoint_loads(tmp_path, monkeypatch):
    """``python train.py experiment=smoke backbone=classical`` (shortened) trains and writes a
    checkpoint whose network loads for the classical bank; ``eval.py`` evaluates it."""
    from hyperfeat.cli import main
    from tests.helpers import data_dir

    data_dir("spair_dhf")
    monkeypatch.chdir(tmp_path)
    common = [f"paths.output_dir={tmp_path / 'out'}", "logger.backend=none"]
    assert main(
        [
            "train",
            "experiment=smoke",
            "backbone=classical",
            f"paths.checkpoint_dir={tmp_path / 'ckpt'}",
            "train.max_steps=4",
            "train.val_every_n_steps=4",
            "data.pairs_per_image=2",
            "train.val_max_pairs=4",
            *common,
        ]
    ) in (0, None)
    ckpt = tmp_path / "ckpt" / "last.ckpt"
    network, meta = load_checkpoint(ckpt)
    assert meta.config.backbone.model == "classical" and list(meta.feature_dims) == list(
        load_config(overrides=["backbone=classical"]).backbone.classical.channels
    )
    assert main(["eval", "--checkpoint", str(ckpt), "data=pf_willow", "data.max_pairs=10", *common]) in (0, None)
    assert math.isfinite(float(network.mixing_weights.sum()))
