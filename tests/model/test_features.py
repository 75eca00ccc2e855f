"""The feature bank and extractor against an independent computation on a tiny random UNet.

The reference is written out here by hand: the UNet is called directly at the expected
timesteps, the DDIM update is spelled out, and each kept map is recovered from the *block*
output as output·output_scale_factor − shortcut(input), i.e. without hooking conv2. A hook on
the block output, an off-by-one timestep, a wrong resize or a wrong layer order fails these.
"""

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from hyperfeat.model.features import FeatureBank, FeatureExtractor, all_layers

N_STEPS = 5
SAVE = [4, 2, 0]


def features_cfg(tiny_cfg, **changes):
    cfg = OmegaConf.to_container(tiny_cfg.features)
    cfg.update(changes)
    return OmegaConf.create(cfg)


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 96, 96, generator=g) * 2 - 1


def residual_branches(unet, layers):
    """Capture each block's residual branch from its input and output (not from conv2)."""
    captured = {}
    handles = []
    for index, (i, j) in enumerate(layers):
        block = unet.up_blocks[i].resnets[j]

        def hook(module, inputs, output, index=index):
            x = inputs[0]
            shortcut = module.conv_shortcut(x) if module.conv_shortcut is not None else x
            captured[index] = output * module.output_scale_factor - shortcut

        handles.append(block.register_forward_hook(hook))
    return captured, handles


