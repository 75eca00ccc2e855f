"""Configuration: OmegaConf YAML with presets and ``key=value`` overrides.

Composition order (later wins):
  1. ``configs/default.yaml``
  2. group presets: ``backbone=NAME``, ``data=NAME`` (from an experiment's ``defaults:`` first,
     then from the command line)
  3. the experiment preset's body (``experiment=NAME``)
  4. ``--config FILE``
  5. ``key=value`` overrides

Every key must exist in the defaults (or in the chosen data preset, which replaces the
``data`` block whole); an unknown key is a :class:`ConfigError` that lists the valid ones.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hyperfeat.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # package data: ships inside the wheel
_CHECKOUT = Path(__file__).resolve().parents[1]


def base_dir() -> Path:
    """The folder relative paths of the config are taken from: the project checkout when
    hyperfeat runs from one (so ``../shared/data`` means the data beside the checkout), else the
    current folder (an installed package)."""
    return _CHECKOUT if (_CHECKOUT / "pyproject.toml").is_file() else Path.cwd()


GROUPS = ("backbone", "data", "experiment")
VIDEO_TASKS = ("davis", "jhmdb", "tapvid")


def preset_names(group: str) -> list[str]:
    """Names of the presets of ``group`` (the YAML files in ``configs/<group>/``)."""
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def _load_yaml(path: Path) -> DictConfig:
    """A YAML config file as a DictConfig. Outside the package's own presets, a resolver call
    (``${oc.env:VAR}``, ``${oc.decode:…}``, any ``${name:…}``) is refused: a received file must not
    read this machine's environment (see :func:`check_no_interpolation`)."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        cfg = OmegaConf.load(path)
    except Exception as err:  # yaml errors carry the line
        raise ConfigError(f"cannot parse config file {path}: {err}") from err
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    if CONFIG_DIR not in path.resolve().parents:
        check_no_interpolation(cfg, str(path), resolvers_only=True)
    return cfg


_INTERPOLATION = re.compile(r"(?<!\\)\$\{")  # ${…} not escaped as \${…}
_RESOLVER = re.compile(r"(?<!\\)\$\{\s*[\w.\-]+\s*:")  # ${name:…}: a resolver call


def check_no_interpolation(tree: Any, source: str, resolvers_only: bool = False) -> None:
    """Refuse ``${…}`` in a config read from a file, with one line naming ``source`` and the key.

    A checkpoint's config, a saved ``config.json`` or the metadata of a ``.safetensors`` is
    written resolved, so any interpolation in one was put there by hand: resolving it would copy
    an environment variable (``${oc.env:SECRET_TOKEN}``) into what ``export`` writes, or make a hub
    id of it. ``resolvers_only`` (a ``--config`` YAML file) still allows references to other keys
    (``${paths.data_root}/x``), which read nothing outside the config."""
    pattern = _RESOLVER if resolvers_only else _INTERPOLATION
    container = OmegaConf.to_container(tree, resolve=False) if OmegaConf.is_config(tree) else tree

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                walk(f"{prefix}[{i}]", item)
        elif isinstance(value, str) and pattern.search(value):
            what = "a resolver call" if resolvers_only else "an interpolation"
            raise ConfigError(
                f"{source}: {prefix or 'the top level'} holds {what} {value[:80]!r}; configs read "
                f"from files are not resolved (they could read this machine's environment): "
                f"write the value itself"
            )

    walk("", container)


def _load_preset(group: str, name: str) -> DictConfig:
    path = CONFIG_DIR / group / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown {group} preset {name!r}; valid presets: {', '.join(preset_names(group))}")
    return _load_yaml(path)


def _valid_keys_message(cfg: DictConfig, dotted_key: str) -> str:
    """'valid keys under <parent>: a, b, c' for the deepest existing parent of dotted_key."""
    parts = dotted_key.split(".")
    node: Any = cfg
    parent = []
    for part in parts[:-1]:
        if isinstance(node, DictConfig) and part in node:
            node = node[part]
            parent.append(part)
        else:
            break
    where = ".".join(parent) or "the top level"
    keys = sorted(str(k) for k in node.keys()) if isinstance(node, DictConfig) else []
    return f"valid keys under {where}: {', '.join(keys)}"


