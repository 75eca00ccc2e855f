"""Builders shared by the test suite and the benchmarks, all offline.

- the tiny random backbone (:func:`tiny_backbone`) and the configs the tests run it with
  (:data:`TINY_OVERRIDES`, :data:`ONE_STEP_OVERRIDES`, :func:`tiny_config`);
- a tiny aggregation checkpoint (:func:`write_tiny_checkpoint`), the file every command and
  ``Hyperfeatures.from_checkpoint`` test loads;
- :func:`random_sd15_backbone`, a randomly initialised model of Stable Diffusion 1.5's size,
  for measuring time and memory without downloading weights.

Nothing here is needed at run time: the library and the commands never import this module.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import torch
from omegaconf import DictConfig

from hyperfeat.config import load_config
from hyperfeat.model.backbone import Backbone, assemble_backbone, load_backbone
from hyperfeat.model.tiny import build_tiny_components, tiny_tokenizer

# the tiny backbone with a short inversion plan: 5 DDIM steps, three timestep labels kept
TINY_OVERRIDES: list[str] = ["backbone=tiny", "features.num_steps=5", "features.save_steps=[4,2,0]"]
# the tiny backbone with the one-step plan (a single UNet call on the clean latent)
ONE_STEP_OVERRIDES: list[str] = ["backbone=tiny", "features.num_steps=1", "features.save_steps=[0]"]


def tiny_config(overrides: Sequence[str] = TINY_OVERRIDES) -> DictConfig:
    """The composed config for the tiny backbone (``overrides`` as on the command line)."""
    return load_config(overrides=list(overrides))


def tiny_backbone(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0) -> Backbone:
    """The tiny random model with SD 1.5's block structure (what ``backbone=tiny`` loads)."""
    return assemble_backbone(*build_tiny_components(seed=seed), "tiny", torch.device(device), dtype)


def write_tiny_checkpoint(
    path: str | os.PathLike,
    overrides: Sequence[str] = TINY_OVERRIDES,
    seed: int = 0,
    randomise_mixing: bool = False,
    backbone: Optional[Backbone] = None,
) -> Path:
    """Write an untrained aggregation checkpoint for the tiny backbone and return its path.

    The network is built right after ``torch.manual_seed(seed)``; with ``randomise_mixing`` its
    mixing weights are then drawn from N(0, 1) (in that order, from the same generator), so that
    they are not uniform and a mixing heat map has a largest cell. The global RNG state is
    restored afterwards. ``backbone`` (the tiny model of ``overrides``) only supplies the channel
    counts and layers; it is built when not given.
    """
    from hyperfeat.model.checkpoint import (
        CheckpointMeta,
        build_network,
        save_checkpoint,
    )
    from hyperfeat.model.features import FeatureExtractor

    cfg = load_config(overrides=list(overrides))
    if backbone is None:
        backbone = load_backbone(cfg)
    extractor = FeatureExtractor(backbone, cfg.features)
    rng_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        network = build_network(cfg, extractor.channels)
        if randomise_mixing:
            with torch.no_grad():
                network.mixing_weights.normal_()
    finally:
        torch.random.set_rng_state(rng_state)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = CheckpointMeta(cfg, extractor.channels, extractor.layers, list(extractor.save_steps))
    save_checkpoint(path, network, meta)
    return path


def random_sd15_backbone(
    device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0
) -> Backbone:
    """SD 1.5's UNet, VAE and CLIP text encoder sizes with random weights (and the tiny
    tokenizer). Random weights cost the time and memory real ones do, and need no download.

    UNet: block channels (320, 640, 1280, 1280), 2 layers per block, cross-attention dim 768,
    head dim 8, SD 1.5's block types. VAE: (128, 256, 512, 512), 2 layers per block, 4 latent
    channels. Text encoder: width 768, 12 layers, 12 heads, MLP 3072. The global RNG state is
    restored afterwards.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    rng_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        unet = UNet2DConditionModel(
            sample_size=64,
            in_channels=4,
            out_channels=4,
            layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=768,
            attention_head_dim=8,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            layers_per_block=2,
            sample_size=512,
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            scaling_factor=0.18215,
        )
        with tempfile.TemporaryDirectory() as tmp:
            tokenizer = tiny_tokenizer(Path(tmp))
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=768,
                intermediate_size=3072,
                num_hidden_layers=12,
                num_attention_heads=12,
                max_position_embeddings=77,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
    finally:
        torch.random.set_rng_state(rng_state)
    return assemble_backbone(unet, vae, text_encoder, tokenizer, "random-sd15", torch.device(device), dtype)


def loss_curve(
    module, batches: Sequence[dict], steps: int, lr: float, start_state: Optional[dict] = None
) -> list[float]:
    """Losses of ``steps`` plain AdamW steps of ``module.aggregation`` (a HyperfeatModule's
    network) over ``batches`` in turn, from ``start_state`` when given: a loss curve measured
    outside Lightning, to compare two feature sources on the same start."""
    if start_state is not None:
        module.aggregation.load_state_dict(start_state)
    optimizer = torch.optim.AdamW(module.aggregation.parameters(), lr=lr)
    losses = []
    for step in range(steps):
        loss, _, _ = module._loss(batches[step % len(batches)])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses
