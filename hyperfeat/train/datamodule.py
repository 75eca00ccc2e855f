"""The LightningDataModule: pair datasets of the ``data`` config block, batched pairs.

With ``train.cache_features`` the train and val splits are wrapped in a
:class:`hyperfeat.train.cache.CachedPairDataset`: in :meth:`PairDataModule.setup` every image of
those splits goes through the frozen backbone once (:func:`hyperfeat.train.cache.precompute`, on
the training device) and its raw maps are stored under ``train.cache_dir``; the loaders then
yield ``source_raw``/``target_raw`` instead of images. The cache is keyed by image *content*
(and the feature config), so it fits data sets whose item ``i`` is the same every time it is
read (the synthetic pairs draw item ``i``'s warp from ``rng([seed, split, i])``).

Several processes (DDP): every rank reads every item but computes only the images whose key
falls to it (see :func:`hyperfeat.train.cache.precompute`), then all ranks wait at a barrier and read
each other's entries, so ``train.cache_dir`` must be on a
file system every rank sees. An entry that is still missing is computed where it is read,
when the loader runs in the training process (``train.num_workers: 0``).
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Optional

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from hyperfeat.errors import DataError

CACHED_SPLITS = ("train", "val")


class EpochSampler(Sampler[int]):
    """A shuffled order drawn from ``(seed, epoch)`` alone, that can start part-way through an
    epoch: a run resumed mid-epoch sees exactly the items the killed run had not yet seen."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed = int(size), int(seed)
        self.epoch, self.skip = 0, 0

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        skip, self.skip = self.skip, 0
        yield from order[skip:]


