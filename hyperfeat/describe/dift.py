"""DIFT (Tang et al. 2023, "Emergent Correspondence from Image Diffusion"): one noised UNet call,
one decoder block's output, averaged over an ensemble of noise draws.

The input, with ``dift.preprocess: dift`` (the default), is DIFT's own: the image resized
straight to ``dift.image_size``² (768 in DIFT's semantic setting) with PIL's bicubic filter — what
DIFT's ``img.resize((768, 768))`` does, PIL's default filter for RGB images being bicubic — then
[0, 1] → [-1, 1]; the describer's ``load_size`` is then ``image_size``, so points live in that
frame. ``dift.preprocess: hyperfeat`` feeds it the hyperfeatures' input instead (PIL bilinear to
``features.load_size``, then step 1 below), to compare the two methods on one input.

For each image (B, 3, L, L) in [-1, 1]:

1. bilinear (align_corners=False) to ``dift.image_size`` when L differs from it (never with
   ``dift.preprocess: dift``, whose images are already that size);
2. VAE encode; one generator per image, seeded ``dift.seed`` (so a draw does not depend on the
   image's place in the batch), draws for ensemble member k = 0 … E-1, in this order: the
   posterior sample ``z_k = mean + std · randn`` (skipped with ``dift.latent=mean``), then the
   noise ``n_k = randn``, both of the latent's shape; ``x0_k = z_k · scaling_factor``;
3. ``x_t = √ᾱ_t x0_k + √(1−ᾱ_t) n_k`` (:func:`hyperfeat.model.schedule.add_noise`, the DDIM
   scheduler's ``add_noise``) at ``dift.timestep``;
4. one UNet call at t with the text condition of ``dift.prompt``; the feature is the OUTPUT of
   ``unet.up_blocks[up_ft_index]`` — after its resnets, attentions and upsampler — caught with a
   forward hook on the block (not the conv2 residual maps the hyperfeatures keep); the UNet
   stops there (the later blocks do not change it);
5. the mean over the E members → (B, C_i, h_i, w_i) float32 at the block's own resolution
   (for SD, with latent side r = image_size / 8: r / 2^(2-i) for i ≤ 2 and r for the last
   block, which has no upsampler — e.g. 48 for up_ft_index 1 at 768).

Defaults (DIFT's): t = 261, up_ft_index = 1, E = 8 for semantic correspondence; t = 51,
up_ft_index = 2 for the video tasks.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from hyperfeat.describe.base import BackboneDescriber
from hyperfeat.errors import ConfigError
from hyperfeat.model import schedule
from hyperfeat.model.backbone import Backbone

SEMANTIC_DEFAULTS = {"timestep": 261, "up_ft_index": 1}
VIDEO_DEFAULTS = {"timestep": 51, "up_ft_index": 2}
PREPROCESSING = ("dift", "hyperfeat")  # DIFT's own input (bicubic straight to image_size) | the hyperfeatures'


def dift_settings(cfg: DictConfig) -> dict:
    """The ``dift`` block with its null values filled by the task's DIFT defaults."""
    defaults = SEMANTIC_DEFAULTS if str(cfg.task) == "semantic" else VIDEO_DEFAULTS
    settings = OmegaConf.to_container(cfg.dift, resolve=True)
    for key, value in defaults.items():
        if settings.get(key) is None:
            settings[key] = value
    return settings


class _Stop(Exception):
    """Raised by the block hook once its output is kept: the rest of the UNet is not needed."""


