"""The LightningModule: frozen backbone, trainable aggregation network, correspondence loss."""

from __future__ import annotations

from typing import Any, Optional

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from hyperfeat.eval.metrics.pck import PCK
from hyperfeat.eval.semantic import update_pck
from hyperfeat.model.aggregation import AggregationNetwork
from hyperfeat.model.backbone import Backbone, load_backbone
from hyperfeat.model.checkpoint import CheckpointMeta, build_network
from hyperfeat.model.features import FeatureExtractor
from hyperfeat.train.losses import correspondence_loss


class HyperfeatModule(L.LightningModule):
    """Trains only ``self.aggregation``; the backbone is frozen and never enters a checkpoint.

    A batch holds pairs: ``source_image``/``target_image`` (B, 3, L, L) in [-1, 1] or, when
    features are cached, ``source_raw``/``target_raw`` (B, S, C, R, R), plus the points.
    """

    def __init__(self, cfg: DictConfig, backbone: Optional[Backbone] = None):
        super().__init__()
        self.cfg = cfg
        self.save_hyperparameters({"config": OmegaConf.to_container(cfg, resolve=True)})
        self.backbone = backbone or load_backbone(cfg)  # a dataclass, not a submodule: not saved
        self.extractor = FeatureExtractor(self.backbone, cfg.features)
        self.aggregation: AggregationNetwork = build_network(cfg, self.extractor.channels)
        self.val_pck = PCK(alphas=tuple(float(a) for a in cfg.eval.alphas))

    # ------------------------------------------------------------------ features
    def _move_backbone(self, device: Optional[torch.device] = None) -> None:
        """Put the frozen backbone on ``device`` (default: the module's device)."""
        device = torch.device(device) if device is not None else self.device
        if self.backbone.device != device:
            for part in (self.backbone.unet, self.backbone.vae, self.backbone.text_encoder):
                part.to(device)
            self.backbone.device = device
            self.extractor._cond_cache.clear()

    def raw_features(self, batch: dict, side: str) -> torch.Tensor:
        """(B, S, C, R, R) raw maps of the ``side`` ("source"/"target") images, cached or computed."""
        if f"{side}_raw" in batch:
            return batch[f"{side}_raw"].float()
        self._move_backbone()
        return self.extractor.run(batch[f"{side}_image"])

    def describe_pair(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Hyperfeatures (B, D, R, R) of sources and targets, one backbone batch for both."""
        if "source_raw" not in batch:
            self._move_backbone()
            images = torch.cat([batch["source_image"], batch["target_image"]])
            raw = self.extractor.run(images)
        else:
            raw = torch.cat([self.raw_features(batch, "source"), self.raw_features(batch, "target")])
        desc = self.aggregation(raw.to(self.device))
        return desc.chunk(2)

    # ------------------------------------------------------------------ steps
    def _loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        src, tgt = self.describe_pair(batch)
        loss = correspondence_loss(src, tgt, batch["source_points"], batch["target_points"], batch["valid"],
                                   load_size=int(self.cfg.features.load_size),
                                   temperature=float(self.cfg.aggregation.temperature))
        return loss, src, tgt

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, _, _ = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["valid"].shape[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, src, tgt = self._loss(batch)
        self.log("val/loss", loss, batch_size=batch["valid"].shape[0], sync_dist=True)
        update_pck(self.val_pck, batch, src, tgt, int(self.cfg.features.load_size),
                   method=str(self.cfg.eval.matcher), temperature=float(self.cfg.eval.softmax_temperature))

    def on_validation_epoch_end(self) -> None:
        results = self.val_pck.compute()
        self.val_pck.reset()
        for key, value in flat_overall(results).items():
            # PCK.compute() already gathered every rank's pairs: the values agree across ranks, and
            # sync_dist keeps them (and ModelCheckpoint's choice) identical everywhere
            self.log(f"val/{key}", value, prog_bar=key == "pck@0.1", sync_dist=True)
        self._log_mixing_weights()

    def _log_mixing_weights(self) -> None:
        logger = self.logger
        if logger is None or type(logger).__name__ != "WandbLogger" or self.global_rank != 0:
            return
        from hyperfeat.viz.common import figure_to_array
        from hyperfeat.viz.mixing import label_timestep_values, plot_mixing_weights

        feats = self.cfg.features
        values = label_timestep_values(str(feats.mode), int(feats.num_steps), self.extractor.save_steps)
        fig = plot_mixing_weights(self.aggregation.mixing_grid().detach().cpu(), self.extractor.save_steps,
                                  self.extractor.layer_names, channels=self.extractor.channels,
                                  timestep_values=values)
        logger.log_image("mixing_weights", [figure_to_array(fig)], step=self.global_step)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.aggregation.parameters(), lr=float(self.cfg.train.lr),
                                 weight_decay=float(self.cfg.train.weight_decay))

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_meta(self) -> CheckpointMeta:
        return CheckpointMeta(self.cfg, self.extractor.channels, self.extractor.layers, self.extractor.save_steps)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["hyperfeat"] = self.checkpoint_meta().to_dict()




def flat_overall(results: dict) -> dict[str, float]:
    """The overall numbers of a PCK result as flat floats, plus ``pck@α``: bbox when boxes exist, else img."""
    flat = {}
    for key, value in results.items():
        if key.startswith("cat/"):
            continue
        if isinstance(value, (float, int)) or (torch.is_tensor(value) and value.numel() == 1):
            flat[key] = float(value)
    for key in list(flat):
        if key.startswith("pck_img@") and not key.endswith("per_image"):
            alpha = key.split("@", 1)[1]
            bbox = flat.get(f"pck_bbox@{alpha}")
            flat[f"pck@{alpha}"] = bbox if bbox is not None and bbox == bbox else flat[key]
    return flat