class ResumableLoader(DataLoader):
    """A DataLoader that starts every pass where the run stands: at batch ``position()`` of the
    whole run (the trainer's global step: one batch per optimiser step), i.e. epoch
    ``position // len`` from batch ``position % len``.

    The position comes from the step the checkpoint restored, not from Lightning's own per-epoch
    batch counter: after a resume that counter can disagree with the batches served (a run resumed
    mid-epoch and saved at that epoch's last batch was restored as a finished epoch plus one batch,
    which skipped the next epoch's remaining batches). Each pass ends at its epoch's end; the next
    pass (Lightning's next epoch) starts at the next position, so every step sees the batch an
    uninterrupted run sees, however Lightning cuts the epochs.
    """

    def __init__(self, *args, position: Optional[Callable[[], int]] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._served = 0  # batches served, the position when none is given (a loader used by hand)
        self.position = position if position is not None else (lambda: self._served)

    def __iter__(self):
        sampler, batches = self.sampler, len(self)
        sampler.epoch, skip = divmod(int(self.position()), max(1, batches))
        sampler.skip = skip * int(self.batch_size or 1)
        for batch in super().__iter__():
            self._served += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """Where the run stands (for reading a checkpoint; a resume takes it from the global step)."""
        epoch, batches = divmod(int(self.position()), max(1, len(self)))
        return {"epoch": epoch, "batches": batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Nothing to restore: the position is the restored global step."""


STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ()}


class PairDataModule(L.LightningDataModule):
    """Train/val/test pair loaders; several pairs per step (``train.pairs_per_step``).

    ``extractor``: the feature extractor that fills the feature cache when no trainer with a
    :class:`hyperfeat.train.module.HyperfeatModule` is attached (e.g. the loaders used by hand). Under
    ``trainer.fit`` the module's own extractor is used, on the trainer's device.
    """

    def __init__(self, cfg: DictConfig, extractor: Any = None):
        super().__init__()
        self.cfg = cfg
        self.extractor = extractor
        self.datasets: dict[str, Dataset] = {}  # the pair data sets (images)
        self.loader_datasets: dict[str, Dataset] = {}  # what the loaders read (cached or not)
        self.cache_stats: dict[str, Any] = {}  # split → CacheStats of this process's precompute

    # ------------------------------------------------------------------ data sets
    def dataset(self, split: str) -> Dataset:
        """The pair data set of ``split`` (items hold images), built once."""
        from hyperfeat.data.pairs import build_pair_dataset
        from hyperfeat.data.videos.temporal import TEMPORAL_DATASETS, build_temporal_dataset

        if split not in self.datasets:
            build = build_temporal_dataset if str(self.cfg.data.name) in TEMPORAL_DATASETS else build_pair_dataset
            try:
                dataset = build(self.cfg.data, split, int(self.cfg.features.load_size))
            except DataError as err:  # say which role of which data set failed
                which = self.cfg.data.get(f"{split}_split")
                raise DataError(
                    f"{split} split (data.{split}_split={which!r}) of data set {self.cfg.data.name!r}: {err}"
                ) from err
            limit = self.cfg.train.val_max_pairs if split == "val" else None
            if limit is not None and len(dataset) > int(limit):
                dataset = Subset(
                    dataset, representative_indices(dataset, int(limit), self.cfg.data.get("sample_seed", 0))
                )
            if len(dataset) == 0:
                raise DataError(f"the {split} split of data set {self.cfg.data.name!r} ({self.cfg.data.root}) is empty")
            self.datasets[split] = dataset
        return self.datasets[split]

    def uses_cache(self, split: str) -> bool:
        return split in CACHED_SPLITS and bool(self.cfg.train.cache_features)

    def setup(self, stage: Optional[str] = None) -> None:
        """Build the splits of ``stage`` (so bad data fails before training) and fill the feature cache."""
        for split in STAGE_SPLITS.get(stage, CACHED_SPLITS):  # stage None: the fit splits
            self.loader_dataset(split, final=False)

    def _cache_context(self) -> Optional[tuple[Any, Optional[torch.device], int, int, Any]]:
        """(extractor, device, rank, world_size, barrier) to fill the cache with, or None when
        neither a trainer with a module nor an ``extractor`` is at hand."""
        trainer = getattr(self, "trainer", None)
        module = None
        if trainer is not None:
            try:
                module = trainer.lightning_module
            except (AttributeError, RuntimeError):
                module = None
        if module is not None and hasattr(module, "extractor"):
            device = trainer.strategy.root_device
            if hasattr(module, "_move_backbone"):
                module._move_backbone(device)
            return module.extractor, device, int(trainer.global_rank), int(trainer.world_size), trainer.strategy.barrier
        if self.extractor is not None:
            return self.extractor, None, 0, 1, None
        return None

    def loader_dataset(self, split: str, final: bool = True) -> Dataset:
        """What the ``split`` loader reads: the pair data set, or it wrapped in the feature cache.

        ``final=False`` (from :meth:`setup`): when the cache cannot be filled yet (no trainer
        module, no extractor), leave the decision to the loader call.
        """
        if split in self.loader_datasets:
            return self.loader_datasets[split]
        dataset = self.dataset(split)
        if self.uses_cache(split):
            context = self._cache_context()
            if context is None:
                if not final:
                    return dataset
                warnings.warn(
                    f"train.cache_features is true but the {split} loader was asked for without a trainer "
                    "running a HyperfeatModule and without an extractor (PairDataModule(cfg, extractor=...)); "
                    f"the {split} split is read uncached (images, features computed in every step)",
                    UserWarning,
                    stacklevel=2,
                )
            else:
                dataset = self._cached(split, dataset, *context)
        self.loader_datasets[split] = dataset
        return dataset

    def _signal_received(self) -> bool:
        """Whether SIGINT/SIGTERM came during this fit: a callback of the trainer (the training's
        ``CheckpointPolicy``) says ``stop_requested``."""
        trainer = getattr(self, "trainer", None)
        return trainer is not None and any(getattr(cb, "stop_requested", False) for cb in trainer.callbacks)

    def _cached(self, split: str, dataset: Dataset, extractor, device, rank: int, world_size: int, barrier) -> Dataset:
        from hyperfeat.train.cache import CachedPairDataset, FeatureCache

        cache = FeatureCache(self.cfg.train.cache_dir, self.cfg)
        cached = CachedPairDataset(dataset, cache, extractor)
        with torch.no_grad():
            stats = cached.precompute(
                rank=rank, world_size=world_size, progress=rank == 0, should_stop=self._signal_received
            )
        if barrier is not None:
            barrier(f"hyperfeat_feature_cache_{split}")  # every rank's share is on disk before reading
        self.cache_stats[split] = stats
        where = f" on {device}" if device is not None else ""
        share = f" (rank {rank} of {world_size}: its share of the images)" if world_size > 1 else ""
        computed = stats.misses + stats.recomputed
        rank_zero_info(
            f"feature cache, {split} split{share}: {computed} images computed{where}, "
            f"{stats.hits} already cached in {cache.dir}"
        )
        return cached

    # ------------------------------------------------------------------ loaders
    def _collate(self, split: str):
        """How items of ``split`` are batched: clips (unlabelled video) or pairs, cached or not."""
        from hyperfeat.data.pairs.base import collate_pairs
        from hyperfeat.data.videos.temporal import CLIP_DATASETS, collate_clips
        from hyperfeat.train.cache import collate_cached_pairs

        if str(self.cfg.data.name) in CLIP_DATASETS:
            return collate_clips
        return collate_cached_pairs if self.uses_cache(split) else collate_pairs

    def _loader(self, split: str, shuffle: bool, batch_size: int) -> DataLoader:
        dataset = self.loader_dataset(split)
        collate = self._collate(split)
        workers = int(self.cfg.train.num_workers)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=workers,
            collate_fn=collate,
            persistent_workers=workers > 0,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.world_size > 1:  # Lightning's distributed sampler
            return self._loader("train", True, int(self.cfg.train.pairs_per_step))
        dataset = self.loader_dataset("train")
        workers = int(self.cfg.train.num_workers)
        return ResumableLoader(
            dataset,
            batch_size=int(self.cfg.train.pairs_per_step),
            sampler=EpochSampler(len(dataset), int(self.cfg.train.seed)),
            num_workers=workers,
            position=lambda: trainer.global_step if trainer is not None else 0,
            collate_fn=self._collate("train"),
            persistent_workers=workers > 0,
            drop_last=False,
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False, int(self.cfg.eval.batch_size))

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False, int(self.cfg.eval.batch_size))


def representative_indices(dataset, n: int, seed=0) -> list[int]:
    """``n`` item indices spread over the categories (seeded) when the data set has records, else the first ``n``."""
    from hyperfeat.data.pairs.base import sample_across_categories

    records = getattr(dataset, "records", None)
    if not records:
        return list(range(n))
    position = {id(r): i for i, r in enumerate(records)}
    return [position[id(r)] for r in sample_across_categories(records, n, int(seed or 0))]
