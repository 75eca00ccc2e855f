"""Import of published aggregation checkpoints (the reference implementation's format).

The published file is a ``torch.save`` dict whose ``aggregation_network`` entry is a state dict
with ``mixing_weights`` (S·L values, timestep-major: index s·L + l) and
``bottleneck_layers.<l>.0.{conv1,conv2,conv3,shortcut}.weight`` / ``….norm.{weight,bias}``.
Its parameter names are ours, so the import is a checked copy plus the metadata a hyperfeat
checkpoint carries (layers, timestep labels, backbone).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional, Sequence

import torch
from omegaconf import DictConfig

from hyperfeat.errors import CheckpointError
from hyperfeat.io import safe_torch_load
from hyperfeat.model.checkpoint import CheckpointMeta, build_network, save_checkpoint

SD_DECODER_LAYERS = [(i, j) for i in range(4) for j in range(3)]


_BOTTLENECK = re.compile(
    r"^bottleneck_layers\.(\d+)\.0\.(conv1|conv2|conv3|shortcut)\.(weight|norm\.weight|norm\.bias)$"
)


def read_official(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """The aggregation state dict and the saved config (``{}`` if none) of a published file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"published checkpoint not found: {path}")
    blob = safe_torch_load(path, "published checkpoint", CheckpointError)  # never runs code from the file
    if not isinstance(blob, dict) or "aggregation_network" not in blob:
        found = list(blob)[:10] if isinstance(blob, dict) else type(blob).__name__
        raise CheckpointError(
            f"{path} has no 'aggregation_network' entry (found {found}); is it a published checkpoint?"
        )
    config = blob.get("config") or {}
    return dict(blob["aggregation_network"]), dict(config) if isinstance(config, dict) else {}


def official_feature_dims(state: dict[str, torch.Tensor], source: str) -> list[int]:
    """Per-layer input channels, read from each bottleneck's conv1 weight (D/4, C, 1, 1)."""
    layer_ids = sorted({int(m.group(1)) for key in state if (m := _BOTTLENECK.match(key))})
    if not layer_ids or layer_ids != list(range(len(layer_ids))):
        raise CheckpointError(f"{source}: bottleneck_layers.<l> must be numbered 0..L-1; found {layer_ids}")
    return [int(state[f"bottleneck_layers.{l}.0.conv1.weight"].shape[1]) for l in layer_ids]


def convert_official(
    official_path: str | os.PathLike,
    out_path: str | os.PathLike,
    cfg: DictConfig,
    layers: Optional[Sequence[tuple[int, int]]] = None,
) -> CheckpointMeta:
    """Convert a published file into a hyperfeat checkpoint written at ``out_path``.

    ``cfg`` gives the feature config the network was trained with (save_steps, num_steps,
    projection_dim, backbone); the published file's own config, when it has one, must agree.
    """
    source = str(official_path)
    state, saved = read_official(official_path)
    unexpected = [k for k in state if k not in ("mixing_weights", "logit_scale") and not _BOTTLENECK.match(k)]
    if unexpected:
        raise CheckpointError(f"{source}: unexpected parameters {unexpected[:5]}")
    if "mixing_weights" not in state:
        raise CheckpointError(f"{source}: no mixing_weights in aggregation_network")
    dims = official_feature_dims(state, source)
    num_layers = len(dims)
    num_weights = int(state["mixing_weights"].numel())
    save_steps = [int(s) for s in cfg.features.save_steps]
    if "save_timestep" in saved and list(saved["save_timestep"]) != save_steps:
        raise CheckpointError(
            f"{source} was trained with save_timestep {list(saved['save_timestep'])} but the config has "
            f"features.save_steps={save_steps}; pass features.save_steps=... to match"
        )
    if num_weights != num_layers * len(save_steps):
        raise CheckpointError(
            f"{source}: {num_weights} mixing weights for {num_layers} layers means "
            f"{num_weights / num_layers:g} timesteps, but features.save_steps has {len(save_steps)}: {save_steps}"
        )
    projection = int(state["bottleneck_layers.0.0.conv3.weight"].shape[0])
    if projection != int(cfg.aggregation.projection_dim):
        raise CheckpointError(
            f"{source} has projection_dim {projection} but aggregation.projection_dim={cfg.aggregation.projection_dim}"
        )
    if layers is None:
        if cfg.features.layers != "all":
            layers = [(int(i), int(j)) for i, j in cfg.features.layers]
        elif num_layers == len(SD_DECODER_LAYERS):
            layers = SD_DECODER_LAYERS
        else:
            raise CheckpointError(
                f"{source} has {num_layers} layers, not the 12 of an SD decoder; give features.layers=[[i,j],...]"
            )
    if len(layers) != num_layers:
        raise CheckpointError(f"{source} has {num_layers} layers but features.layers lists {len(layers)}")

    network = build_network(cfg, dims)
    ours = {k: v for k, v in state.items() if k != "logit_scale"}
    try:
        network.load_state_dict(ours)
    except RuntimeError as err:
        raise CheckpointError(f"{source}: parameters do not fit the aggregation network: {err}") from err
    meta = CheckpointMeta(config=cfg, feature_dims=dims, layers=list(layers), save_steps=save_steps)
    save_checkpoint(out_path, network, meta)
    return meta


def implied_overrides(saved: dict) -> list[str]:
    """Config overrides that a published file's own saved config implies (before the user's)."""
    implied = []
    if "save_timestep" in saved:
        implied.append(f"features.save_steps={list(saved['save_timestep'])}")
    if "num_timesteps" in saved:
        implied.append(f"features.num_steps={int(saved['num_timesteps'])}")
    if "projection_dim" in saved:
        implied.append(f"aggregation.projection_dim={int(saved['projection_dim'])}")
    if "output_resolution" in saved:
        implied.append(f"features.output_resolution={int(saved['output_resolution'])}")
    return implied
