"""DIFT against a computation written out here on the tiny backbone: the full UNet is run (no
early stop), the block output is caught by its own hook, the posterior sample and noise are drawn
as the module documents and mixed with diffusers' own DDIMScheduler.add_noise. The same
computation with a conv2 hook, a neighbouring block or without the ensemble mean must differ."""

import pytest
import torch
import torch.nn.functional as F

from hyperfeat.config import load_config
from hyperfeat.describe.dift import DiftDescriber
from hyperfeat.errors import ConfigError
from hyperfeat.model.schedule import make_scheduler

OVERRIDES = ["backbone=tiny", "dift.ensemble_size=3", "dift.latent=sample"]


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 128, 128, generator=g) * 2 - 1


def by_hand(backbone, images, t, index, ensemble, seed=0, hook="block", average=True, size=128):
    unet, vae = backbone.unet, backbone.vae
    scheduler = make_scheduler()
    x = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    cond = backbone.encode_prompt("", images.shape[0])
    with torch.no_grad():
        dist = vae.encode(x).latent_dist
        outs = []
        gens = [torch.Generator().manual_seed(seed) for _ in range(images.shape[0])]
        for _ in range(ensemble):
            z, n = [], []
            for b, g in enumerate(gens):
                z.append(dist.mean[b] + dist.std[b] * torch.randn(dist.mean.shape[1:], generator=g))
                n.append(torch.randn(dist.mean.shape[1:], generator=g))
            x0 = torch.stack(z) * vae.config.scaling_factor
            x_t = scheduler.add_noise(x0, torch.stack(n), torch.tensor([t] * images.shape[0]))
            kept = {}
            module = unet.up_blocks[index] if hook == "block" else unet.up_blocks[index].resnets[-1].conv2
            handle = module.register_forward_hook(lambda m, i, o: kept.__setitem__("o", o))
            unet(x_t, torch.full((images.shape[0],), float(t)), encoder_hidden_states=cond)
            handle.remove()
            outs.append(kept["o"])
    return torch.stack(outs).mean(0) if average else outs[0]


def same(a, b):
    return a.shape == b.shape and torch.allclose(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("index", [1, 3])
def test_dift_is_the_ensemble_mean_of_the_block_output(tiny_backbone, images, index):
    cfg = load_config(overrides=OVERRIDES + [f"dift.up_ft_index={index}", "dift.timestep=261"])
    desc = DiftDescriber(cfg, tiny_backbone).describe_batch(images)
    expected = by_hand(tiny_backbone, images, 261, index, 3)
    assert same(desc, expected)
    # the wrong variants differ (index 3 has no upsampler, so there conv2 has the same shape)
    assert not same(desc, by_hand(tiny_backbone, images, 261, index, 3, hook="conv2"))
    assert not same(desc, by_hand(tiny_backbone, images, 261, index - 1, 3))
    if index + 1 < len(tiny_backbone.unet.up_blocks):
        assert not same(desc, by_hand(tiny_backbone, images, 261, index + 1, 3))
    assert not same(desc, by_hand(tiny_backbone, images, 261, index, 3, average=False))
    assert not same(desc, by_hand(tiny_backbone, images, 260, index, 3))


def test_dift_defaults_per_task_and_batch_independence(tiny_backbone, images):
    semantic = DiftDescriber(load_config(overrides=["backbone=tiny"]), tiny_backbone)
    assert (semantic.timestep, semantic.up_ft_index, semantic.ensemble_size) == (261, 1, 8)
    video = DiftDescriber(load_config(overrides=["backbone=tiny", "task=davis"]), tiny_backbone)
    assert (video.timestep, video.up_ft_index) == (51, 2)
    assert load_config(overrides=["backbone=sd21"]).dift.image_size == 768
    d = DiftDescriber(load_config(overrides=OVERRIDES), tiny_backbone)
    both = d.describe_batch(images)
    assert same(both[1:], d.describe_batch(images[1:]))  # one generator per image


def test_dift_bad_values_list_valid_ones(tiny_backbone):
    with pytest.raises(ConfigError, match=r"\[0, 999\]"):
        load_config(overrides=["backbone=tiny", "dift.timestep=1000"])
    with pytest.raises(ConfigError, match=r"\[0, 999\]"):
        load_config(overrides=["backbone=tiny", "dift.timestep=-1"])
    with pytest.raises(ConfigError, match=">= 1"):
        load_config(overrides=["backbone=tiny", "dift.ensemble_size=0"])
    with pytest.raises(ConfigError, match=">= 1"):
        load_config(overrides=["backbone=tiny", "features.mode=noise", "features.ensemble_size=0"])
    with pytest.raises(ConfigError, match=r"0 … 3 \(\[0, 1, 2, 3\]\)"):
        DiftDescriber(load_config(overrides=["backbone=tiny", "dift.up_ft_index=4"]), tiny_backbone)
    with pytest.raises(ConfigError, match="0 … 3"):
        DiftDescriber(load_config(overrides=["backbone=tiny", "dift.up_ft_index=-1"]), tiny_backbone)


def test_dift_and_raw_go_where_hyperfeatures_go(tiny_backbone, tmp_path):
    from hyperfeat.describe import registry
    from hyperfeat.video.run import describe_frames, track

    frames = torch.rand(3, 3, 64, 80, generator=torch.Generator().manual_seed(1))  # (T, 3, H, W) in [0, 1]
    d = registry.build("dift", ["backbone=tiny", "task=davis"], ensemble_size=1, backbone=tiny_backbone)
    assert (d.timestep, d.up_ft_index) == (51, 2)
    tracks, visible = track(d, frames, [[0, 40.0, 30.0]], progress=False)
    assert tracks.shape == (1, 3, 2) and visible.shape == (1, 3)
    assert torch.allclose(tracks[0, 0], torch.tensor([40.0, 30.0]))
    # the descriptor store keys on the describer's identity: DIFT and a raw map never share files
    first = describe_frames(d, frames, cache_dir=tmp_path, progress=False)
    r = registry.build(
        "raw",
        ["backbone=tiny", "features.num_steps=5", "features.save_steps=[4]"],
        maps=[(4, (2, 0))],
        backbone=tiny_backbone,
    )
    other = describe_frames(r, frames, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.rglob("*.pt"))) == 2 and first.shape != other.shape
    assert torch.equal(describe_frames(d, frames, cache_dir=tmp_path, progress=False), first)


