"""A fixed, training-free describer: local colour and texture statistics per grid cell.

It is the stand-in used to check analyses that sit downstream of a describer (state changes,
tracking plumbing) when the only backbone at hand is the tiny random model, whose descriptors
mean nothing. Per cell of an ``R × R`` grid over the ``L × L`` image it keeps

* the mean R, G, B of the cell and of its 3 × 3-cell neighbourhood (colour),
* the standard deviation of R, G, B within the cell (texture contrast),
* the mean absolute horizontal and vertical gray-level gradient (texture orientation),

each computed on the image mapped back to [0, 1]; the colour means are centred on mid-gray
(× 2 − 1) so that cosine similarity tells colours apart. A global lighting change therefore
does move these descriptors: telling it from a change of state is the analysis's job
(:mod:`hyperfeat.correspond.changes` normalises against reference points). Nothing here is
learned.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from hyperfeat.describe.base import Describer
from hyperfeat.errors import ConfigError

STATS_DIM = 11  # 3 cell means + 3 neighbourhood means + 3 stds + 2 gradients


class LocalStatsDescriber(Describer):
    """Images (B, 3, L, L) in [-1, 1] → (B, 11, R, R) local colour/texture statistics.

    ``cfg``: a composed config (its ``features.load_size``, ``features.batch_size`` and ``video``
    block are used; default: the default config with ``load_size`` = ``load_size``).
    ``resolution`` R must divide ``load_size``.
    """

    def __init__(
        self, cfg: Optional[DictConfig] = None, resolution: int = 32, load_size: int = 128, device: str = "cpu"
    ):
        if cfg is None:
            from hyperfeat.config import load_config

            cfg = load_config(overrides=[f"features.load_size={int(load_size)}"])
        self.cfg = cfg
        self.resolution = int(resolution)
        if self.resolution < 1 or self.load_size % self.resolution:
            raise ConfigError(
                f"LocalStatsDescriber resolution {resolution} must divide features.load_size {self.load_size}"
            )
        self._device = torch.device(device)

    @property
    def device(self) -> torch.device:
        return self._device

    @torch.no_grad()
    def describe_batch(self, batch: torch.Tensor) -> torch.Tensor:
        x = ((batch.to(self._device).float() + 1.0) / 2.0).clamp(0, 1)  # (B, 3, L, L) in [0, 1]
        k = x.shape[-1] // self.resolution
        mean = F.avg_pool2d(x, k)  # (B, 3, R, R)
        sq = F.avg_pool2d(x * x, k)
        std = (sq - mean * mean).clamp_min(0).sqrt()  # (B, 3, R, R)
        around = F.avg_pool2d(F.pad(mean, (1, 1, 1, 1), mode="replicate"), 3, stride=1)  # (B, 3, R, R)
        gray = x.mean(dim=1, keepdim=True)  # (B, 1, L, L)
        gx = (gray[..., :, 1:] - gray[..., :, :-1]).abs()
        gy = (gray[..., 1:, :] - gray[..., :-1, :]).abs()
        gx = F.avg_pool2d(F.pad(gx, (0, 1, 0, 0), mode="replicate"), k) * 4.0  # (B, 1, R, R)
        gy = F.avg_pool2d(F.pad(gy, (0, 0, 0, 1), mode="replicate"), k) * 4.0
        # colours centred on mid-gray: cosines then separate colours instead of all being ≈ 1
        return torch.cat([mean * 2 - 1, around * 2 - 1, std * 4.0, gx, gy], dim=1)  # (B, 11, R, R)

    def identity(self) -> dict:
        return {"method": "local-stats-v1", "load_size": self.load_size, "resolution": self.resolution}
