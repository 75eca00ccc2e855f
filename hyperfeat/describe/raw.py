"""Training-free baselines of the hyperfeature paper: raw decoder maps, no aggregation network.

A *map* is one (timestep label, layer) pair of the ``features`` plan: the conv2 residual map of
``up_blocks[i].resnets[j]`` at the UNet call labelled ``label``, resized to
``features.output_resolution`` — exactly a slice of what ``hyperfeat extract --raw`` writes.

- one map ("SD-Layer-4" for decoder layer 4, ``up_blocks[1].resnets[0]``): that map as it is;
- several maps ("SD-Concat-All" for every saved label and layer): each L2-normalised over its
  channels at every cell, then concatenated along channels (so every map weighs the same in
  the cosine similarity whatever its channel count or scale);
- ``pruned``: the one map whose mixing weight is largest in a trained checkpoint.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from hyperfeat.describe.base import BackboneDescriber
from hyperfeat.errors import ConfigError
from hyperfeat.model.backbone import Backbone
from hyperfeat.model.features import FeatureExtractor, all_layers

RawMap = tuple[int, tuple[int, int]]  # (timestep label, (i, j))


def maps_from_config(cfg: DictConfig, unet: torch.nn.Module) -> list[RawMap]:
    """``raw.maps`` → [(label, (i, j))]; ``all`` is every saved label × every features layer."""
    maps = cfg.raw.maps
    if maps == "all":
        layers = all_layers(unet) if cfg.features.layers == "all" else [tuple(ij) for ij in cfg.features.layers]
        return [(int(label), (int(i), int(j))) for label in cfg.features.save_steps for i, j in layers]
    return [(int(label), (int(i), int(j))) for label, i, j in maps]


class RawDescriber(BackboneDescriber):
    """Raw decoder maps of the ``features`` plan (see the module docstring)."""

    def __init__(self, cfg: DictConfig, backbone: Backbone, maps: Optional[Sequence[RawMap]] = None, name: str = "raw"):
        self.cfg = cfg
        self.backbone = backbone
        self.name = name
        self.maps = [
            (int(label), (int(ij[0]), int(ij[1]))) for label, ij in (maps or maps_from_config(cfg, backbone.unet))
        ]
        if not self.maps:
            raise ConfigError("raw.maps is empty; give at least one [label, i, j]")
        num_steps = int(cfg.features.num_steps)
        bad = [label for label, _ in self.maps if not 0 <= label < num_steps]
        if bad:
            raise ConfigError(
                f"raw map labels {bad} are not timestep labels of the plan: valid 0 … {num_steps - 1} "
                f"(features.num_steps={num_steps})"
            )
        available = all_layers(backbone.unet)
        wrong = [ij for _, ij in self.maps if ij not in available]
        if wrong:
            raise ConfigError(f"raw map layers {wrong} do not exist in this UNet; valid [i, j]: {available}")
        labels = list(dict.fromkeys(label for label, _ in self.maps))
        layers = list(dict.fromkeys(ij for _, ij in self.maps))
        features = OmegaConf.to_container(cfg.features, resolve=True)
        features.update(save_steps=labels, layers=[list(ij) for ij in layers])
        self.features = OmegaConf.create(features)
        self.extractor = FeatureExtractor(backbone, self.features)
        offsets = [sum(self.extractor.channels[:n]) for n in range(len(layers))]
        # (timestep index, channel start, channel count) of each map in the extractor's output
        self._slices = [
            (labels.index(label), offsets[layers.index(ij)], self.extractor.channels[layers.index(ij)])
            for label, ij in self.maps
        ]

    def identity(self) -> dict:
        ident = self.backbone_identity()
        features = OmegaConf.to_container(self.features, resolve=True)
        ident["features"] = {k: v for k, v in features.items() if k not in ("streaming", "batch_size")}
        ident["method"] = self.name
        ident["maps"] = [[label, list(ij)] for label, ij in self.maps]
        return ident

    @torch.no_grad()
    def describe_batch(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, 3, L, L) → one map (B, C, R, R) as extracted, or several, each L2-normalised, concatenated."""
        raw = self.extractor.run(batch)  # (B, S, C, R, R)
        parts = [raw[:, s, start : start + count] for s, start, count in self._slices]
        if len(parts) == 1:
            return parts[0].float()
        return torch.cat([F.normalize(p.float(), dim=1) for p in parts], dim=1)


def pruned_map(network, meta) -> RawMap:
    """The (label, layer) of the largest mixing weight (index k = s·L + l, timestep-major)."""
    k = int(torch.argmax(network.mixing_weights.detach()))
    s, l = divmod(k, len(meta.layers))
    return int(meta.save_steps[s]), tuple(int(v) for v in meta.layers[l])
