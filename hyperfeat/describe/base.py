"""The describer interface: images → dense descriptors ``(B, D, h, w)``.

Everything downstream of the backbone — matching, label and keypoint propagation, point
tracking, the evaluation loops and the video descriptor store — takes a :class:`Describer`,
never a particular method. A describer maps preprocessed images (B, 3, L, L) in [-1, 1]
(``L = load_size``; see :func:`hyperfeat.images.load_batch` for the transform) to a descriptor
grid (B, D, h, w) whose cells cover the whole image: cell (u, v) of an (h, w) grid sits at
pixel (u · W / w, v · H / h) of a (W, H) image (:mod:`hyperfeat.geometry`).

:meth:`Describer.identity` names what the descriptors mean (method, backbone, plan, weights);
caches key on it, so two describers that could give different descriptors never share entries.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Optional, Sequence, Union

import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from hyperfeat.images import ImageLike, load_batch

if TYPE_CHECKING:
    from hyperfeat.model.backbone import Backbone

Images = Union[ImageLike, Sequence[ImageLike]]


def as_image_list(images: Images) -> list:
    """One image, a list of images or a (B, 3, H, W) tensor → a list of images."""
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        return list(images)
    if isinstance(images, (list, tuple)):
        return list(images)
    return [images]


class Describer(ABC):
    """Preprocessed images → descriptors. Subclasses set ``cfg`` (the composed config: its
    ``features.load_size``, ``features.batch_size`` and ``video`` block are read here and by the
    video functions) and implement :meth:`describe_batch` and :meth:`identity`."""

    cfg: DictConfig
    resample: str = "bilinear"  # the PIL filter of the resize to load_size² (images.RESAMPLING)

    @property
    def load_size(self) -> int:
        """Side L of the square images :meth:`describe_batch` takes."""
        return int(self.cfg.features.load_size)

    @property
    @abstractmethod
    def device(self) -> torch.device:
        """Where :meth:`describe_batch` computes."""

    @abstractmethod
    def describe_batch(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, 3, L, L) in [-1, 1] → (B, D, h, w) float32."""

    @abstractmethod
    def identity(self) -> dict:
        """JSON-able description of everything that decides the descriptors."""

    def describe(self, images: Images, batch_size: Optional[int] = None, progress: bool = False) -> torch.Tensor:
        """Images (paths, PIL, tensors (3, H, W) in [0, 1], or a (B, 3, H, W) tensor) → (B, D, h, w) on the CPU."""
        items = as_image_list(images)
        size = int(batch_size or self.cfg.features.batch_size)
        out = []
        chunks = range(0, len(items), size)
        for start in tqdm(chunks, desc="describing", disable=not progress or len(chunks) < 2):
            batch, _ = load_batch(items[start : start + size], self.load_size, self.resample)  # (b, 3, L, L)
            out.append(self.describe_batch(batch).cpu())
        return torch.cat(out)


class BackboneDescriber(Describer):
    """A describer built on a frozen diffusion backbone (``self.backbone``): it computes where the
    backbone lives, and its identity starts from everything that decides the backbone's maps."""

    backbone: "Backbone"

    @property
    def device(self) -> torch.device:
        return torch.device(getattr(self.backbone, "device", "cpu"))

    def backbone_identity(self) -> dict:
        """:func:`hyperfeat.model.identity.feature_identity` of the config, with the backbone's
        actual compute dtype."""
        from hyperfeat.model.identity import feature_identity

        identity = feature_identity(self.cfg)
        identity["backbone"]["compute_dtype"] = str(
            getattr(self.backbone, "dtype", identity["backbone"]["compute_dtype"])
        )
        return identity
