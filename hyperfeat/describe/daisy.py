"""A weight-free classical describer: DAISY-style rings of oriented-gradient and colour maps.

Where no trained network is at hand (here, and in every test and benchmark of the video code),
the project still needs a descriptor that *really* corresponds on real footage, so that the
tracker, propagation and the state-change analysis are measured on something that means
something. This is a classical one in the spirit of DAISY (Tola et al., 2010):

1. the image (B, 3, L, L) in [-1, 1] → luminance and two colour-opponent channels
   (R − G, (R + G)/2 − B);
2. the luminance gradient, lightly smoothed, split into ``orientations`` half-wave rectified
   orientation maps (the projection of the gradient on each direction, clipped at 0), plus the
   colour channels scaled by ``colour_weight``: C = orientations + 3 channels per pixel;
3. those maps blurred with a Gaussian of each ring's ``sigmas[i]`` and sampled at the centre and
   at ``directions`` points on rings of ``radii[i]`` pixels around each cell: every sample's
   orientation histogram is L2-normalised (contrast invariance) and its colour kept;
4. all samples concatenated and L2-normalised → (B, C · (1 + directions · rings), L / stride, L / stride).

The rings give each cell the layout of its neighbourhood (what a single patch lacks), the
normalisation makes it robust to lighting, and nothing is random or learned: the identity names
every number that decides it.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from hyperfeat.describe.base import Describer
from hyperfeat.model.classical import gaussian_blur


def opponent_colour(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] → (B, 3, H, W): luminance, R − G, (R + G)/2 − B."""
    r, g, b = images.unbind(1)
    return torch.stack([(r + g + b) / 3, r - g, (r + g) / 2 - b], dim=1)


def orientation_maps(luminance: torch.Tensor, orientations: int) -> torch.Tensor:
    """(B, 1, H, W) → (B, orientations, H, W): the gradient's positive projection on each of
    ``orientations`` directions evenly spread over 360°."""
    padded = F.pad(luminance, (1, 1, 1, 1), mode="replicate")
    gx = (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2]) / 2  # (B, 1, H, W)
    gy = (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1]) / 2
    angles = torch.arange(orientations, dtype=luminance.dtype, device=luminance.device) * (2 * math.pi / orientations)
    projection = gx * angles.cos().view(1, -1, 1, 1) + gy * angles.sin().view(1, -1, 1, 1)
    return projection.clamp(min=0)


class DaisyDescriber(Describer):
    """(B, 3, L, L) in [-1, 1] → (B, D, L / stride, L / stride): DAISY-style classical descriptors
    (see the module docstring). ``radii`` / ``sigmas`` in pixels of the L × L image, the centre
    sample first (radius 0)."""

    def __init__(
        self,
        cfg: Optional[DictConfig] = None,
        stride: int = 4,
        orientations: int = 8,
        directions: int = 8,
        radii: Sequence[float] = (0.0, 4.0, 8.0, 16.0),
        sigmas: Sequence[float] = (1.5, 2.5, 4.0, 8.0),
        colour_weight: float = 1.0,
        gradient_sigma: float = 1.0,
        contrast_floor: float = 0.02,
    ):
        if cfg is None:
            from hyperfeat.config import load_config

            cfg = load_config(overrides=["backbone=tiny", "features.load_size=256"])
        if len(radii) != len(sigmas) or not radii or float(radii[0]) != 0.0:
            raise ValueError(
                f"radii and sigmas must pair up, the centre (radius 0) first; got {list(radii)}, {list(sigmas)}"
            )
        self.cfg = cfg
        self.stride, self.orientations, self.directions = int(stride), int(orientations), int(directions)
        self.radii, self.sigmas = [float(r) for r in radii], [float(s) for s in sigmas]
        self.colour_weight, self.gradient_sigma = float(colour_weight), float(gradient_sigma)
        self.contrast_floor = float(contrast_floor)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dim(self) -> int:
        """D, the descriptor length."""
        return (self.orientations + 3) * (1 + self.directions * (len(self.radii) - 1))

    def identity(self) -> dict:
        return {
            "describer": "classical-daisy-v2",
            "stride": self.stride,
            "orientations": self.orientations,
            "directions": self.directions,
            "radii": self.radii,
            "sigmas": self.sigmas,
            "colour_weight": self.colour_weight,
            "gradient_sigma": self.gradient_sigma,
            "contrast_floor": self.contrast_floor,
            "load_size": self.load_size,
        }

    def _sample(self, maps: torch.Tensor, dx: float, dy: float) -> torch.Tensor:
        """(B, C, L, L) maps read at every cell centre shifted by (dx, dy) pixels → (B, C, h, w)."""
        s = self.stride
        size = maps.shape[-1]
        centres = torch.arange(size // s, dtype=maps.dtype, device=maps.device) * s + (s - 1) / 2
        xs = ((centres + dx).round().long()).clamp(0, size - 1)
        ys = ((centres + dy).round().long()).clamp(0, size - 1)
        return maps[:, :, ys][:, :, :, xs]

    def _normalised(self, sample: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w): the orientation histogram L2-normalised (floored: flat regions stay
        small instead of amplified noise), the colour scaled."""
        hist, colour = sample[:, : self.orientations], sample[:, self.orientations :]
        norm = hist.norm(dim=1, keepdim=True).clamp(min=self.contrast_floor)
        return torch.cat([hist / norm, self.colour_weight * colour], dim=1)

    @torch.no_grad()
    def describe_batch(self, batch: torch.Tensor) -> torch.Tensor:
        images = (batch.float().cpu() + 1) / 2  # (B, 3, L, L) in [0, 1]
        colour = opponent_colour(images)  # (B, 3, L, L)
        luminance = gaussian_blur(colour[:, :1], self.gradient_sigma)
        maps = torch.cat([orientation_maps(luminance, self.orientations), colour], dim=1)  # (B, C, L, L)
        samples = []
        for ring, (radius, sigma) in enumerate(zip(self.radii, self.sigmas)):
            blurred = gaussian_blur(maps, sigma)
            if ring == 0:
                samples.append(self._normalised(self._sample(blurred, 0.0, 0.0)))
                continue
            for k in range(self.directions):
                angle = 2 * math.pi * k / self.directions
                samples.append(
                    self._normalised(self._sample(blurred, radius * math.cos(angle), radius * math.sin(angle)))
                )
        return F.normalize(torch.cat(samples, dim=1), dim=1)  # (B, D, h, w)