class DiftDescriber(BackboneDescriber):
    """DIFT features of one decoder block at one noise level (see the module docstring)."""

    def __init__(self, cfg: DictConfig, backbone: Backbone):
        self.cfg = cfg
        self.backbone = backbone
        s = dift_settings(cfg)
        self.timestep = int(s["timestep"])
        self.up_ft_index = int(s["up_ft_index"])
        self.ensemble_size = int(s["ensemble_size"])
        self.prompt = str(s["prompt"])
        self.image_size = int(s["image_size"])
        self.latent = str(s["latent"])
        self.seed = int(s["seed"])
        self.preprocess = str(s["preprocess"])
        if self.preprocess not in PREPROCESSING:
            raise ConfigError(f"dift.preprocess must be one of {', '.join(PREPROCESSING)}; got {self.preprocess!r}")
        self.resample = "bicubic" if self.preprocess == "dift" else "bilinear"
        if not 0 <= self.timestep <= 999:
            raise ConfigError(f"dift.timestep must be in [0, 999]; got {self.timestep}")
        blocks = len(backbone.unet.up_blocks)
        if not 0 <= self.up_ft_index < blocks:
            raise ConfigError(
                f"dift.up_ft_index must index unet.up_blocks: valid values 0 … {blocks - 1} "
                f"({list(range(blocks))}); got {self.up_ft_index}"
            )
        if self.ensemble_size < 1:
            raise ConfigError(f"dift.ensemble_size must be an integer >= 1; got {self.ensemble_size}")
        self.alphas = schedule.alphas_cumprod()
        self._cond: Optional[torch.Tensor] = None

    @property
    def load_size(self) -> int:
        """Side of the square images :meth:`describe_batch` takes: ``dift.image_size`` with DIFT's
        own preprocessing, ``features.load_size`` with the hyperfeatures'."""
        return self.image_size if self.preprocess == "dift" else int(self.cfg.features.load_size)

    def identity(self) -> dict:
        ident = self.backbone_identity()
        ident.pop("features")
        ident["method"] = "dift"
        ident["dift"] = {
            "timestep": self.timestep,
            "up_ft_index": self.up_ft_index,
            "ensemble_size": self.ensemble_size,
            "prompt": self.prompt,
            "image_size": self.image_size,
            "latent": self.latent,
            "seed": self.seed,
            "preprocess": self.preprocess,
            "load_size": self.load_size,
        }
        return ident

    def condition(self, batch_size: int) -> torch.Tensor:
        if self._cond is None:
            self._cond = self.backbone.encode_prompt(self.prompt, 1)  # (1, 77, E)
        return self._cond.expand(batch_size, *self._cond.shape[1:])

    def block_output(self, x_t: torch.Tensor, t: int) -> torch.Tensor:
        """The output of ``unet.up_blocks[up_ft_index]`` for latents x_t (B, 4, h, w) at t."""
        kept: dict[str, torch.Tensor] = {}

        def hook(module, inputs, output):
            kept["out"] = output
            raise _Stop

        handle = self.backbone.unet.up_blocks[self.up_ft_index].register_forward_hook(hook)
        timesteps = torch.full((x_t.shape[0],), float(t), device=x_t.device)
        try:
            self.backbone.unet(
                x_t.to(self.backbone.dtype), timesteps, encoder_hidden_states=self.condition(x_t.shape[0])
            )
        except _Stop:
            pass
        finally:
            handle.remove()
        return kept["out"].float()

    @torch.no_grad()
    def describe_batch(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, 3, L, L) in [-1, 1] → (B, C, h, w) float32: the ensemble mean of the block output."""
        images = batch.to(self.device, torch.float32)
        if images.shape[-2:] != (self.image_size, self.image_size):
            images = F.interpolate(
                images, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
            )
        posterior = self.backbone.vae.encode(images.to(self.backbone.dtype)).latent_dist
        mean, std = posterior.mean.float(), posterior.std.float()  # (B, 4, h, w)
        generators = [torch.Generator(self.device).manual_seed(self.seed) for _ in range(images.shape[0])]
        total = None
        for _ in range(self.ensemble_size):
            latents, noise = [], []
            for b, g in enumerate(generators):
                z = (
                    mean[b]
                    if self.latent == "mean"
                    else mean[b] + std[b] * torch.randn(mean.shape[1:], generator=g, device=self.device)
                )
                latents.append(z)
                noise.append(torch.randn(mean.shape[1:], generator=g, device=self.device))
            x0 = torch.stack(latents) * self.backbone.latent_scale
            x_t = schedule.add_noise(x0, torch.stack(noise), self.alphas, [self.timestep])  # (B, 4, h, w)
            out = self.block_output(x_t, self.timestep)  # (B, C, h_i, w_i)
            total = out if total is None else total + out
        return total / self.ensemble_size
