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
from hyperfeat.io import atomic_save, safe_torch_load
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


def non_finite(tensors: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors of ``tensors`` that hold NaN or inf: every load of
    weights checks them (a non-finite network maps every point to the same place)."""
    return [
        k
        for k, v in tensors.items()
        if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]


def check_saved_config(config: Any, source: str) -> None:
    """The blocks a loader builds the network from, in a saved config (a checkpoint's, a
    ``config.json``): mappings, with positive integers where the network needs them. The rest is
    checked by :func:`hyperfeat.config.validate_config` once the config is composed."""
    if not isinstance(config, dict):
        raise CheckpointError(f"{source}: 'config' must be a mapping of config blocks; got {type(config).__name__}")
    for block in ("backbone", "features", "aggregation"):
        if not isinstance(config.get(block), dict):
            raise CheckpointError(
                f"{source}: config.{block} must be a mapping of settings; got {str(config.get(block))[:60]!r}"
            )
    for block, key in (
        ("aggregation", "projection_dim"),
        ("aggregation", "num_norm_groups"),
        ("features", "num_steps"),
    ):
        value = config[block].get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CheckpointError(f"{source}: config.{block}.{key} must be a positive integer; got {value!r}")
    steps = config["features"].get("save_steps")
    if (
        not isinstance(steps, list)
        or not steps
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in steps)
    ):
        raise CheckpointError(
            f"{source}: config.features.save_steps must be a non-empty list of integers; got {steps!r}"
        )


def _read(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    ckpt = safe_torch_load(path, "checkpoint", CheckpointError)  # never runs code from the file
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

    The file is read with :func:`hyperfeat.io.safe_torch_load` (tensors and plain containers
    only): a crafted file cannot run code, whichever command loads it. Commands load weights
    through :func:`hyperfeat.model.pretrained.load_pretrained`, which also takes a saved
    safetensors folder or file, a published name or a hub id, and calls this for a ``.ckpt``."""
    ckpt = _read(path)
    info = ckpt["hyperfeat"]
    missing = [
        k for k in ("config", "feature_dims", "layers", "save_steps") if not isinstance(info, dict) or k not in info
    ]
    if missing:
        raise CheckpointError(
            f"checkpoint {path} lacks metadata {missing} in its 'hyperfeat' entry "
            f"(written by other software or damaged)"
        )
    from hyperfeat.config import check_no_interpolation

    check_no_interpolation(info["config"], f"checkpoint {path}")  # saved resolved: a ${…} was put there by hand
    check_saved_config(info["config"], f"checkpoint {path}")
    try:
        meta = CheckpointMeta(
            config=OmegaConf.create(info["config"]),
            feature_dims=[int(c) for c in info["feature_dims"]],
            layers=[(int(i), int(j)) for i, j in info["layers"]],
            save_steps=[int(s) for s in info["save_steps"]],
        )
    except Exception as err:  # wrong types in the metadata
        raise CheckpointError(f"checkpoint {path} has malformed metadata: {type(err).__name__}: {err}") from None
    network = build_network(meta.config, meta.feature_dims)
    state = {k[len(STATE_PREFIX) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(STATE_PREFIX)}
    bad = non_finite(state)
    if bad:
        raise CheckpointError(f"checkpoint {path} holds non-finite (NaN/inf) weights in {bad[:3]}: it is unusable")
    try:
        network.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {path} does not fit its own config: {err}") from err
    network.eval()
    return network, meta


# ------------------------------------------------------------------ identity
# Config keys that do not change what a run's weights mean: where files go, how fast or on which
# device it runs, how long it goes on, how it is evaluated. Every other key is the identity.
RUNTIME_KEYS = (
    "paths",
    "logger",
    "eval",
    "video",
    "task",
    "checkpoint",
    "web",
    "backbone.device",
    "backbone.dtype",
    "backbone.local_files_only",
    "backbone.attention",
    "backbone.compile",
    "features.streaming",
    "features.batch_size",
    "train.max_steps",
    "train.resume",
    "train.num_workers",
    "train.accelerator",
    "train.devices",
    "train.strategy",
    "train.num_nodes",
    "train.log_every_n_steps",
    "train.val_every_n_steps",
    "train.val_max_pairs",
    "train.cache_features",
    "train.cache_dir",
    "train.checkpoint_every_n_steps",
    "train.monitor",
)
INFERENCE_SCOPE = ("backbone", "features", "aggregation.projection_dim", "aggregation.num_norm_groups")


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if OmegaConf.is_config(tree):
        tree = OmegaConf.to_container(tree, resolve=True)
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _under(key: str, roots: Sequence[str]) -> bool:
    return any(key == r or key.startswith(r + ".") for r in roots)


def _normal(key: str, value: Any) -> Any:
    if key == "backbone.model":
        from hyperfeat.model.backbone import PRESET_MODELS

        return PRESET_MODELS.get(str(value), str(value))
    return value


def identity_mismatches(saved: Any, current: Any, scope: Optional[Sequence[str]] = None) -> list[tuple[str, Any, Any]]:
    """(key, saved value, current value) for every identity key on which two configs differ.

    Runtime keys (:data:`RUNTIME_KEYS`) and data paths (``*root``) are left out; ``scope``
    restricts the comparison to some blocks/keys. Keys the saved config lacks (older files) are
    not compared."""
    old, new = _flatten(saved), _flatten(current)
    diffs = []
    for key, value in old.items():
        if _under(key, RUNTIME_KEYS) or key.split(".")[-1].endswith("root"):
            continue
        if scope is not None and not _under(key, scope):
            continue
        if key in new and _normal(key, value) != _normal(key, new[key]):
            diffs.append((key, value, new[key]))
    return diffs


def check_identity(
    saved: Any, current: DictConfig, source: str, fresh_hint: str, scope: Optional[Sequence[str]] = None
) -> None:
    """Raise CheckpointError naming every identity key on which ``current`` differs from the
    config ``saved`` in a checkpoint, unless the key is listed in ``checkpoint.allow_mismatch``."""
    allow = [str(k) for k in (OmegaConf.select(current, "checkpoint.allow_mismatch") or [])]
    diffs = [d for d in identity_mismatches(saved, current, scope) if not _under(d[0], allow)]
    if diffs:
        listed = "; ".join(f"{k}: {old!r} in the checkpoint, {new!r} now" for k, old, new in diffs)
        keys = ",".join(k for k, _, _ in diffs)
        raise CheckpointError(
            f"{source} was made with another config ({listed}); {fresh_hint}, or accept the difference "
            f"deliberately with checkpoint.allow_mismatch=[{keys}]"
        )


def check_compatible(
    meta: CheckpointMeta,
    layers: Sequence[tuple[int, int]],
    feature_dims: Sequence[int],
    model_id: str,
    source: str = "checkpoint",
    save_steps: Optional[Sequence[int]] = None,
) -> None:
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
    keys (device, dtype, batch sizes) come from the defaults and the overrides. An override (or a
    ``backbone=``/``experiment=`` preset) that changes what the descriptors mean (backbone id,
    revision, tiny seed, plan, labels, layers, latent, resolutions) is an error naming the keys,
    unless listed in ``checkpoint.allow_mismatch`` (e.g. backbone.model for a local copy of the
    same weights).
    """
    from hyperfeat.config import GROUPS, load_config

    overrides = list(overrides or [])
    saved = OmegaConf.to_container(meta.config, resolve=True)
    identity = {key: dict(saved[key]) for key in ("backbone", "features", "aggregation") if key in saved}
    for key in RUNTIME_KEYS:  # where and how fast it runs comes from here, not from the training machine
        block, _, leaf = key.partition(".")
        if block in identity and leaf:
            identity[block].pop(leaf, None)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        handle.write(OmegaConf.to_yaml(OmegaConf.create(identity)))
        tmp = handle.name
    try:
        cfg = load_config(tmp, overrides)
    finally:
        os.remove(tmp)
    hint = "leave the override out to use the checkpoint's own value"
    check_identity(identity, cfg, "the checkpoint", hint, scope=INFERENCE_SCOPE)
    # presets are applied before the checkpoint's blocks: what they set must agree with it
    presets = [o for o in overrides if o.split("=", 1)[0].strip().lstrip("+") in GROUPS and not o.startswith("data=")]
    if presets:
        chosen = load_config(None, presets + [o for o in overrides if o.startswith("checkpoint.")])
        base = _flatten(load_config(None, []))
        set_by_preset = {k: v for k, v in _flatten(chosen).items() if base.get(k) != v}
        check_identity(
            identity,
            OmegaConf.merge(chosen, {}),
            f"the checkpoint (given with {' '.join(presets)})",
            "presets do not apply on top of a checkpoint; leave the preset out",
            scope=[k for k in set_by_preset if _under(k, INFERENCE_SCOPE)] or ["-"],
        )
    return cfg
