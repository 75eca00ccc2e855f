"""Semantic-correspondence evaluation of one batch of pairs: the protocol of docs/ARCHITECTURE.md (evaluation).

Descriptors are upsampled bilinearly to the load size, each source keypoint takes its nearest
neighbour in the target, and the prediction is rescaled to the original target image, where
PCK is measured. Used by validation during training and by ``eval.py``, which pass the
config's ``eval.matcher`` and ``eval.softmax_temperature``; the ``temperature`` defaults here
are that config value (:data:`hyperfeat.correspond.matching.SOFTMAX_TEMPERATURE`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import torch
from PIL import Image
from tqdm.auto import tqdm

from hyperfeat.correspond.matching import SOFTMAX_TEMPERATURE, match_points
from hyperfeat.describe.hyperfeatures import HyperfeatureDescriber
from hyperfeat.errors import ImageError
from hyperfeat.eval.files import _safe_file_name
from hyperfeat.eval.metrics.pck import PCK
from hyperfeat.geometry import rescale_points
from hyperfeat.images import load_image

VIS_ALPHA = 0.1  # pictures mark a prediction correct within this fraction of the box (or image) side


class EvaluationInterrupted(Exception):
    """Ctrl-C during an evaluation: ``results`` holds the metrics of the ``done`` items so far."""

    def __init__(self, results: dict, table: str, done: int, total: int):
        super().__init__(f"interrupted after {done} of {total} items")
        self.results, self.table, self.done, self.total = results, table, done, total


def _rank_and_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def evaluate_semantic(hf: HyperfeatureDescriber, progress: bool = True) -> tuple[dict, str]:
    """PCK on the test split of ``cfg.data`` (pairs), with optional pictures.

    Every unique image is described once (:class:`~hyperfeat.eval.store.EvalStore`, in
    memory or under ``eval.store_dir``); pairs then only match. Under DDP each rank evaluates
    the pairs ``i % world_size == rank`` and describes only their images; the PCK metric gathers
    every rank's pairs. Ctrl-C raises :class:`EvaluationInterrupted` carrying the results so far.
    """
    from hyperfeat.data.pairs import build_pair_dataset
    from hyperfeat.data.pairs.base import collate_pairs
    from hyperfeat.eval.metrics.pck import PCK
    from hyperfeat.eval.store import EvalStore, describer_identity
    from hyperfeat.eval.table import format_pck

    cfg = hf.cfg
    dataset = build_pair_dataset(cfg.data, "test", hf.load_size)
    dataset.resample = getattr(hf, "resample", "bilinear")  # the describer's own resize filter
    rank, world = _rank_and_world()
    indices = list(range(rank, len(dataset), world))
    shard = torch.utils.data.Subset(dataset, indices) if world > 1 else dataset
    batch_size = int(cfg.eval.batch_size)
    loader = torch.utils.data.DataLoader(
        shard, batch_size=batch_size, collate_fn=collate_pairs, num_workers=int(cfg.train.num_workers)
    )  # in order: item = step·B + b
    store_dir = cfg.eval.get("store_dir")
    store = EvalStore(
        hf.describe_batch,
        describer_identity(hf),
        batch_size=int(cfg.features.batch_size),
        store_dir=None if store_dir in (None, "") else str(store_dir),
    )
    metric = PCK(alphas=tuple(float(a) for a in cfg.eval.alphas))
    vis_left = int(cfg.eval.save_vis)
    vis_dir = Path(cfg.paths.output_dir) / f"vis_{cfg.data.name}"
    done = 0
    bar = tqdm(loader, desc=f"evaluating {cfg.data.name}", unit="batch", disable=not progress)
    try:
        for step, batch in enumerate(bar):
            b_count = batch["source_image"].shape[0]
            src = store.describe_all(batch["source_image"])  # (B, D, R, R)
            tgt = store.describe_all(batch["target_image"])  # (B, D, R, R)

            def save_picture(b: int, pred: torch.Tensor) -> None:
                nonlocal vis_left
                if vis_left > 0:
                    vis_left -= 1
                    originals = _original_images(dataset, indices[step * batch_size + b])
                    _save_pair_picture(batch, b, pred, hf.load_size, vis_dir, originals)

            update_pck(
                metric,
                batch,
                src,
                tgt,
                hf.load_size,
                method=str(cfg.eval.matcher),
                temperature=float(cfg.eval.softmax_temperature),
                on_pair=save_picture,
            )
            done += b_count
            bar.set_postfix(described=store.described, reused=store.reused)
    except KeyboardInterrupt:
        bar.close()
        results = _results(metric, store, done, len(shard), len(dataset))
        raise EvaluationInterrupted(results, format_pck(results) if done else "", done, len(shard)) from None
    results = _results(metric, store, done, len(shard), len(dataset))
    results["subset"] = subset_record(dataset, cfg.data)
    return results, format_pck(results)


PAIR_IDS_LISTED = 2000  # the JSON lists the pair ids of subsets up to this size (always their digest)


def subset_record(dataset, data_cfg) -> dict:
    """What was evaluated: the split, the size options, the pair count and ids (or their digest)."""
    from omegaconf import OmegaConf

    from hyperfeat.model.identity import digest

    records = getattr(dataset, "records", None)
    ids = [str(r.pair_id) for r in records] if records is not None else None
    out = {
        "split": OmegaConf.select(data_cfg, "test_split"),
        "max_pairs": OmegaConf.select(data_cfg, "max_pairs"),
        "sample_seed": OmegaConf.select(data_cfg, "sample_seed", default=None),
        "num_pairs": len(dataset),
    }
    if ids is not None:
        out["pair_ids_digest"] = digest("\n".join(ids))
        if len(ids) <= PAIR_IDS_LISTED:
            out["pair_ids"] = ids
    return out


def _results(metric, store, done: int, shard_size: int, total: int) -> dict:
    """The metric's numbers (empty before the first pair) and the store's counters."""
    results = dict(metric.compute()) if done else {}
    results["images_described"] = store.described
    results["images_reused"] = store.reused
    results["pairs_evaluated"] = done
    results["pairs_in_split"] = total
    return results


def _original_images(dataset, index: int) -> Optional[tuple[Image.Image, Image.Image]]:
    """The pair's original source and target images when the data set reads them from files."""
    records = getattr(dataset, "records", None)
    if records is None:
        return None
    record = records[index]
    try:
        return load_image(record.source_path), load_image(record.target_path)
    except ImageError:
        return None


