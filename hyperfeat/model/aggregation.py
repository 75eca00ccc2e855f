"""The aggregation network: per-layer bottlenecks shared over timesteps, softmax mixing weights.

Output = Σ_k softmax(w)_k · bottleneck_{l(k)}(map_k) with k = s·L + l (timestep-major), layer
l's block shared by every timestep s. Parameter names follow the published checkpoints
(``bottleneck_layers.<l>.0.conv1.weight``, ``….conv1.norm.weight`` …, ``mixing_weights``).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ConvNorm(nn.Conv2d):
    """Bias-free conv followed by GroupNorm, stored as ``<name>.weight`` and ``<name>.norm.*``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, num_groups: int):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm = nn.GroupNorm(num_groups, out_channels)
        # MSRA fill (kaiming normal, fan_out, relu), as the reference's detectron2 blocks
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(super().forward(x))


class BottleneckBlock(nn.Module):
    """1×1 C→D/4, GN, ReLU; 3×3 D/4→D/4, GN, ReLU; 1×1 D/4→D, GN; + (1×1 C→D, GN); ReLU."""

    def __init__(self, in_channels: int, out_channels: int, num_groups: int = 32):
        super().__init__()
        mid = out_channels // 4
        self.conv1 = ConvNorm(in_channels, mid, 1, num_groups)
        self.conv2 = ConvNorm(mid, mid, 3, num_groups)
        self.conv3 = ConvNorm(mid, out_channels, 1, num_groups)
        self.shortcut = ConvNorm(in_channels, out_channels, 1, num_groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, R, R) → (B, D, R, R)
        out = F.relu(self.conv1(x))
        out = F.relu(self.conv2(out))
        out = self.conv3(out)
        return F.relu(out + self.shortcut(x))


class AggregationNetwork(nn.Module):
    """Mixes S timesteps × L layers of raw maps into one (B, D, R, R) descriptor map."""

    def __init__(
        self,
        feature_dims: Sequence[int],
        num_timesteps: int,
        projection_dim: int = 384,
        num_norm_groups: int = 32,
    ):
        super().__init__()
        if projection_dim % 4:
            raise ValueError(f"projection_dim must be a multiple of 4; got {projection_dim}")
        self.feature_dims = [int(c) for c in feature_dims]
        self.num_timesteps = int(num_timesteps)
        self.projection_dim = int(projection_dim)
        # one block per layer, wrapped in a Sequential for the published key names
        self.bottleneck_layers = nn.ModuleList(
            nn.Sequential(BottleneckBlock(c, projection_dim, num_norm_groups)) for c in self.feature_dims
        )
        self.mixing_weights = nn.Parameter(torch.ones(self.num_timesteps * len(self.feature_dims)))

    @property
    def num_layers(self) -> int:
        return len(self.feature_dims)

    def mixing_softmax(self) -> torch.Tensor:
        """(S·L,) softmax of the mixing weights, timestep-major."""
        return torch.softmax(self.mixing_weights, dim=0)

    def mixing_grid(self) -> torch.Tensor:
        """(S, L) softmax mixing weights: row s is a timestep, column l a layer."""
        return self.mixing_softmax().view(self.num_timesteps, self.num_layers)

    def project(self, layer: int, feature_map: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """weight · bottleneck_layer(feature_map): one term of the sum. (B, C_l, R, R) → (B, D, R, R)."""
        block = self.bottleneck_layers[layer]
        dtype = next(block.parameters()).dtype
        return weight * block(feature_map.to(dtype))

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        """raw: (B, S, C, R, R) or (B, S·C, R, R), timesteps major, layers in decoder order.

        Returns (B, D, R, R).
        """
        if raw.ndim == 5:
            raw = raw.flatten(1, 2)  # (B, S·C, R, R)
        expected = self.num_timesteps * sum(self.feature_dims)
        if raw.shape[1] != expected:
            raise ValueError(
                f"aggregation network expects {expected} channels "
                f"({self.num_timesteps} timesteps × layers {self.feature_dims}); got {raw.shape[1]}"
            )
        weights = self.mixing_softmax()
        output = None
        start = 0
        for k in range(len(weights)):
            layer = k % self.num_layers
            end = start + self.feature_dims[layer]
            term = self.project(layer, raw[:, start:end], weights[k])
            output = term if output is None else output + term
            start = end
        return output


class StreamingAggregator:
    """Adds each (timestep, layer) term to a running sum as soon as its map is made.

    Peak memory holds one raw map and the (B, D, R, R) sum, whatever the number of timesteps.
    """

    def __init__(self, network: AggregationNetwork):
        self.network = network
        self.weights = network.mixing_softmax()
        self.total: torch.Tensor | None = None
        self.seen: set[tuple[int, int]] = set()

    def add(self, timestep_index: int, layer: int, feature_map: torch.Tensor) -> None:
        """feature_map: (B, C_l, R, R) of timestep ``timestep_index`` (save order) and layer."""
        k = timestep_index * self.network.num_layers + layer
        term = self.network.project(layer, feature_map, self.weights[k])
        self.total = term if self.total is None else self.total + term
        self.seen.add((timestep_index, layer))

    def result(self) -> torch.Tensor:
        expected = self.network.num_timesteps * self.network.num_layers
        if self.total is None or len(self.seen) != expected:
            raise RuntimeError(f"streaming aggregation got {len(self.seen)} of {expected} maps")
        return self.total
