"""Hedlin et al.'s matcher on the tiny backbone: the attention processors change nothing and are
restored, the optimisation lowers the attention loss on a real image, and on the image and its
known shift the matched points move towards the truth (measured: mean error 65 → 22 px at
128 px on car(G) with 4 points and the tiny preset's 20 steps; the test allows 0.7× of the start)."""

import pytest
import torch

from hyperfeat.config import load_config
from hyperfeat.describe.ldm import LdmMatcher, capture_cross_attention
from hyperfeat.errors import ConfigError
from hyperfeat.images import load_batch
from tests.helpers import data_dir

SHIFT = 12


@pytest.fixture(scope="module")
def matcher(tiny_backbone):
    return LdmMatcher(load_config(overrides=["backbone=tiny"]), tiny_backbone)


@pytest.fixture(scope="module")
def image():
    path = sorted((data_dir("pf_willow") / "PF-dataset-WILLOW" / "car(G)").glob("*.png"))[0]
    batch, _ = load_batch([path], 128)
    return batch[0]  # (3, 128, 128) in [-1, 1]


def test_capture_processors_keep_the_output_and_are_restored(tiny_backbone, matcher):
    unet = tiny_backbone.unet
    before = dict(unet.attn_processors)
    g = torch.Generator().manual_seed(0)
    x, cond = torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 77, 32, generator=g)
    t = torch.full((2,), 40.0)
    with torch.no_grad():
        plain = unet(x, t, encoder_hidden_states=cond).sample
        with capture_cross_attention(unet, matcher.names, stop=False) as store:
            captured = unet(x, t, encoder_hidden_states=cond).sample
    assert torch.allclose(plain, captured, atol=1e-5)
    assert set(store.maps) == set(matcher.names)
    probs = store.maps[matcher.names[0]]  # (B, heads, N, 77): rows are distributions over tokens
    assert probs.shape[-1] == 77 and torch.allclose(probs.sum(-1), torch.ones(()), atol=1e-5)
    assert all(type(unet.attn_processors[k]) is type(v) for k, v in before.items())


def test_optimisation_lowers_the_loss_and_moves_the_match_to_the_truth(matcher, image):
    points = torch.tensor([[40.0, 50.0], [70.0, 60.0], [60.0, 90.0], [90.0, 40.0]])
    target = torch.roll(image, shifts=(SHIFT, SHIFT), dims=(1, 2))  # the known warp: +12 px in x and y
    truth = points + SHIFT
    start = dict(matcher.stats)
    initial, _ = matcher.optimize(image, points, steps=0)
    final, history = matcher.optimize(image, points)
    assert len(history) == 20
    assert matcher.evaluate_loss(image, points, final) < matcher.evaluate_loss(image, points, initial)
    err0 = (matcher.match(image, target, points, embeddings=initial) - truth).norm(dim=1).mean()
    err1 = (matcher.match(image, target, points, embeddings=final) - truth).norm(dim=1).mean()
    assert err1 < 0.7 * err0, (float(err0), float(err1))
    assert matcher.stats["unet_forward_backward"] - start["unet_forward_backward"] == 20 * 4  # steps × points × K=1


def test_bad_layers_list_the_valid_ones(tiny_backbone):
    cfg = load_config(overrides=["backbone=tiny", "ldm.layers=[[0,0]]"])
    with pytest.raises(ConfigError, match=r"valid \[i, j\] .*\[\[1, 0\], \[1, 1\]"):
        LdmMatcher(cfg, tiny_backbone)
    with pytest.raises(ConfigError, match=r"\[0, 999\]"):
        load_config(overrides=["backbone=tiny", "ldm.inference_timestep=1000"])