def hand_inversion(backbone, latents, num_steps, labels, resolution, t_shift=0):
    """Reference inversion, written out: returns {label: [map per layer]} resized."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    alphas = torch.cumprod(1 - betas, 0)
    seq = list(range(0, 1000, 1000 // num_steps))
    seq_next = [-1] + seq[:-1]
    cond = backbone.text_encoder(
        backbone.tokenizer("", padding="max_length", max_length=77, return_tensors="pt").input_ids
    ).last_hidden_state.expand(latents.shape[0], -1, -1)
    layers = all_layers(backbone.unet)
    kept = {}
    x = latents
    for i in range(num_steps):
        t = seq_next[i]
        captured, handles = residual_branches(backbone.unet, layers)
        try:
            eps = backbone.unet(x, torch.full((x.shape[0],), float(t + t_shift)), encoder_hidden_states=cond).sample
        finally:
            for h in handles:
                h.remove()
        label = num_steps - 1 - i
        if label in labels:
            kept[label] = [
                F.interpolate(captured[k], size=resolution, mode="bilinear", align_corners=False)
                for k in range(len(layers))
            ]
        a = torch.tensor(1.0) if t < 0 else alphas[t]
        a_next = alphas[seq[i]]
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        x = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
    return kept


def stack(kept, labels):
    return torch.stack([torch.cat(kept[label], dim=1) for label in labels], dim=1)


@torch.no_grad()
def test_inversion_maps_match_hand_computation(tiny_backbone, tiny_cfg, images):
    fcfg = features_cfg(tiny_cfg, latent="mean")
    extractor = FeatureExtractor(tiny_backbone, fcfg)
    raw = extractor.run(images)
    R = fcfg.output_resolution
    assert raw.shape == (2, len(SAVE), extractor.total_channels, R, R)
    assert raw.dtype == torch.float32

    resized = F.interpolate(images, size=(fcfg.image_size,) * 2, mode="bilinear", align_corners=False)
    latents = tiny_backbone.vae.encode(resized).latent_dist.mean * 0.18215
    expected = stack(hand_inversion(tiny_backbone, latents, N_STEPS, SAVE, R), SAVE)
    torch.testing.assert_close(raw, expected, rtol=1e-4, atol=1e-5)

    # the comparison is sensitive: one timestep off gives other maps
    shifted = stack(hand_inversion(tiny_backbone, latents, N_STEPS, SAVE, R, t_shift=1), SAVE)
    assert (shifted - expected).abs().max() > 1e-3


@torch.no_grad()
def test_kept_map_is_conv2_output_not_block_output(tiny_backbone, tiny_cfg, images):
    """The bank keeps the residual branch; the block output (with shortcut) differs."""
    unet = tiny_backbone.unet
    layers = all_layers(unet)
    block_out = {}
    handles = [
        unet.up_blocks[i].resnets[j].register_forward_hook(lambda m, inp, out, k=k: block_out.__setitem__(k, out))
        for k, (i, j) in enumerate(layers)
    ]
    x = torch.randn(1, 4, 16, 16)
    cond = tiny_backbone.encode_prompt("")
    try:
        kept_maps: dict[int, dict[int, torch.Tensor]] = {}
        keep = lambda label, layer, fmap: kept_maps.setdefault(label, {}).__setitem__(layer, fmap)  # noqa: E731
        with FeatureBank(unet, layers, 16, keep) as bank:
            bank.active_labels = [0]
            unet(x, torch.tensor([10.0]), encoder_hidden_states=cond)
    finally:
        for h in handles:
            h.remove()
    for k, (i, j) in enumerate(layers):
        block = unet.up_blocks[i].resnets[j]
        kept = kept_maps[0][k]
        assert kept.shape[1] == block.conv2.out_channels
        out = F.interpolate(block_out[k], size=16, mode="bilinear", align_corners=False)
        assert (kept - out).abs().max() > 1e-4, f"layer {(i, j)}: kept map equals the block output"


@torch.no_grad()
def test_sampled_latent_uses_seeded_generator(tiny_backbone, tiny_cfg, images):
    fcfg = features_cfg(tiny_cfg, latent="sample", seed=7)
    extractor = FeatureExtractor(tiny_backbone, fcfg)
    resized = F.interpolate(images[:1], size=(fcfg.image_size,) * 2, mode="bilinear", align_corners=False)
    posterior = tiny_backbone.vae.encode(resized).latent_dist
    expected = posterior.sample(generator=torch.Generator().manual_seed(7)) * 0.18215
    torch.testing.assert_close(extractor.encode(images[:1]), expected)
    # an image's draw does not depend on its place in the batch
    both = extractor.encode(images.flip(0))
    torch.testing.assert_close(both[1:], expected)
    assert (extractor.encode(images[:1]) - posterior.mean * 0.18215).abs().max() > 1e-4


@torch.no_grad()
def test_resize_to_output_is_bilinear_without_align_corners(tiny_backbone, tiny_cfg, images):
    fcfg = features_cfg(tiny_cfg, latent="mean", num_steps=1, save_steps=[0], output_resolution=24)
    raw = FeatureExtractor(tiny_backbone, fcfg).run(images)
    latent_size = tiny_cfg.features.image_size // 8
    fcfg_native = features_cfg(tiny_cfg, latent="mean", num_steps=1, save_steps=[0], output_resolution=latent_size)
    extractor = FeatureExtractor(tiny_backbone, fcfg_native)
    # up_blocks[3] runs at the latent size, so at that resolution the kept map is the map
    # itself: resizing it to 24 by hand must give the extractor's map at 24, and
    # align_corners=True must not
    layer = extractor.layers.index((3, 0))
    start = sum(extractor.channels[:layer])
    end = start + extractor.channels[layer]
    native = extractor.run(images)[:, 0, start:end]  # (B, C, h, w) at the latent size
    ours = raw[:, 0, start:end]
    torch.testing.assert_close(ours, F.interpolate(native, size=24, mode="bilinear", align_corners=False))
    assert (ours - F.interpolate(native, size=24, mode="bilinear", align_corners=True)).abs().max() > 1e-4


@torch.no_grad()
def test_noise_mode_batches_all_timesteps(tiny_backbone, tiny_cfg, images):
    fcfg = features_cfg(tiny_cfg, mode="noise", latent="mean", seed=3)
    extractor = FeatureExtractor(tiny_backbone, fcfg)
    raw = extractor.run(images)
    latents = extractor.encode(images)
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    alphas = torch.cumprod(1 - betas, 0)
    seq_next = [-1, 0, 200, 400, 600]  # N=5: seq 0,200,...,800; label k ↦ seq_next[4 - k]
    layers = all_layers(tiny_backbone.unet)
    noise = torch.stack([torch.randn(latents.shape[1:], generator=torch.Generator().manual_seed(4)) for _ in range(2)])
    cond = tiny_backbone.encode_prompt("", 2)
    for s, label in enumerate(SAVE):
        t = seq_next[N_STEPS - 1 - label]
        a = torch.tensor(1.0) if t < 0 else alphas[t]
        x_t = a.sqrt() * latents + (1 - a).sqrt() * noise
        captured, handles = residual_branches(tiny_backbone.unet, layers)
        tiny_backbone.unet(x_t, torch.full((2,), float(t)), encoder_hidden_states=cond)
        for h in handles:
            h.remove()
        expected = torch.cat(
            [
                F.interpolate(captured[k], size=fcfg.output_resolution, mode="bilinear", align_corners=False)
                for k in range(len(layers))
            ],
            dim=1,
        )
        torch.testing.assert_close(raw[:, s], expected, rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_layer_subset_and_order(tiny_backbone, tiny_cfg, images):
    full = FeatureExtractor(tiny_backbone, features_cfg(tiny_cfg, latent="mean")).run(images[:1])
    subset = [[3, 2], [0, 1]]
    extractor = FeatureExtractor(tiny_backbone, features_cfg(tiny_cfg, latent="mean", layers=subset))
    raw = extractor.run(images[:1])
    all_ch = FeatureExtractor(tiny_backbone, features_cfg(tiny_cfg)).channels
    offsets = [sum(all_ch[:k]) for k in range(12)]
    k32, k01 = 3 * 3 + 2, 1
    expected = torch.cat(
        [full[:, :, offsets[k32] : offsets[k32] + all_ch[k32]], full[:, :, offsets[k01] : offsets[k01] + all_ch[k01]]],
        dim=2,
    )
    torch.testing.assert_close(raw, expected)


def test_hooks_removed_after_an_exception(tiny_backbone, tiny_cfg, images):
    extractor = FeatureExtractor(tiny_backbone, features_cfg(tiny_cfg))

    def failing_consumer(*args):
        raise RuntimeError("consumer failed")

    with pytest.raises(RuntimeError, match="consumer failed"):
        extractor.run(images[:1], consumer=failing_consumer)
    for i, j in all_layers(tiny_backbone.unet):
        assert not tiny_backbone.unet.up_blocks[i].resnets[j].conv2._forward_hooks


def test_generation_mode_returns_maps_and_images(tiny_backbone, tiny_cfg):
    fcfg = features_cfg(tiny_cfg, mode="generation", image_size=64, output_resolution=8, guidance_scale=2.0)
    raw, pictures = FeatureExtractor(tiny_backbone, fcfg).generate(2, prompt="a cat")
    assert raw.shape[:2] == (2, len(SAVE)) and raw.shape[-1] == 8
    assert pictures.shape == (2, 3, 64, 64)
    assert 0 <= pictures.min() and pictures.max() <= 1


def test_text_condition_is_padded_empty_prompt(tiny_backbone):
    cond = tiny_backbone.encode_prompt("", 3)
    ids = tiny_backbone.tokenizer("", padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert ids.shape == (1, 77)
    expected = tiny_backbone.text_encoder(ids).last_hidden_state
    assert cond.shape == (3, 77, expected.shape[-1])
    torch.testing.assert_close(cond[2:], expected)


def test_unknown_layer_is_a_clear_error(tiny_backbone, tiny_cfg):
    from hyperfeat.errors import ConfigError

    with pytest.raises(ConfigError, match=r"\(4, 0\)"):
        FeatureExtractor(tiny_backbone, features_cfg(tiny_cfg, layers=[[4, 0]]))
