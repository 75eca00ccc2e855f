"""Every describer by one name: the one list that ``eval.py method=NAME``, ``eval.py --compare``,
``hyperfeat changes --describer NAME`` and the benchmarks read.

    from hyperfeat.describe import registry
    from hyperfeat.video.run import track

    d = registry.build("dift", ["backbone=sd21"])                    # DIFT, t = 261, up_blocks[1], 8 draws
    d = registry.build("raw", maps=[(49, (1, 0))])                   # one raw decoder map ("SD-Layer-4")
    d = registry.build("concat")                                     # every (label, layer) map, each L2-normalised
    d = registry.build("pruned", checkpoint="checkpoints/last.ckpt")  # the map of the largest mixing weight
    d = registry.build("hyperfeatures", checkpoint="checkpoints/last.ckpt")  # the trained hyperfeatures
    d = registry.build("classical")                                  # weight-free: DAISY-style gradient/colour rings
    desc = d.describe(["cat1.jpg", "cat2.jpg"])                      # (2, D, h, w)
    tracks, visible = track(d, "clip.mp4", [[0, 120, 80]])           # any describer, any video task
    m = registry.build("ldm")                                        # Hedlin et al.: a matcher, not a describer

One calling convention for every name: ``build(name, overrides=(), *, cfg=None, checkpoint=None,
backbone=None, device=None, **settings)``.

- ``overrides``: ``key=value`` strings, as on the command line, composed over the name's own
  preset (:attr:`DescriberSpec.preset`); or ``cfg``, an already composed config, used as it is.
- ``checkpoint``: the trained weights of the names that need them (:data:`CHECKPOINT_METHODS`);
  their config is the checkpoint's own (``overrides`` on top), never ``cfg``.
- ``backbone``: an already loaded :class:`hyperfeat.model.backbone.Backbone` to share.
- ``settings``: values of the name's own config block (``dift.timestep``, ``raw.maps``, …),
  e.g. ``build("dift", timestep=51)``.

Everything built is a :class:`hyperfeat.describe.base.Describer` (``ldm`` is a matcher with
``match``), so it goes wherever a trained :class:`hyperfeat.api.Hyperfeatures` goes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

from omegaconf import DictConfig

from hyperfeat.config import load_config, validate_config
from hyperfeat.errors import ConfigError

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class DescriberSpec:
    """One registered name.

    ``make(cfg, backbone, weights)`` builds it from a composed config (``backbone`` is None
    or already loaded; ``weights``, the checkpoint's ``(network, meta)``, only for
    ``needs_checkpoint``). ``block`` is the config
    block its keyword settings go to. ``preset`` holds the overrides the registry composes before
    the caller's. ``dense``: it gives descriptor maps (``ldm`` only matches points)."""

    name: str
    summary: str
    make: Callable[[DictConfig, Any, Optional[tuple]], Any]
    needs_checkpoint: bool = False
    uses_backbone: bool = True
    dense: bool = True
    block: Optional[str] = None
    preset: tuple[str, ...] = ()


def _backbone(cfg: DictConfig, backbone):
    from hyperfeat.model.backbone import load_backbone

    return backbone if backbone is not None else load_backbone(cfg)


def _hyperfeatures(cfg, backbone, weights):
    from hyperfeat.describe.hyperfeatures import HyperfeatureDescriber

    network, meta = weights
    return HyperfeatureDescriber(cfg, _backbone(cfg, backbone), network, meta)


def _pruned(cfg, backbone, weights):
    from hyperfeat.describe.raw import RawDescriber, pruned_map

    network, meta = weights
    return RawDescriber(cfg, _backbone(cfg, backbone), [pruned_map(network, meta)], name="pruned")


def _dift(cfg, backbone, weights):
    from hyperfeat.describe.dift import DiftDescriber

    return DiftDescriber(cfg, _backbone(cfg, backbone))


def _raw(cfg, backbone, weights):
    from hyperfeat.describe.raw import RawDescriber

    return RawDescriber(cfg, _backbone(cfg, backbone))


def _concat(cfg, backbone, weights):
    from hyperfeat.describe.raw import RawDescriber

    cfg = cfg.copy()
    cfg.raw.maps = "all"
    return RawDescriber(cfg, _backbone(cfg, backbone), name="concat")


def _ldm(cfg, backbone, weights):
    from hyperfeat.describe.ldm import LdmMatcher

    return LdmMatcher(cfg, _backbone(cfg, backbone))


def _patches(cfg, backbone, weights):
    from hyperfeat.describe.patches import PatchDescriber

    return PatchDescriber(cfg)


def _classical(cfg, backbone, weights):
    from hyperfeat.describe.daisy import DaisyDescriber

    return DaisyDescriber(cfg)


def _local_stats(cfg, backbone, weights):
    from hyperfeat.describe.stats import LocalStatsDescriber

    return LocalStatsDescriber(cfg, resolution=min(32, int(cfg.features.load_size)))


