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
from typing import Callable, Optional, Sequence, Union

import torch
from omegaconf import DictConfig, OmegaConf

from hyperfeat.describe.base import BackboneDescriber, Images, as_image_list
from hyperfeat.images import load_batch
from hyperfeat.model.aggregation import AggregationNetwork, StreamingAggregator
from hyperfeat.model.backbone import Backbone, load_backbone
from hyperfeat.model.checkpoint import (
    CheckpointMeta,
    check_compatible,
    inference_config,
)
from hyperfeat.model.features import FeatureExtractor
from hyperfeat.model.identity import network_digest
from hyperfeat.model.pretrained import load_pretrained


class HyperfeatureDescriber(BackboneDescriber):
    """A frozen backbone, its feature extractor and a trained aggregation network."""

    def __init__(
        self, cfg: DictConfig, backbone: Backbone, network: AggregationNetwork, meta: Optional[CheckpointMeta] = None
    ):
        self.cfg = cfg
        self.backbone = backbone
        self.extractor = FeatureExtractor(backbone, cfg.features)
        check_compatible(
            meta or CheckpointMeta(cfg, network.feature_dims, self.extractor.layers, list(cfg.features.save_steps)),
            self.extractor.layers,
            self.extractor.channels,
            backbone.model_id,
            save_steps=self.extractor.save_steps,
        )
        self.network = network.to(backbone.device).eval()
        self.meta = meta

    @classmethod
    def from_checkpoint(
        cls,
        path: Union[str, os.PathLike],
        device: Optional[str] = None,
        overrides: Sequence[str] = (),
        backbone: Optional[Backbone] = None,
    ):
        """Load a checkpoint with the backbone it names (or ``backbone``, already loaded)."""
        network, meta = load_pretrained(path)
        extra = list(overrides) + ([f"backbone.device={device}"] if device else [])
        cfg = inference_config(meta, extra)
        backbone = backbone or load_backbone(cfg)
        return cls(cfg, backbone, network, meta)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: Union[str, os.PathLike],
        device: Optional[str] = None,
        overrides: Sequence[str] = (),
        backbone: Optional[Backbone] = None,
        revision: Optional[str] = None,
        cache_dir: Optional[Union[str, os.PathLike]] = None,
        local_files_only: bool = False,
    ):
        """Load trained weights by any name: a folder written by :meth:`save_pretrained`, a
        ``.safetensors`` or ``.ckpt`` file, a published reference network (``dhf-sd15``,
        ``dhf-sd15-onestep``, ``dhf-sd21``: downloaded once, converted, cached) or a hub repo id
        (``owner/name``). ``revision``, ``cache_dir`` (the Hugging Face cache) and
        ``local_files_only`` go to the hub download."""

        network, meta = load_pretrained(
            name_or_path, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only
        )
        extra = list(overrides) + ([f"backbone.device={device}"] if device else [])
        cfg = inference_config(meta, extra)
        return cls(cfg, backbone or load_backbone(cfg), network, meta)

    def _meta(self) -> CheckpointMeta:
        return self.meta or CheckpointMeta(
            self.cfg, list(self.network.feature_dims), self.extractor.layers, list(self.extractor.save_steps)
        )

    def save_pretrained(
        self, folder: Union[str, os.PathLike], metrics: Optional[dict] = None, picture: Optional[Callable] = None
    ) -> str:
        """Write ``model.safetensors`` + ``config.json`` + a model card (README.md; with the
        mixing-weight picture drawn by ``picture``, as :class:`hyperfeat.api.Hyperfeatures` does)
        into ``folder``; :meth:`from_pretrained` loads it back. ``metrics`` (name → value) go into
        the card and the config. Returns the folder."""
        from hyperfeat.model.pretrained import save_pretrained

        return str(save_pretrained(folder, self.network, self._meta(), metrics=metrics, picture=picture))

    def push_to_hub(
        self,
        repo_id: str,
        private: Optional[bool] = None,
        token: Optional[str] = None,
        metrics: Optional[dict] = None,
        commit_message: str = "Upload hyperfeat model",
    ):
        """Save (as :meth:`save_pretrained`) and upload to the hub repo ``repo_id`` (created if
        needed; log in first with ``hf auth login`` or pass ``token``). Returns the commit info."""
        import tempfile

        from hyperfeat.model.pretrained import push_to_hub

        with tempfile.TemporaryDirectory(prefix="hyperfeat-push-") as folder:
            self.save_pretrained(folder, metrics=metrics)
            return push_to_hub(folder, repo_id, private=private, token=token, commit_message=commit_message)

    def identity(self) -> dict:
        """Every value that decides the raw maps (with the backbone's actual compute dtype), the
        ``aggregation`` block and the sha256 of the network's weights."""
        identity = self.backbone_identity()
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
