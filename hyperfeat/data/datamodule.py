"""The LightningDataModule: pair datasets of the ``data`` config block, batched pairs."""

from __future__ import annotations

from typing import Optional

import lightning as L
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, Subset

from hyperfeat.errors import DataError


class PairDataModule(L.LightningDataModule):
    """Train/val/test pair loaders; several pairs per step (``train.pairs_per_step``)."""

    def __init__(self, cfg: DictConfig):
        super().__init__()
        self.cfg = cfg
        self.datasets: dict[str, Dataset] = {}

    def dataset(self, split: str) -> Dataset:
        from hyperfeat.data import build_pair_dataset

        if split not in self.datasets:
            dataset = build_pair_dataset(self.cfg.data, split, int(self.cfg.features.load_size))
            limit = self.cfg.train.val_max_pairs if split == "val" else None
            if limit is not None and len(dataset) > int(limit):
                dataset = Subset(dataset, range(int(limit)))
            if len(dataset) == 0:
                raise DataError(f"the {split} split of data set {self.cfg.data.name!r} ({self.cfg.data.root}) is empty")
            self.datasets[split] = dataset
        return self.datasets[split]

    def _loader(self, split: str, shuffle: bool, batch_size: int) -> DataLoader:
        from hyperfeat.data import collate_pairs

        workers = int(self.cfg.train.num_workers)
        return DataLoader(self.dataset(split), batch_size=batch_size, shuffle=shuffle, num_workers=workers,
                          collate_fn=collate_pairs, persistent_workers=workers > 0, drop_last=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True, int(self.cfg.train.pairs_per_step))

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False, int(self.cfg.eval.batch_size))

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False, int(self.cfg.eval.batch_size))
