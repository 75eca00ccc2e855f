"""Semantic-correspondence evaluation of one batch of pairs: the protocol of DESIGN.md.

Descriptors are upsampled bilinearly to the load size, each source keypoint takes its nearest
neighbour in the target, and the prediction is rescaled to the original target image, where
PCK is measured. Used by validation during training and by ``eval.py``, which pass the
config's ``eval.matcher`` and ``eval.softmax_temperature``; the ``temperature`` defaults here
are that config value (:data:`hyperfeat.matching.SOFTMAX_TEMPERATURE`).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from hyperfeat.matching import SOFTMAX_TEMPERATURE, match_points, rescale_points
from hyperfeat.metrics import PCK


def predict_pair_points(
    src_desc: torch.Tensor,  # (D, R, R)
    tgt_desc: torch.Tensor,  # (D, R, R)
    src_points: torch.Tensor,  # (N, 2) xy in the load frame
    load_size: int,
    target_size_wh: tuple[int, int],
    method: str = "nn",
    temperature: float = SOFTMAX_TEMPERATURE,
) -> torch.Tensor:
    """Predicted target points (N, 2) xy in ORIGINAL target pixels."""
    frame = (load_size, load_size)
    pred = match_points(src_desc, tgt_desc, src_points, frame, frame, method=method, upsample=True,
                        temperature=temperature)
    pred = pred[0] if isinstance(pred, tuple) else pred
    return rescale_points(pred, frame, tuple(int(v) for v in target_size_wh))


def update_pck(
    metric: PCK,
    batch: dict,
    src_desc: torch.Tensor,  # (B, D, R, R)
    tgt_desc: torch.Tensor,  # (B, D, R, R)
    load_size: int,
    method: str = "nn",
    temperature: float = SOFTMAX_TEMPERATURE,
    on_pair: Optional[Callable[[int, torch.Tensor], None]] = None,
) -> None:
    """Match every pair of the batch and add it to ``metric``; ``on_pair(b, pred)`` sees each prediction."""
    for b in range(src_desc.shape[0]):
        valid = batch["valid"][b].bool()
        size = tuple(int(v) for v in batch["target_size"][b])
        pred = predict_pair_points(src_desc[b].float(), tgt_desc[b].float(), batch["source_points"][b][valid].float(),
                                   load_size, size, method, temperature)
        bbox = batch["target_bbox"][b]
        bbox = None if torch.isnan(bbox).any() else bbox
        metric.update(pred.cpu(), batch["target_points_orig"][b][valid].float().cpu(), bbox, size, batch["category"][b])
        if on_pair is not None:
            on_pair(b, pred)
