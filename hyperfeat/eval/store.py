"""Descriptor store for evaluation: each unique image is described once, pairs then only match.

A pair benchmark names the same image in many pairs (PF-WILLOW: 100 images in 900 pairs;
SPair-71k test: a few thousand images in 12,234 pairs). :class:`EvalStore` keys each
preprocessed image by its content (:func:`hyperfeat.model.identity.image_digest`) and the
describer's identity (:func:`describer_identity`: the feature identity, the aggregation block and
the network's weights digest), describes the images it has not seen in batches, and hands back
their descriptors ``(D, h, w)``. It keeps them in memory, or, given a folder, one memory-mapped
file per image under ``<dir>/<identity digest>/<key[:2]>/<key>.pt`` (written atomically), so a
store too large for memory, or shared by several runs or ranks, still works.

Descriptors are stored at float32 by default, so a pair's numbers equal describing that pair
alone (up to the batch composition of the describer's kernels).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from hyperfeat.io import atomic_save
from hyperfeat.model.identity import digest, image_digest

Describe = Callable[[torch.Tensor], torch.Tensor]  # (B, 3, L, L) in [-1, 1] → (B, D, h, w)

STORE_FORMAT = 1


def describer_identity(describer) -> str:
    """JSON naming what a describer computes, for store keys.

    A describer with ``identity()`` (the :mod:`hyperfeat.describe` interface) names itself;
    a :class:`hyperfeat.api.Hyperfeatures` is named by every value that decides its raw maps
    (:func:`~hyperfeat.model.identity.feature_identity`, with the backbone's actual compute
    dtype), its ``aggregation`` block and the sha256 of its network's weights.
    """
    if callable(getattr(describer, "identity", None)):
        ident = describer.identity()
        return ident if isinstance(ident, str) else json.dumps(ident, sort_keys=True, default=str)
    from omegaconf import OmegaConf

    from hyperfeat.model.identity import feature_identity, network_digest

    identity = feature_identity(describer.cfg)
    dtype = getattr(describer.backbone, "dtype", None)
    if dtype is not None:
        identity["backbone"]["compute_dtype"] = str(dtype)
    identity["aggregation"] = OmegaConf.to_container(describer.cfg.aggregation, resolve=True)
    identity["network"] = network_digest(describer.network)
    identity["transform"] = "pair-image"  # resize_for_backbone: load_size², [-1, 1]
    return json.dumps(identity, sort_keys=True, default=str)


class EvalStore:
    """Descriptors of preprocessed images, keyed by image content and describer identity.

    ``describe`` maps images (B, 3, L, L) to descriptors (B, D, h, w); ``batch_size`` caps the
    images of one call. ``store_dir`` keeps them on disk (else in memory). Counters:
    ``described`` (images run through the describer), ``reused`` (requests served by the store).
    """

    def __init__(
        self,
        describe: Describe,
        identity: str,
        batch_size: int = 8,
        store_dir: Optional[str | os.PathLike] = None,
        dtype: torch.dtype = torch.float32,
    ):
        self.describe = describe
        self.identity = identity
        self.fingerprint = digest(identity, size=8)
        self.batch_size = max(1, int(batch_size))
        self.dir = None if store_dir is None else Path(store_dir) / self.fingerprint
        self.dtype = dtype
        self.memory: dict[str, torch.Tensor] = {}
        self.described = 0
        self.reused = 0

    # ------------------------------------------------------------------ keys
    def key(self, image: torch.Tensor) -> str:
        """The key of one preprocessed image (3, L, L)."""
        return digest(f"{self.fingerprint}:{image_digest(image)}")

    def path(self, key: str) -> Path:
        assert self.dir is not None
        return self.dir / key[:2] / f"{key}.pt"

    def __contains__(self, key: str) -> bool:
        if key in self.memory:
            return True
        return self.dir is not None and self._read(key) is not None

    def __len__(self) -> int:
        return len(self.memory)

    # ------------------------------------------------------------------ read and write
    def _read(self, key: str) -> Optional[torch.Tensor]:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            entry = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
            if entry.get("key") != key or entry.get("fingerprint") != self.fingerprint:
                raise ValueError(f"holds key {entry.get('key')!r}, expected {key!r}")
            desc = entry["descriptors"]
            if not torch.is_tensor(desc) or desc.ndim != 3 or desc.dtype != self.dtype:
                raise ValueError("not a (D, h, w) descriptor map of the store's dtype")
            if not bool(torch.isfinite(desc).all()):
                raise ValueError("holds NaN/inf descriptors")
        except Exception as err:  # any load error: the file cannot be trusted
            warnings.warn(
                f"descriptor store file {path} is unreadable ({type(err).__name__}: {err}); describing the image again",
                stacklevel=3,
            )
            return None
        self.memory[key] = desc  # memory-mapped: the pages load when used
        return desc

    def _put(self, key: str, desc: torch.Tensor) -> None:
        desc = desc.detach().to("cpu", self.dtype, copy=True).contiguous()  # (D, h, w)
        if self.dir is not None:
            atomic_save(
                {"format": STORE_FORMAT, "key": key, "fingerprint": self.fingerprint, "descriptors": desc},
                self.path(key),
            )
        self.memory[key] = desc

    # ------------------------------------------------------------------ the work
    def add(self, images: torch.Tensor) -> list[str]:
        """Keys of images (B, 3, L, L); those not in the store are described (once each)."""
        keys = [self.key(img) for img in images]
        todo: dict[str, int] = {}
        for i, k in enumerate(keys):
            if k in todo:
                self.reused += 1
            elif k in self:
                self.reused += 1
            else:
                todo[k] = i
        pending = list(todo)
        for start in range(0, len(pending), self.batch_size):
            chunk = pending[start : start + self.batch_size]
            desc = self.describe(images[[todo[k] for k in chunk]])  # (b, D, h, w)
            self.described += len(chunk)
            for k, d in zip(chunk, desc):
                self._put(k, d)
        return keys

    def get(self, keys: Sequence[str]) -> torch.Tensor:
        """Descriptors (B, D, h, w) float32 of stored keys."""
        return torch.stack([self.memory[k] if k in self.memory else self._read(k) for k in keys]).float()

    def describe_all(self, images: torch.Tensor) -> torch.Tensor:
        """Descriptors (B, D, h, w) of images (B, 3, L, L), describing only the unseen ones."""
        return self.get(self.add(images))
