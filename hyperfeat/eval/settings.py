"""The ``eval`` block's settings, with their one set of defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from omegaconf import DictConfig

from hyperfeat.correspond.matching import SOFTMAX_TEMPERATURE
from hyperfeat.settings import from_block


@dataclass(frozen=True)
class EvalSettings:
    """PCK thresholds, the matcher and its soft-argmax temperature, pictures to save, the pair
    batch size and where the per-image descriptors are kept (``eval`` block)."""

    alphas: tuple[float, ...] = (0.05, 0.1, 0.15)  # PCK@α thresholds
    matcher: str = "nn"  # nn | mutual_nn | soft_argmax
    softmax_temperature: float = SOFTMAX_TEMPERATURE  # soft-argmax over cosine similarities
    save_vis: int = 0  # pictures of the first n pairs / videos
    batch_size: int = 8  # pairs per batch
    store_dir: Optional[str] = None  # a folder: per-image descriptors on disk (memory-mapped)

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "EvalSettings":
        return from_block(cls, cfg.eval, where="eval")