def _vae_inputs(describer, monkeypatch) -> list:
    """What ``describer``'s VAE encodes, recorded per call."""
    seen, encode = [], describer.backbone.vae.encode

    def record(x, *args, **kwargs):
        seen.append(x.detach().clone())
        return encode(x, *args, **kwargs)

    monkeypatch.setattr(describer.backbone.vae, "encode", record)
    return seen


def test_dift_input_is_dift_own_bicubic_resize(tiny_backbone, tmp_path, monkeypatch):
    """DIFT's code: ``img.resize(img_size)`` (PIL's default filter for RGB: bicubic), then
    ``(PILToTensor()(img) / 255.0 - 0.5) * 2``: the VAE must see exactly that, not a bilinear
    resize to load_size followed by a second one."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    path = tmp_path / "odd.png"
    Image.fromarray(rng.integers(0, 256, (90, 150, 3), dtype=np.uint8)).save(path)  # (W, H) = (150, 90)
    d = DiftDescriber(load_config(overrides=["backbone=tiny", "dift.ensemble_size=1"]), tiny_backbone)
    assert (d.preprocess, d.load_size, d.resample) == ("dift", 128, "bicubic")
    seen = _vae_inputs(d, monkeypatch)
    desc = d.describe([path])
    img = Image.open(path).convert("RGB").resize((128, 128))  # DIFT's own line, its default filter
    expected = (torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255.0 - 0.5) * 2
    assert seen[0].shape == (1, 3, 128, 128)
    assert torch.allclose(seen[0][0], expected, atol=1e-6)
    bilinear = (
        torch.from_numpy(np.array(Image.open(path).convert("RGB").resize((128, 128), Image.BILINEAR)))
        .permute(2, 0, 1)
        .float()
        / 255.0
        - 0.5
    ) * 2
    assert not torch.allclose(seen[0][0], bilinear, atol=1e-3)  # the filter matters
    # the hyperfeatures' input stays available, as before: bilinear to load_size, then to image_size
    h = DiftDescriber(
        load_config(
            overrides=["backbone=tiny", "dift.ensemble_size=1", "dift.preprocess=hyperfeat", "features.load_size=64"]
        ),
        tiny_backbone,
    )
    assert (h.load_size, h.resample) == (64, "bilinear") and h.identity() != d.identity()
    seen_h = _vae_inputs(h, monkeypatch)
    other = h.describe([path])
    assert seen_h[0].shape == (1, 3, 128, 128) and not torch.allclose(seen_h[0], seen[0], atol=1e-3)
    assert other.shape == desc.shape


def test_dift_preprocess_bad_value_is_one_line():
    with pytest.raises(ConfigError, match="dift.preprocess must be dift .* or hyperfeat; got 'bicubic'"):
        load_config(overrides=["backbone=tiny", "dift.preprocess=bicubic"])
