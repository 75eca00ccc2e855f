"""A fixed, non-learned stand-in describer: a random projection of local colour patches.

Each cell's descriptor is a fixed random linear projection of the (k × k × 3) colour patch
around it (taken from the image at the describer's grid stride, after a light blur), with the
patch's mean colour kept as well, so it carries colour and local texture and nothing about the
cell's position. It needs no weights, so it shows what the video code (propagation, tracking)
does with a descriptor that really corresponds, where the tiny random backbone's descriptors
carry no correspondence. Its identity names every number that decides it.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from hyperfeat.describe.base import Describer


class PatchDescriber(Describer):
    """(B, 3, L, L) in [-1, 1] → (B, dim, L / stride, L / stride): fixed random patch projections."""

    def __init__(
        self,
        cfg: Optional[DictConfig] = None,
        patch: int = 9,
        stride: int = 4,
        dim: int = 64,
        seed: int = 0,
        colour_weight: float = 1.0,
    ):
        if cfg is None:
            from hyperfeat.config import load_config

            cfg = load_config(overrides=["backbone=tiny"])
        self.cfg = cfg
        self.patch, self.stride, self.dim, self.seed, self.colour_weight = (
            int(patch),
            int(stride),
            int(dim),
            int(seed),
            float(colour_weight),
        )
        generator = torch.Generator().manual_seed(self.seed)
        weight = torch.randn(self.dim, 3, self.patch, self.patch, generator=generator)
        self.weight = weight / (self.patch * 3**0.5)  # (dim, 3, k, k)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def identity(self) -> dict:
        return {
            "describer": "random-patch-projection",
            "patch": self.patch,
            "stride": self.stride,
            "dim": self.dim,
            "seed": self.seed,
            "colour_weight": self.colour_weight,
            "load_size": self.load_size,
        }

    @torch.no_grad()
    def describe_batch(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.float().cpu()  # (B, 3, L, L)
        pad = self.patch // 2
        texture = F.conv2d(F.pad(x, (pad,) * 4, mode="replicate"), self.weight, stride=self.stride)  # (B, dim, h, w)
        colour = F.avg_pool2d(x, self.stride)  # (B, 3, h, w)
        texture = texture - texture.mean(1, keepdim=True)
        return torch.cat([texture, self.colour_weight * colour], 1)  # (B, dim + 3, h, w)