def _flatten_keys(cfg: DictConfig, prefix: str = "") -> Iterable[str]:
    for key in cfg.keys():
        full = f"{prefix}{key}"
        value = cfg._get_node(key)  # no interpolation resolution
        if isinstance(value, DictConfig):
            yield from _flatten_keys(value, full + ".")
        else:
            yield full


def _merge_checked(base: DictConfig, update: DictConfig, source: str) -> DictConfig:
    """Merge ``update`` into ``base``, rejecting keys ``base`` does not have."""
    for key in _flatten_keys(update):
        node: Any = base
        for part in key.split("."):
            if not isinstance(node, DictConfig):
                break  # below a leaf (e.g. `layers: all` replaced by a list): the value decides
            if part not in node:
                raise ConfigError(f"unknown config key {key!r} (from {source}); {_valid_keys_message(base, key)}")
            node = node._get_node(part)
    try:
        return OmegaConf.merge(base, update)
    except OmegaConfBaseException as err:
        raise ConfigError(f"bad config value from {source}: {err}") from err


def _parse_overrides(overrides: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    groups: dict[str, str] = {}
    rest: list[str] = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, value = item.split("=", 1)
        key = key.strip().lstrip("+")
        if key in GROUPS:
            groups[key] = value.strip()
        else:
            rest.append(f"{key}={value}")
    return groups, rest


def load_config(
    config_file: Optional[str | os.PathLike] = None,
    overrides: Sequence[str] = (),
) -> DictConfig:
    """Compose the config (see the module docstring). Returns a resolved, struct-mode DictConfig."""
    groups, dotlist = _parse_overrides(overrides)
    cfg = _load_yaml(CONFIG_DIR / "default.yaml")

    experiment = None
    selections: dict[str, str] = {}
    if "experiment" in groups:
        experiment = _load_preset("experiment", groups["experiment"])
        exp_defaults = experiment.pop("defaults", None) or {}
        selections.update({str(k): str(v) for k, v in exp_defaults.items()})
    selections.update({k: v for k, v in groups.items() if k != "experiment"})

    # task=davis|jhmdb|tapvid also picks the data preset of that name unless data= is given
    task_override = next((v.split("=", 1)[1] for v in dotlist if v.startswith("task=")), None)
    if task_override in VIDEO_TASKS and "data" not in groups:
        selections["data"] = task_override

    for group in ("backbone", "data"):
        if group not in selections:
            continue
        preset = _load_preset(group, selections[group])
        if group == "data":
            cfg.data = preset  # a data preset replaces the data block whole
        else:  # a backbone preset may also set features/aggregation keys
            cfg = _merge_checked(cfg, preset, f"{group}={selections[group]}")

    if experiment is not None:
        cfg = _merge_checked(cfg, experiment, f"experiment={groups['experiment']}")
    if config_file is not None:
        file_cfg = _load_yaml(Path(config_file))
        file_defaults = file_cfg.pop("defaults", None) or {}
        for group, name in file_defaults.items():
            if group == "data":
                cfg.data = _load_preset("data", str(name))
            elif group == "backbone":
                cfg = _merge_checked(cfg, _load_preset("backbone", str(name)), str(config_file))
        file_data = file_cfg.get("data")
        if isinstance(file_data, DictConfig) and str(file_data.get("name")) in preset_names("data"):
            cfg.data = _load_preset("data", str(file_data.name))  # then checked against that preset
        cfg = _merge_checked(cfg, file_cfg, str(config_file))
    if dotlist:
        try:
            update = OmegaConf.from_dotlist(list(dotlist))
        except OmegaConfBaseException as err:
            raise ConfigError(f"cannot parse overrides {list(dotlist)}: {err}") from err
        cfg = _merge_checked(cfg, update, "the command line")

    _resolve_paths(cfg)
    validate_config(cfg)
    OmegaConf.set_struct(cfg, True)
    return cfg


def _resolve_paths(cfg: DictConfig) -> None:
    """Resolve interpolations and make relative data paths relative to base_dir()."""
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(f"cannot resolve config: {err}") from err
    root = Path(cfg.paths.data_root)
    if not root.is_absolute():
        cfg.paths.data_root = str((base_dir() / root).resolve())
    for key in list(cfg.data.keys()):  # root, davis_root, …: relative to base_dir()
        value = cfg.data[key]
        if (key == "root" or str(key).endswith("_root")) and isinstance(value, str) and value != "generated":
            if not Path(value).is_absolute():
                cfg.data[key] = str((base_dir() / value).resolve())


def validate_config(cfg: DictConfig) -> None:
    """Check values whose errors would otherwise surface deep inside a run."""
    f = cfg.features
    if f.mode == "generation":
        raise ConfigError(
            "features.mode=generation samples new images from a prompt instead of describing given "
            "ones, so no command or training can use it; valid modes: inversion, noise "
            "(from Python, FeatureExtractor.generate() gives generated images with their maps)"
        )
    if f.mode not in ("inversion", "noise"):
        raise ConfigError(f"features.mode must be inversion or noise; got {f.mode!r}")
    if not isinstance(f.num_steps, int) or f.num_steps < 1:
        raise ConfigError(f"features.num_steps must be a positive integer; got {f.num_steps!r}")
    steps = list(f.save_steps) if isinstance(f.save_steps, ListConfig) else None
    if not steps:
        raise ConfigError(f"features.save_steps must be a non-empty list of labels; got {f.save_steps!r}")
    bad = [s for s in steps if not isinstance(s, int) or not 0 <= s < f.num_steps]
    if bad:
        raise ConfigError(
            f"features.save_steps labels must be integers in [0, {f.num_steps - 1}] "
            f"(features.num_steps={f.num_steps}); bad: {bad}"
        )
    if len(set(steps)) != len(steps):
        raise ConfigError(f"features.save_steps has repeated labels: {steps}")
    if f.latent not in ("sample", "mean"):
        raise ConfigError(f"features.latent must be sample or mean; got {f.latent!r}")
    for key in ("load_size", "image_size", "output_resolution", "batch_size"):
        value = f[key]
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"features.{key} must be a positive integer; got {value!r}")
    if f.image_size % 8:
        raise ConfigError(f"features.image_size must be a multiple of 8 (the VAE's factor); got {f.image_size}")
    layers = f.layers
    if not (layers == "all" or isinstance(layers, ListConfig)):
        raise ConfigError(f"features.layers must be 'all' or a list of [i, j]; got {layers!r}")
    if isinstance(layers, ListConfig):
        for item in layers:
            if not (isinstance(item, ListConfig) and len(item) == 2 and all(isinstance(v, int) for v in item)):
                raise ConfigError(f"features.layers entries must be [i, j] pairs of integers; got {item!r}")
    if cfg.aggregation.projection_dim % 4 or cfg.aggregation.projection_dim < 4:
        raise ConfigError(
            f"aggregation.projection_dim must be a positive multiple of 4; got {cfg.aggregation.projection_dim}"
        )
    if cfg.backbone.dtype not in ("auto", "float32", "float16", "bfloat16"):
        raise ConfigError(f"backbone.dtype must be auto, float32, float16 or bfloat16; got {cfg.backbone.dtype!r}")
    _check_number(cfg, "train.lr", float, low=0.0, strict=True)
    _check_number(cfg, "train.weight_decay", float, low=0.0)
    for key in (
        "train.max_steps",
        "train.pairs_per_step",
        "train.val_every_n_steps",
        "train.val_max_pairs",
        "train.log_every_n_steps",
        "eval.batch_size",
        "video.batch_size",
        "video.frame_size",
    ):  # null frame_size: the frames' own size; 0 is not a size
        _check_number(cfg, key, int, low=1)
    for key in (
        "train.num_workers",
        "train.seed",
        "train.checkpoint_every_n_steps",
        "features.seed",
        "backbone.tiny_seed",
    ):
        _check_number(cfg, key, int, low=0)
    _check_number(cfg, "aggregation.temperature", float, low=0.0, strict=True)
    _check_number(cfg, "features.guidance_scale", float, low=0.0)
    groups, dim = cfg.aggregation.num_norm_groups, cfg.aggregation.projection_dim
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1 or (dim // 4) % groups:
        raise ConfigError(
            f"aggregation.num_norm_groups must be a positive integer dividing projection_dim/4 = "
            f"{dim // 4} (group norm over D/4 and D channels); got {groups!r}"
        )
    device = str(cfg.backbone.device)
    if not (device in ("auto", "cpu", "mps") or device == "cuda" or device.startswith("cuda:")):
        raise ConfigError(f"backbone.device must be auto, cpu, cuda or cuda:N; got {device!r}")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                f"backbone.device={device} but CUDA is not available here; use backbone.device=cpu or auto"
            )
        if ":" in device and int(device.split(":", 1)[1] or 0) >= torch.cuda.device_count():
            raise ConfigError(f"backbone.device={device} but only {torch.cuda.device_count()} CUDA devices exist")
    allow = OmegaConf.select(cfg, "checkpoint.allow_mismatch")
    if allow is not None and not isinstance(allow, ListConfig):
        raise ConfigError(f"checkpoint.allow_mismatch must be a list of config keys; got {allow!r}")
    check_ranges(cfg)
    if cfg.task not in ("semantic",) + VIDEO_TASKS:
        raise ConfigError(f"task must be semantic, davis, jhmdb or tapvid; got {cfg.task!r}")
    validate_method_config(cfg)


