"""features.ensemble_size: noise-mode raw maps averaged over noise draws, member k seeded seed + 1 + k."""

import torch
from omegaconf import OmegaConf

from hyperfeat.config import load_config
from hyperfeat.model.features import FeatureExtractor
from hyperfeat.model.identity import feature_identity

NOISE = ["backbone=tiny", "features.mode=noise", "features.num_steps=5", "features.save_steps=[4,2,0]"]


def extractor(backbone, **changes):
    f = OmegaConf.to_container(load_config(overrides=NOISE).features)
    f.update(changes)
    return FeatureExtractor(backbone, OmegaConf.create(f))


def test_ensemble_is_the_mean_of_single_draws(tiny_backbone):
    images = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0)) * 2 - 1
    one = extractor(tiny_backbone).run(images)
    # the tiny preset encodes the posterior mean, so only the noise depends on the seed
    shifted = extractor(tiny_backbone, seed=1).run(images)  # its noise generator is seed 2 = member 1's
    two = extractor(tiny_backbone, ensemble_size=2).run(images)
    assert torch.allclose(two, (one + shifted) / 2, atol=1e-5)
    assert not torch.allclose(two, one, atol=1e-3)
    streamed = {}
    extractor(tiny_backbone, ensemble_size=2).run(images, consumer=lambda s, l, m: streamed.__setitem__((s, l), m))
    assert len(streamed) == 3 * 12
    assert torch.allclose(streamed[(1, 0)], two[:, 1, :64], atol=1e-5)


def test_one_draw_keeps_the_cache_identity():
    cfg = load_config(overrides=NOISE)
    assert "ensemble_size" not in feature_identity(cfg)["features"]
    cfg2 = load_config(overrides=NOISE + ["features.ensemble_size=2"])
    assert feature_identity(cfg2)["features"]["ensemble_size"] == 2
