"""The LightningModule: frozen backbone, trainable aggregation network, correspondence loss."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from hyperfeat.errors import ConfigError
from hyperfeat.eval.metrics.pck import PCK
from hyperfeat.eval.semantic import update_pck
from hyperfeat.eval.settings import EvalSettings
from hyperfeat.model.aggregation import AggregationNetwork
from hyperfeat.model.backbone import Backbone, load_backbone
from hyperfeat.model.checkpoint import CheckpointMeta, build_network
from hyperfeat.model.features import FeatureExtractor
from hyperfeat.settings import from_block
from hyperfeat.train.losses import correspondence_loss, cycle_walk_loss, draw_shift, shift_maps


@dataclass(frozen=True)
class TrainSettings:
    """The numbers the training steps use: loss (load_size frame of the points, logit
    temperature), optimiser (AdamW lr, weight decay) and validation (PCK alphas, matcher)."""

    load_size: int
    temperature: float
    lr: float
    weight_decay: float
    alphas: tuple[float, ...]
    matcher: str
    softmax_temperature: float

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "TrainSettings":
        evaluation = EvalSettings.from_config(cfg)
        return cls(
            load_size=int(cfg.features.load_size),
            temperature=float(cfg.aggregation.temperature),
            lr=float(cfg.train.lr),
            weight_decay=float(cfg.train.weight_decay),
            alphas=evaluation.alphas,
            matcher=evaluation.matcher,
            softmax_temperature=evaluation.softmax_temperature,
        )


class HyperfeatModule(L.LightningModule):
    """Trains only ``self.aggregation``; the backbone is frozen and never enters a checkpoint.

    A batch holds pairs: ``source_image``/``target_image`` (B, 3, L, L) in [-1, 1] or, when
    features are cached, ``source_raw``/``target_raw`` (B, S, C, R, R), plus the points.
    """

    def __init__(
        self, extractor: FeatureExtractor, network: AggregationNetwork, settings: "TrainSettings", meta: CheckpointMeta
    ):
        """``extractor``: the frozen backbone's feature extractor (its plan and layers);
        ``network``: the aggregation network to train; ``settings``: loss, optimiser and
        validation numbers; ``meta``: what every checkpoint records (the full config)."""
        super().__init__()
        self.settings = settings
        self.meta = meta
        self.save_hyperparameters({"config": OmegaConf.to_container(meta.config, resolve=True)})
        self.backbone = extractor.backbone  # a dataclass, not a submodule: never saved
        self.extractor = extractor
        self.aggregation = network
        self.val_pck = PCK(alphas=settings.alphas)

    @classmethod
    def from_config(cls, cfg: DictConfig, backbone: Optional[Backbone] = None) -> "HyperfeatModule":
        """Assemble the parts ``cfg`` describes (the backbone is loaded unless given)."""
        extractor = FeatureExtractor(backbone or load_backbone(cfg), cfg.features)
        network = build_network(cfg, extractor.channels)
        meta = CheckpointMeta(cfg, extractor.channels, extractor.layers, extractor.save_steps)
        return cls(extractor, network, TrainSettings.from_config(cfg), meta)

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
        loss = correspondence_loss(
            src,
            tgt,
            batch["source_points"],
            batch["target_points"],
            batch["valid"],
            load_size=self.settings.load_size,
            temperature=self.settings.temperature,
        )
        return loss, src, tgt

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, _, _ = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["valid"].shape[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, src, tgt = self._loss(batch)
        self.log("val/loss", loss, batch_size=batch["valid"].shape[0], sync_dist=True)
        update_pck(
            self.val_pck,
            batch,
            src,
            tgt,
            self.settings.load_size,
            method=self.settings.matcher,
            temperature=self.settings.softmax_temperature,
        )

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
        from hyperfeat.viz.figures import figure_to_array
        from hyperfeat.viz.mixing import label_timestep_values, plot_mixing_weights

        feats = self.meta.config.features
        values = label_timestep_values(str(feats.mode), int(feats.num_steps), self.extractor.save_steps)
        fig = plot_mixing_weights(
            self.aggregation.mixing_grid().detach().cpu(),
            self.extractor.save_steps,
            self.extractor.layer_names,
            channels=self.extractor.channels,
            timestep_values=values,
        )
        logger.log_image("mixing_weights", [figure_to_array(fig)], step=self.global_step)

    def configure_optimizers(self):
        return torch.optim.AdamW(
            self.aggregation.parameters(), lr=self.settings.lr, weight_decay=self.settings.weight_decay
        )

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["hyperfeat"] = self.meta.to_dict()


_ONE_HOME = "train.walk_shift > 0 and data.mirrored_home: a walk ends on one home; set one of them"


@dataclass(frozen=True)
class WalkSettings:
    """The cycle-walk loss's numbers (``train.walk_*``): logit temperature, pooling of the maps
    before the walk, edge dropout, whether the walk goes across the clips of the batch, and how far
    its shifted home may move (0: the walk ends on frame 0 itself, or its mirror with
    ``data.mirrored_home``)."""

    temperature: float = 0.07  # logit temperature of the walk's transitions
    pool: int = 1  # average-pool the descriptor maps by this factor before the walk (n² memory)
    edge_dropout: float = 0.0  # fraction of forward transitions dropped (Jabri et al.'s edge dropout)
    across_batch: bool = False  # walk over the cells of every clip of the batch
    shift: float = 0.0  # > 0: end on frame 0's raw maps shifted by up to this share of the grid

    def __post_init__(self) -> None:
        if not 0.0 <= self.shift < 1.0:
            raise ConfigError(
                f"train.walk_shift must be in [0, 1) (a share of the grid; 0: no shift); got {self.shift}"
            )

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "WalkSettings":
        """The ``train.walk_*`` keys (a checkpoint's older config may lack some: the defaults here)."""
        return from_block(cls, cfg.train, prefix="walk_", where="train")


class VideoWalkModule(HyperfeatModule):
    """Self-supervised training on clips of unlabelled video: the contrastive random walk
    (:func:`hyperfeat.train.losses.cycle_walk_loss`) over the clip's frames. Same parts, same
    checkpoint as :class:`HyperfeatModule`; a batch holds ``frame_images`` (B, K, 3, L, L) or,
    cached, ``frame_raw`` (B, K, S, C, R, R), and with ``data.mirrored_home`` the clips' first frames
    mirrored (``mirrored_home_image`` / ``_raw``), where the walk then ends. Validation logs
    ``val/loss`` (no points to score)."""

    def __init__(
        self,
        extractor: FeatureExtractor,
        network: AggregationNetwork,
        settings: "TrainSettings",
        meta: CheckpointMeta,
        walk: Optional[WalkSettings] = None,
    ):
        super().__init__(extractor, network, settings, meta)
        self.walk = walk or WalkSettings.from_config(meta.config)
        self.shift_seed = int(OmegaConf.select(meta.config, "train.seed", default=0) or 0)  # the shifts' draws
        if self.walk.shift > 0 and OmegaConf.select(meta.config, "data.mirrored_home", default=False):
            raise ConfigError(_ONE_HOME)

    def _raw_maps(self, batch: dict, cached: str, images: str) -> Optional[torch.Tensor]:
        """Raw maps (N, S, C, R, R) of the batch's cached maps ``cached`` or, through the backbone,
        of its images ``images`` (leading dimensions flattened into N); None when it has neither."""
        if cached in batch:
            return batch[cached].float().flatten(0, -5)
        if images in batch:
            self._move_backbone()
            return self.extractor.run(batch[images].flatten(0, -4))  # (N, 3, L, L) → (N, S, C, R, R)
        return None

    def describe_clips(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Hyperfeatures (B, K, D, R, R) of every frame of the batch's clips, and their raw maps (B, K, S, C, R, R)."""
        b, k = (batch["frame_raw"] if "frame_raw" in batch else batch["frame_images"]).shape[:2]
        raw = self._raw_maps(batch, "frame_raw", "frame_images").to(self.device)  # (B·K, S, C, R, R)
        desc = self.aggregation(raw)  # (B·K, D, R, R)
        return desc.unflatten(0, (b, k)), raw.unflatten(0, (b, k))

    def describe_home(self, batch: dict) -> Optional[torch.Tensor]:
        """Hyperfeatures (B, D, R, R) of the clips' mirrored first frames; None when the batch has none."""
        raw = self._raw_maps(batch, "mirrored_home_raw", "mirrored_home_image")  # (B, S, C, R, R)
        return None if raw is None else self.aggregation(raw.to(self.device))

    def _walk_loss(self, batch: dict, rng: Optional[np.random.Generator] = None) -> torch.Tensor:
        """The walk over the batch's clips; ``rng`` draws the shift of a shifted home (``train.walk_shift``;
        None: seeded by ``train.seed``)."""
        desc, raw = self.describe_clips(batch)  # (B, K, D, R, R), (B, K, S, C, R, R)
        mirrored, shifted = self.describe_home(batch), None
        if self.walk.shift > 0:
            if mirrored is not None:
                raise ConfigError(_ONE_HOME)
            rng = np.random.default_rng(self.shift_seed) if rng is None else rng
            dy, dx = draw_shift(rng, min(desc.shape[-2:]), self.walk.pool, self.walk.shift)
            shifted = (self.aggregation(shift_maps(raw[:, 0], dy, dx)), dy, dx)  # (B, D, R, R) and the shift
        return cycle_walk_loss(
            desc,
            self.walk.temperature,
            self.walk.pool,
            self.walk.edge_dropout if self.training else 0.0,
            across_batch=self.walk.across_batch and self.training,
            mirrored_home=mirrored,
            shifted_home=shifted,
        )

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self._walk_loss(batch, np.random.default_rng([self.shift_seed, self.global_step]))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["video"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss = self._walk_loss(
            batch, np.random.default_rng([self.shift_seed, 1 << 20, batch_idx])
        )  # the same shifts each time
        self.log("val/loss", loss, batch_size=len(batch["video"]), sync_dist=True, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        self._log_mixing_weights()


def module_class(cfg: DictConfig) -> type:
    """The LightningModule that trains on the data set of ``cfg.data``: clips of unlabelled
    video → :class:`VideoWalkModule`, pairs (semantic or tracked frames) → :class:`HyperfeatModule`."""
    from hyperfeat.data.videos.temporal import CLIP_DATASETS

    return VideoWalkModule if str(cfg.data.get("name")) in CLIP_DATASETS else HyperfeatModule


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
