"""Every correspondence method by name, ready to use.

    from hyperfeat import describers
    from hyperfeat.video.run import track

    d = describers.dift(["backbone=sd21"])                       # DIFT, t = 261, up_blocks[1], 8 draws
    d = describers.raw(maps=[(49, (1, 0))])                      # one raw decoder map ("SD-Layer-4")
    d = describers.concat_all()                                  # every (label, layer) map, each L2-normalised
    d = describers.pruned("checkpoints/last.ckpt")               # the map of the largest mixing weight
    d = describers.hyperfeatures("checkpoints/last.ckpt")        # the trained hyperfeatures
    desc = d.describe(["cat1.jpg", "cat2.jpg"])                  # (2, D, h, w)
    tracks, visible = track(d, "clip.mp4", [[0, 120, 80]])       # any describer, any video task
    m = describers.ldm()                                         # Hedlin et al.: a matcher, not a describer

Each takes ``overrides`` (``key=value`` strings, as on the command line) and an optional
already-loaded ``backbone``. Describers are :class:`hyperfeat.describe.base.Describer`; they go
wherever a trained :class:`hyperfeat.api.Hyperfeatures` goes (``hyperfeat.video.run`` functions,
``hyperfeat.eval.semantic.evaluate_semantic``, ``hyperfeat.eval.runner.evaluate_video``).
"""

from __future__ import annotations

import os
from typing import Optional, Sequence, Union

from omegaconf import DictConfig

from hyperfeat.config import CHECKPOINT_METHODS, METHODS, load_config, validate_config
from hyperfeat.errors import ConfigError
from hyperfeat.model.backbone import Backbone, load_backbone

PathLike = Union[str, os.PathLike]
TRAINING_FREE = tuple(m for m in METHODS if m not in CHECKPOINT_METHODS)


def _config(overrides: Sequence[str], cfg: Optional[DictConfig], block: str, **values) -> DictConfig:
    cfg = load_config(overrides=list(overrides)) if cfg is None else cfg.copy()
    for key, value in values.items():
        if value is not None:
            cfg[block][key] = value
    validate_config(cfg)
    return cfg


def hyperfeatures(checkpoint: PathLike, overrides: Sequence[str] = (), device: Optional[str] = None,
                  backbone: Optional[Backbone] = None):
    """The trained hyperfeatures of a checkpoint (a :class:`hyperfeat.api.Hyperfeatures`)."""
    from hyperfeat.api import Hyperfeatures

    return Hyperfeatures.from_checkpoint(checkpoint, device=device, overrides=overrides, backbone=backbone)


def dift(overrides: Sequence[str] = (), *, timestep: Optional[int] = None, up_ft_index: Optional[int] = None,
         ensemble_size: Optional[int] = None, prompt: Optional[str] = None, image_size: Optional[int] = None,
         backbone: Optional[Backbone] = None, cfg: Optional[DictConfig] = None):
    """DIFT (see :mod:`hyperfeat.describe.dift`); keyword values override the ``dift`` block."""
    from hyperfeat.describe.dift import DiftDescriber

    cfg = _config(overrides, cfg, "dift", timestep=timestep, up_ft_index=up_ft_index, ensemble_size=ensemble_size,
                  prompt=prompt, image_size=image_size)
    return DiftDescriber(cfg, backbone or load_backbone(cfg))


def raw(maps: Optional[Sequence] = None, overrides: Sequence[str] = (), backbone: Optional[Backbone] = None,
        cfg: Optional[DictConfig] = None):
    """Raw decoder maps: ``maps`` [(label, (i, j)), …] (default ``raw.maps``); see :mod:`hyperfeat.describe.raw`."""
    from hyperfeat.describe.raw import RawDescriber

    cfg = _config(overrides, cfg, "raw")
    return RawDescriber(cfg, backbone or load_backbone(cfg), maps)


def concat_all(overrides: Sequence[str] = (), backbone: Optional[Backbone] = None, cfg: Optional[DictConfig] = None):
    """Every saved (label, layer) map of the features plan, each L2-normalised, concatenated."""
    from hyperfeat.describe.raw import RawDescriber

    cfg = _config(overrides, cfg, "raw", maps="all")
    return RawDescriber(cfg, backbone or load_backbone(cfg), name="concat_all")


def pruned(checkpoint: PathLike, overrides: Sequence[str] = (), backbone: Optional[Backbone] = None):
    """The single raw map with the checkpoint's largest mixing weight."""
    from hyperfeat.describe.raw import pruned_from_checkpoint

    return pruned_from_checkpoint(checkpoint, overrides, backbone)


def ldm(overrides: Sequence[str] = (), backbone: Optional[Backbone] = None, cfg: Optional[DictConfig] = None):
    """Hedlin et al.'s matcher (:class:`hyperfeat.correspond.ldm.LdmMatcher`)."""
    from hyperfeat.correspond.ldm import LdmMatcher

    cfg = _config(overrides, cfg, "ldm")
    return LdmMatcher(cfg, backbone or load_backbone(cfg))


def from_config(method: str, cfg: DictConfig, checkpoint: Optional[PathLike] = None,
                overrides: Sequence[str] = (), backbone: Optional[Backbone] = None):
    """The describer (or, for ``ldm``, the matcher) named ``method``; ``cfg`` is the composed
    config for the training-free ones, a checkpoint's own config is used for the others."""
    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if method in CHECKPOINT_METHODS:
        if checkpoint is None:
            raise ConfigError(f"method={method} needs a trained checkpoint (--checkpoint CKPT); "
                              f"the methods without one are: {', '.join(TRAINING_FREE)}")
        return hyperfeatures(checkpoint, overrides, backbone=backbone) if method == "hyperfeatures" \
            else pruned(checkpoint, overrides, backbone=backbone)
    if method == "dift":
        return dift(cfg=cfg, backbone=backbone)
    if method == "raw":
        return raw(cfg=cfg, backbone=backbone)
    return ldm(cfg=cfg, backbone=backbone)