def _check_timestep(value, key: str, allow_null: bool = False) -> None:
    if value is None and allow_null:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 999:
        raise ConfigError(
            f"{key} must be an integer timestep in [0, 999]{' or null' if allow_null else ''}; got {value!r}"
        )


def _check_positive(value, key: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key} must be an integer >= 1; got {value!r}")


def validate_method_config(cfg: DictConfig) -> None:
    """The ``features.ensemble_size``, ``dift``, ``ldm`` and ``compare`` values (the names in
    ``method`` and ``compare.methods`` are the describer registry's to check:
    :func:`hyperfeat.describe.registry.check_name`)."""
    _check_positive(cfg.features.ensemble_size, "features.ensemble_size")
    if cfg.features.ensemble_size > 1 and cfg.features.mode != "noise":
        raise ConfigError(
            f"features.ensemble_size > 1 averages noise draws, so it needs features.mode=noise; "
            f"got mode {cfg.features.mode!r} (valid: ensemble_size 1 with any mode)"
        )
    d = cfg.dift
    _check_timestep(d.timestep, "dift.timestep", allow_null=True)
    if d.up_ft_index is not None and (isinstance(d.up_ft_index, bool) or not isinstance(d.up_ft_index, int)):
        raise ConfigError(f"dift.up_ft_index must be an integer index of unet.up_blocks or null; got {d.up_ft_index!r}")
    _check_positive(d.ensemble_size, "dift.ensemble_size")
    _check_positive(d.image_size, "dift.image_size")
    if d.image_size % 8:
        raise ConfigError(f"dift.image_size must be a multiple of 8 (the VAE's factor); got {d.image_size}")
    if d.latent not in ("sample", "mean"):
        raise ConfigError(f"dift.latent must be sample or mean; got {d.latent!r}")
    if d.preprocess not in ("dift", "hyperfeat"):
        raise ConfigError(f"dift.preprocess must be dift (DIFT's own input) or hyperfeat; got {d.preprocess!r}")
    maps = cfg.raw.maps
    if not (
        maps == "all"
        or (
            isinstance(maps, ListConfig)
            and len(maps) > 0
            and all(isinstance(m, ListConfig) and len(m) == 3 and all(isinstance(v, int) for v in m) for m in maps)
        )
    ):
        raise ConfigError(f"raw.maps must be 'all' or a non-empty list of [label, i, j] integer triples; got {maps!r}")
    m = cfg.ldm
    _check_timestep(m.optimize_timestep, "ldm.optimize_timestep")
    _check_timestep(m.inference_timestep, "ldm.inference_timestep")
    for key in ("steps", "num_embeddings", "num_crops", "batch_size"):
        _check_positive(m[key], f"ldm.{key}")
    if not 0 < float(m.crop_fraction) <= 1:
        raise ConfigError(f"ldm.crop_fraction must be in (0, 1]; got {m.crop_fraction!r}")
    if not (
        isinstance(m.layers, ListConfig)
        and len(m.layers) > 0
        and all(isinstance(l, ListConfig) and len(l) == 2 and all(isinstance(v, int) for v in l) for l in m.layers)
    ):
        raise ConfigError(
            f"ldm.layers must be a non-empty list of [i, j] (up_blocks.<i>.attentions.<j>); got {m.layers!r}"
        )
    if cfg.compare.pairs_per_category is not None:
        _check_positive(cfg.compare.pairs_per_category, "compare.pairs_per_category")


