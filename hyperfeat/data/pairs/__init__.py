"""Semantic-correspondence pair data sets and the factory that builds one from the config.

``build_pair_dataset(cfg.data, "train" | "val" | "test", load_size)`` reads the ``data`` block:

common keys (every preset)
    name          spair | cub | pf_willow | synthetic
    root          the data set's folder (synthetic: a folder of images, or ``generated``;
                  a synthetic root that does not exist falls back to generated images, with
                  one DataWarning naming it)
    train_split, val_split, test_split
                  what each role reads (null: the role has no data here; asking for it is a
                  ConfigError). spair/dhf: a pair-list JSON relative to root; spair/native:
                  trn | val | test; cub: train | test | all; pf_willow: test;
                  synthetic: train | val | test | all
    max_pairs     cap on pairs per split (null: all); spair, cub and pf_willow sample them
                  across categories (stratified, seeded by ``sample_seed``), not the first N
    sample_seed   the seed of that sample (default 0)
    max_points    pad/truncate every item to this many points (null: as annotated)
spair           format (dhf | native), image_dir (dhf: images; native: JPEGImages),
                layout (native: large | small), strict
cub             num_pairs, seed, min_common_parts, strict
pf_willow       strict
synthetic       images (explicit list of paths, or null to read root), seed, val_fraction,
                pairs_per_image, num_points, point_mode (grid | random), rotation, scale,
                translation, perspective, brightness, contrast, color, generated_images,
                generated_size (the procedural fallback: how many images, their side)

``strict``: a point outside its image is a DataError (true) or is marked invalid with one
warning (false, the default).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from hyperfeat.config import block_value
from hyperfeat.data.pairs.base import (
    PAIR_KEYS,
    DataWarning,
    PairDataset,
    PairRecord,
    RecordOptions,
    RecordPairDataset,
    collate_pairs,
)
from hyperfeat.data.pairs.cub import CUBPairs
from hyperfeat.data.pairs.pf_willow import PFWillowPairs
from hyperfeat.data.pairs.spair import SPairDataset
from hyperfeat.data.pairs.synthetic import SyntheticPairs
from hyperfeat.errors import ConfigError

ROLES = ("train", "val", "test")


__all__ = [
    "PAIR_KEYS",
    "DATASET_NAMES",
    "CUBPairs",
    "DataWarning",
    "PFWillowPairs",
    "PairDataset",
    "PairRecord",
    "RecordOptions",
    "RecordPairDataset",
    "SPairDataset",
    "SyntheticPairs",
    "build_pair_dataset",
    "collate_pairs",
]


def build_pair_dataset(data_cfg: Any, split: str, load_size: int) -> PairDataset:
    """The pair data set of the config's ``data`` block for role ``split`` (train | val | test).

    The role picks the key ``<split>_split`` of the block; see the module docstring for the keys.
    """
    if split not in ROLES:
        raise ConfigError(
            f"split must be one of {', '.join(ROLES)} (the role; the block's <role>_split names the data); got {split!r}"
        )
    name = block_value(data_cfg, "name")
    if name not in DATASET_NAMES:
        raise ConfigError(f"data.name must be one of {', '.join(DATASET_NAMES)}; got {name!r}")
    root = block_value(data_cfg, "root")
    which: Optional[str] = block_value(data_cfg, f"{split}_split")
    if which is None:
        raise ConfigError(
            f"data.{split}_split is null for data set {name!r} (root {root}): it has no {split} data here; "
            f"set data.{split}_split or pick another data preset"
        )
    if root is None and not (name == "synthetic" and block_value(data_cfg, "images")):
        raise ConfigError(f"data.root is null for data set {name!r}; expected the data set's folder")
    return PAIR_DATASETS[name](data_cfg, str(which), load_size)


def _record_options(data_cfg: Any) -> dict[str, Any]:
    """The :class:`RecordOptions` keys of the block (SPair, CUB, PF-WILLOW)."""
    return dict(
        max_pairs=block_value(data_cfg, "max_pairs"),
        max_points=block_value(data_cfg, "max_points"),
        sample_seed=int(block_value(data_cfg, "sample_seed", 0) or 0),
        strict=bool(block_value(data_cfg, "strict", False)),
    )


def _spair(data_cfg: Any, which: str, load_size: int) -> PairDataset:
    return SPairDataset(
        block_value(data_cfg, "root"),
        which,
        load_size,
        format=block_value(data_cfg, "format", "dhf"),
        image_dir=block_value(data_cfg, "image_dir"),
        layout=block_value(data_cfg, "layout") or "large",
        **_record_options(data_cfg),
    )


def _cub(data_cfg: Any, which: str, load_size: int) -> PairDataset:
    return CUBPairs(
        block_value(data_cfg, "root"),
        load_size,
        which,
        num_pairs=block_value(data_cfg, "num_pairs", 1000),
        seed=int(block_value(data_cfg, "seed", 0)),
        min_common_parts=int(block_value(data_cfg, "min_common_parts", 1)),
        **_record_options(data_cfg),
    )


def _pf_willow(data_cfg: Any, which: str, load_size: int) -> PairDataset:
    return PFWillowPairs(block_value(data_cfg, "root"), load_size, which, **_record_options(data_cfg))


SYNTHETIC_KEYS = (
    "seed",
    "val_fraction",
    "pairs_per_image",
    "num_points",
    "point_mode",
    "rotation",
    "scale",
    "translation",
    "perspective",
    "brightness",
    "contrast",
    "color",
    "generated_images",
    "generated_size",
    "max_pairs",
    "max_points",
)


def _synthetic(data_cfg: Any, which: str, load_size: int) -> PairDataset:
    options = {key: block_value(data_cfg, key) for key in SYNTHETIC_KEYS if block_value(data_cfg, key) is not None}
    return SyntheticPairs(block_value(data_cfg, "images") or block_value(data_cfg, "root"), load_size, which, **options)


# data.name → the builder of that data set from the ``data`` block, one role's split and load_size
PAIR_DATASETS: dict[str, Callable[[Any, str, int], PairDataset]] = {
    "spair": _spair,
    "cub": _cub,
    "pf_willow": _pf_willow,
    "synthetic": _synthetic,
}
DATASET_NAMES = tuple(PAIR_DATASETS)