SPECS: tuple[DescriberSpec, ...] = (
    DescriberSpec(
        "hyperfeatures", "trained diffusion hyperfeatures of a checkpoint", _hyperfeatures, needs_checkpoint=True
    ),
    DescriberSpec("dift", "DIFT: one noised UNet call, one decoder block (Tang et al. 2023)", _dift, block="dift"),
    DescriberSpec("raw", "raw decoder maps of the features plan (raw.maps; 'SD-Layer-4')", _raw, block="raw"),
    DescriberSpec("concat", "every saved (label, layer) map, each L2-normalised ('SD-Concat-All')", _concat),
    DescriberSpec("pruned", "the one raw map of a checkpoint's largest mixing weight", _pruned, needs_checkpoint=True),
    DescriberSpec(
        "ldm", "Hedlin et al.'s prompt-optimisation matcher (points, not maps)", _ldm, dense=False, block="ldm"
    ),
    DescriberSpec(
        "patches",
        "weight-free stand-in: fixed random projections of colour patches",
        _patches,
        uses_backbone=False,
        preset=("features.load_size=256",),
    ),
    DescriberSpec(
        "local-stats",
        "weight-free stand-in: local colour and texture statistics",
        _local_stats,
        uses_backbone=False,
        preset=("features.load_size=128",),
    ),
    DescriberSpec(
        "classical",
        "weight-free classical describer: DAISY-style rings of gradient and colour maps",
        _classical,
        uses_backbone=False,
        preset=("features.load_size=256",),
    ),
)

REGISTRY: dict[str, DescriberSpec] = {spec.name: spec for spec in SPECS}
NAMES: tuple[str, ...] = tuple(REGISTRY)
CHECKPOINT_METHODS: tuple[str, ...] = tuple(s.name for s in SPECS if s.needs_checkpoint)
TRAINING_FREE: tuple[str, ...] = tuple(s.name for s in SPECS if not s.needs_checkpoint)
DENSE: tuple[str, ...] = tuple(s.name for s in SPECS if s.dense)


def check_name(name: str, key: str = "method", dense: bool = False) -> DescriberSpec:
    """The spec of ``name``; a :class:`ConfigError` naming ``key`` and the valid names otherwise
    (``dense``: only names that give descriptor maps)."""
    valid = DENSE if dense else NAMES
    if name not in valid:
        raise ConfigError(f"{key} must be one of {', '.join(valid)}; got {name!r}")
    return REGISTRY[name]


def _load(checkpoint: PathLike):
    from hyperfeat.model.pretrained import load_pretrained

    return load_pretrained(checkpoint)


def _with_settings(cfg: DictConfig, spec: DescriberSpec, settings: dict) -> DictConfig:
    if not settings:
        return cfg
    if spec.block is None:
        raise ConfigError(f"describer {spec.name!r} takes no keyword settings; got {', '.join(sorted(settings))}")
    cfg = cfg.copy()
    block = cfg[spec.block]
    unknown = sorted(k for k in settings if k not in block)
    if unknown:
        raise ConfigError(
            f"{spec.name} settings {unknown} are not keys of the {spec.block} block; valid: {', '.join(block)}"
        )
    for key, value in settings.items():
        if value is None:
            continue
        if spec.block == "raw" and key == "maps" and value != "all":  # [(label, (i, j))] or [[label, i, j]]
            value = [[int(m[0]), *(int(v) for v in m[1])] if len(m) == 2 else [int(v) for v in m] for m in value]
        block[key] = value
    validate_config(cfg)
    return cfg


def require_checkpoint(name: str, checkpoint: Optional[PathLike]) -> None:
    """One line when ``name`` needs a checkpoint and none was given."""
    if check_name(name).needs_checkpoint and checkpoint is None:
        raise ConfigError(
            f"method={name} needs a trained checkpoint (--checkpoint CKPT); "
            f"the methods without one are: {', '.join(TRAINING_FREE)}"
        )


def config_for(
    name: str, overrides: Sequence[str] = (), weights: Optional[tuple] = None, device: Optional[str] = None
) -> DictConfig:
    """The composed config ``build`` uses for ``name``: a checkpoint's own (``weights``, its
    ``(network, meta)``) for the names that need one, else the defaults, the name's preset and
    ``overrides``."""
    spec = check_name(name)
    extra = list(overrides) + ([f"backbone.device={device}"] if device else [])
    if spec.needs_checkpoint:
        from hyperfeat.model.checkpoint import inference_config

        return inference_config(weights[1], extra)
    return load_config(overrides=[*spec.preset, *extra])


def build(
    name: str,
    overrides: Sequence[str] = (),
    *,
    cfg: Optional[DictConfig] = None,
    checkpoint: Optional[PathLike] = None,
    backbone=None,
    device: Optional[str] = None,
    **settings,
):
    """The describer (for ``ldm``, the matcher) registered as ``name``; see the module doc."""
    spec = check_name(name)
    require_checkpoint(name, checkpoint)
    weights = _load(checkpoint) if spec.needs_checkpoint else None
    if spec.needs_checkpoint or cfg is None:
        cfg = config_for(name, overrides, weights, device)
    elif device:
        cfg = cfg.copy()
        cfg.backbone.device = device
    cfg = _with_settings(cfg, spec, settings)
    return spec.make(cfg, backbone if spec.uses_backbone else None, weights)