def _check_number(
    cfg: DictConfig, key: str, kind: type, low: float, strict: bool = False, high: Optional[float] = None
) -> None:
    """``key`` must be a finite ``kind`` (int, or float where ints are fine too) >= ``low`` (> when
    strict) and <= ``high``."""
    value = OmegaConf.select(cfg, key)
    if value is None and key not in ("train.lr", "train.max_steps"):
        return
    check_number(key, value, kind, low, strict, high)


def check_number(
    key: str, value: Any, kind: type, low: Optional[float] = None, strict: bool = False, high: Optional[float] = None
) -> None:
    """The one range check of a numeric setting ``key``: ``value`` a finite ``kind`` (int, or float
    where ints are fine too) >= ``low`` (> when ``strict``) and <= ``high``; else one ConfigError line."""
    ok_type = isinstance(value, (int, float)) if kind is float else isinstance(value, int)
    if isinstance(value, bool) or not ok_type:
        raise ConfigError(f"{key} must be {'a number' if kind is float else 'an integer'}; got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number; got {value!r}")
    below = low is not None and (value < low or (strict and value == low))
    if below or (high is not None and value > high):
        bound = " and ".join(
            ([f"{'>' if strict else '>='} {low:g}"] if low is not None else [])
            + ([f"<= {high:g}"] if high is not None else [])
        )
        raise ConfigError(f"{key} must be {bound}; got {value!r}")


