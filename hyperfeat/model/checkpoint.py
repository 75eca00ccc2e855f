"""Aggregation checkpoints: what they hold, how they are written and read.

A checkpoint holds the aggregation network and the full config (backbone id, layers, timestep
labels, resolutions), never the frozen backbone. Training writes Lightning checkpoints; their
``state_dict`` keys of the network start with ``aggregation.`` and the ``hyperfeat`` entry holds
the metadata below. ``convert-official`` writes the same structure, so every checkpoint loads
through :func:`load_checkpoint`.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from omegaconf import DictConfig, OmegaConf

from hyperfeat.errors import CheckpointError
from hyperfeat.io import atomic_save
from hyperfeat.model.aggregation import AggregationNetwork

STATE_PREFIX = "aggregation."


FORMAT_VERSION = 1




@dataclass
class CheckpointMeta:
    """What a checkpoint says about the features its network was made for."""

    config: DictConfig
    feature_dims: list[int]
    layers: list[tuple[int, int]]
    save_steps: list[int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "config": OmegaConf.to_container(self.config, resolve=True),
            "feature_dims": list(self.feature_dims),
            "layers": [list(ij) for ij in self.layers],
            "save_steps": list(self.save_steps),
        }




def build_network(cfg: DictConfig, feature_dims: Sequence[int]) -> AggregationNetwork:
    return AggregationNetwork(
        feature_dims=feature_dims,
        num_timesteps=len(cfg.features.save_steps),
        projection_dim=int(cfg.aggregation.projection_dim),
        num_norm_groups=int(cfg.aggregation.num_norm_groups),
    )




def save_checkpoint(path: str | os.PathLike, network: AggregationNetwork, meta: CheckpointMeta) -> None:
    """Write a stand-alone inference checkpoint (same layout as a training checkpoint)."""
    state = {STATE_PREFIX + k: v.detach().cpu() for k, v in network.state_dict().items()}
    atomic_save({"hyperfeat": meta.to_dict(), "state_dict": state}, path)




def _read(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err} (corrupt or not a torch file?)") from err
    if not isinstance(ckpt, dict) or "hyperfeat" not in ckpt or "state_dict" not in ckpt:
        keys = list(ckpt)[:10] if isinstance(ckpt, dict) else type(ckpt).__name__
        hint = ""
        if isinstance(ckpt, dict) and "aggregation_network" in ckpt:
            hint = " It looks like a published reference checkpoint: import it with `hyperfeat convert-official`."
        raise CheckpointError(
            f"{path} is not a hyperfeat checkpoint (expected keys 'hyperfeat' and 'state_dict'; found {keys}).{hint}"
        )
    return ckpt




def load_checkpoint(path: str | os.PathLike) -> tuple[AggregationNetwork, CheckpointMeta]:
    """Read a checkpoint into a network (eval mode, CPU) and its metadata.

    Also takes a saved safetensors folder or file, a published name or a hub id (see
    :func:`hyperfeat.model.pretrained.load_pretrained`)."""
    from hyperfeat.model.pretrained import is_pretrained_spec, load_pretrained

    if is_pretrained_spec(path):
        return load_pretrained(path)
    ckpt = _read(path)
    info = ckpt["hyperfeat"]
    meta = CheckpointMeta(
        config=OmegaConf.create(info["config"]),
        feature_dims=[int(c) for c in info["feature_dims"]],
        layers=[(int(i), int(j)) for i, j in info["layers"]],
        save_steps=[int(s) for s in info["save_steps"]],
    )
    network = build_network(meta.config, meta.feature_dims)
    state = {k[len(STATE_PREFIX):]: v for k, v in ckpt["state_dict"].items() if k.startswith(STATE_PREFIX)}
    try:
        network.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {path} does not fit its own config: {err}") from err
    network.eval()
    return network, meta




def check_compatible(meta: CheckpointMeta, layers: Sequence[tuple[int, int]], feature_dims: Sequence[int],
                     model_id: str, source: str = "checkpoint",
                     save_steps: Optional[Sequence[int]] = None) -> None:
    """Raise CheckpointError when a checkpoint was made for other layers, channel counts or
    timestep labels (its mixing weights belong to those labels)."""
    if save_steps is not None and [int(s) for s in save_steps] != [int(s) for s in meta.save_steps]:
        raise CheckpointError(
            f"{source} was trained on timestep labels features.save_steps={list(meta.save_steps)} but the "
            f"feature config has {[int(s) for s in save_steps]}: its mixing weights belong to its own labels"
        )
    if list(meta.layers) != list(layers):
        raise CheckpointError(
            f"{source} was trained on layers {meta.layers} but the feature config selects {list(layers)}"
        )
    if list(meta.feature_dims) != list(feature_dims):
        ckpt_model = meta.config.backbone.model if "backbone" in meta.config else "?"
        raise CheckpointError(
            f"{source} expects layer channels {meta.feature_dims} (backbone {ckpt_model!r}) but backbone "
            f"{model_id!r} gives {list(feature_dims)}: it was made for another backbone"
        )




def inference_config(meta: CheckpointMeta, overrides: Optional[Sequence[str]] = None) -> DictConfig:
    """The defaults with the checkpoint's backbone/features/aggregation blocks, then ``overrides``.

    Only what defines the descriptors comes from the checkpoint; data, eval, video and runtime
    keys (device, dtype, batch sizes) come from the defaults and the overrides. Keys that change
    the descriptors may be overridden too, e.g. backbone.model to a local copy of the same weights.
    """
    from hyperfeat.config import load_config

    saved = OmegaConf.to_container(meta.config, resolve=True)
    identity = {key: saved[key] for key in ("backbone", "features", "aggregation") if key in saved}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        handle.write(OmegaConf.to_yaml(OmegaConf.create(identity)))
        tmp = handle.name
    try:
        return load_config(tmp, list(overrides or []))
    finally:
        os.remove(tmp)
