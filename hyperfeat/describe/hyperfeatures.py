"""The trained diffusion-hyperfeature describer: frozen backbone → raw decoder maps →
aggregation network → (B, D, R, R).

The raw maps come from :class:`hyperfeat.model.features.FeatureExtractor` (the plan of UNet
calls and the hooked layers); the network is a trained
:class:`hyperfeat.model.aggregation.AggregationNetwork`. With ``features.streaming`` each map
is aggregated as soon as the UNet makes it, so memory does not grow with the number of
timesteps; both paths give the same descriptors.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence, Union

import torch
from omegaconf import DictConfig, OmegaConf

from hyperfeat.describe.base import Describer, Images, as_image_list
from hyperfeat.images import load_batch
from hyperfeat.model.aggregation import AggregationNetwork, StreamingAggregator
from hyperfeat.model.backbone import Backbone, load_backbone
from hyperfeat.model.checkpoint import (
    CheckpointMeta,
    check_compatible,
    inference_config,
    load_checkpoint,
)
from hyperfeat.model.features import FeatureExtractor
from hyperfeat.model.identity import feature_identity, network_digest


class HyperfeatureDescriber(Describer):
    """A frozen backbone, its feature extractor and a trained aggregation network."""

    def __init__(self, cfg: DictConfig, backbone: Backbone, network: AggregationNetwork,
                 meta: Optional[CheckpointMeta] = None):
        self.cfg = cfg
        self.backbone = backbone
        self.extractor = FeatureExtractor(backbone, cfg.features)
        check_compatible(
            meta or CheckpointMeta(cfg, network.feature_dims, self.extractor.layers, list(cfg.features.save_steps)),
            self.extractor.layers, self.extractor.channels, backbone.model_id,
            save_steps=self.extractor.save_steps,
        )
        self.network = network.to(backbone.device).eval()
        self.meta = meta

    @classmethod
    def from_checkpoint(cls, path: Union[str, os.PathLike], device: Optional[str] = None,
                        overrides: Sequence[str] = (), backbone: Optional[Backbone] = None):
        """Load a checkpoint with the backbone it names (or ``backbone``, already loaded)."""
        network, meta = load_checkpoint(path)
        extra = list(overrides) + ([f"backbone.device={device}"] if device else [])
        cfg = inference_config(meta, extra)
        backbone = backbone or load_backbone(cfg)
        return cls(cfg, backbone, network, meta)

    @property
    def device(self) -> torch.device:
        return torch.device(getattr(self.backbone, "device", "cpu"))

    def identity(self) -> dict:
        """Every value that decides the raw maps (with the backbone's actual compute dtype), the
        ``aggregation`` block and the sha256 of the network's weights."""
        identity = feature_identity(self.cfg)
        identity["backbone"]["compute_dtype"] = str(getattr(self.backbone, "dtype", identity["backbone"]["compute_dtype"]))
        identity["aggregation"] = OmegaConf.to_container(self.cfg.aggregation, resolve=True)
        identity["network"] = network_digest(self.network)
        return identity

    def raw_features(self, images: Images) -> torch.Tensor:
        """(B, S, C, R, R) float32 raw decoder maps (see FeatureExtractor.run)."""
        batch, _ = load_batch(as_image_list(images), self.load_size)
        return self.extractor.run(batch)

    @torch.no_grad()
    def describe_batch(self, batch: torch.Tensor) -> torch.Tensor:
        """Preprocessed images (B, 3, L, L) in [-1, 1] → hyperfeatures (B, D, R, R) float32."""
        if bool(self.cfg.features.streaming):
            accumulator = StreamingAggregator(self.network)
            self.extractor.run(batch, consumer=accumulator.add)
            return accumulator.result().float()
        return self.network(self.extractor.run(batch).to(self.backbone.device)).float()