# Numeric settings checked by range when the config is composed: key → (kind, low, strict, high).
# A key the config lacks is skipped (so a block moved elsewhere is checked there).
RANGES: dict[str, tuple[type, float, bool, Optional[float]]] = {
    "video.temperature": (float, 0.0, True, None),
    "video.radius": (int, 0, False, None),
    "video.topk": (int, 1, False, None),
    "video.queue_length": (int, 0, False, None),
    "video.store_max_memory_mb": (float, 0.0, False, None),
    "eval.softmax_temperature": (float, 0.0, True, None),
    "web.max_upload_mb": (float, 0.0, True, None),
    "web.max_frames": (int, 1, False, None),
    "web.keep_uploads": (int, 1, False, None),
    "web.keep_videos": (int, 1, False, None),
    "web.keep_jobs": (int, 0, False, None),
}


def check_ranges(cfg: DictConfig, ranges: dict = RANGES) -> None:
    """Every key of ``ranges`` the config has: of its kind, finite, in its range (one line naming it)."""
    for key, (kind, low, strict, high) in ranges.items():
        _check_number(cfg, key, kind, low, strict=strict, high=high)


def feature_config_dict(cfg: DictConfig) -> dict:
    """The part of the config that determines descriptors: saved in checkpoints and cache keys."""
    return {
        "backbone": {"model": str(cfg.backbone.model), "tiny_seed": int(cfg.backbone.tiny_seed)},
        "features": OmegaConf.to_container(cfg.features, resolve=True),
        "aggregation": OmegaConf.to_container(cfg.aggregation, resolve=True),
    }


def block_value(block: Any, key: str, default: Any = None) -> Any:
    """``block[key]`` of a config block (DictConfig or dict) as plain Python (lists, dicts, resolved),
    ``default`` when the key is absent: how the data-set builders read their ``data`` block."""
    value = block.get(key, default) if key in block else default
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg)


def config_file_overrides(config_file: str | os.PathLike) -> list[str]:
    """A ``--config FILE`` as ``key=value`` overrides, for commands whose base config comes from a
    checkpoint: ``defaults:`` entries become ``group=name``, a ``data.name`` that is a preset
    becomes ``data=name``, every other leaf ``dotted.key=value`` (values as JSON, which YAML reads)."""
    import json

    file_cfg = _load_yaml(Path(config_file))
    items: list[str] = [f"{group}={name}" for group, name in (file_cfg.pop("defaults", None) or {}).items()]
    data = file_cfg.get("data")
    if isinstance(data, DictConfig) and str(data.get("name")) in preset_names("data"):
        items.append(f"data={data.name}")
    container = OmegaConf.to_container(file_cfg, resolve=False)

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        else:
            items.append(f"{prefix}={json.dumps(value)}")

    walk("", container)
    return items