def _save_pair_picture(
    batch: dict,
    b: int,
    pred: torch.Tensor,
    load_size: int,
    vis_dir: Path,
    originals: Optional[tuple[Image.Image, Image.Image]] = None,
) -> Path:
    """Draw pair ``b`` of ``batch``: its valid points, predictions (original target pixels) and
    ground truth, correct within ``VIS_ALPHA`` of the box (else the image) side. Draws on the
    original images when given, else on the load-size tensors scaled back to the original sizes."""
    from hyperfeat.geometry import rescale_points
    from hyperfeat.images import tensor_to_pil
    from hyperfeat.viz.correspondences import draw_correspondences

    valid = batch["valid"][b].bool()
    src_size = tuple(int(v) for v in batch["source_size"][b])
    tgt_size = tuple(int(v) for v in batch["target_size"][b])
    if originals is not None and (originals[0].size, originals[1].size) == (src_size, tgt_size):
        source, target = originals
    else:
        source = tensor_to_pil(batch["source_image"][b] / 2 + 0.5).resize(src_size)
        target = tensor_to_pil(batch["target_image"][b] / 2 + 0.5).resize(tgt_size)
    src_points = rescale_points(batch["source_points"][b][valid].float(), (load_size, load_size), src_size)
    gt = batch["target_points_orig"][b][valid].float()
    bbox = batch["target_bbox"][b]
    if torch.isnan(bbox).any():
        side, basis = max(tgt_size), "image"
    else:
        side, basis = float(max(bbox[2] - bbox[0], bbox[3] - bbox[1])), "box"
    pair_id, category = str(batch["pair_id"][b]), str(batch["category"][b])
    title = pair_id if category in pair_id else f"{category}: {pair_id}"
    out = vis_dir / f"{_safe_file_name(pair_id)}.png"
    draw_correspondences(
        source,
        target,
        src_points,
        pred.cpu(),
        gt,
        None,
        VIS_ALPHA * side,
        out_path=out,
        title=f"{title} (α={VIS_ALPHA:g} of the {basis} side)",
    )
    return out


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
    pred = match_points(
        src_desc, tgt_desc, src_points, frame, frame, method=method, upsample=True, temperature=temperature
    )
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
        pred = predict_pair_points(
            src_desc[b].float(),
            tgt_desc[b].float(),
            batch["source_points"][b][valid].float(),
            load_size,
            size,
            method,
            temperature,
        )
        bbox = batch["target_bbox"][b]
        bbox = None if torch.isnan(bbox).any() else bbox
        metric.update(pred.cpu(), batch["target_points_orig"][b][valid].float().cpu(), bbox, size, batch["category"][b])
        if on_pair is not None:
            on_pair(b, pred)
