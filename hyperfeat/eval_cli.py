"""``python eval.py``: evaluate a checkpoint, print a table, write a JSON of all numbers."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional, Sequence

import torch
from PIL import Image
from tqdm.auto import tqdm

from hyperfeat.api import Hyperfeatures
from hyperfeat.backbone import Backbone
from hyperfeat.errors import ImageError
from hyperfeat.images import load_image

RANDOM_BACKBONE_NOTE = ("NOTE: backbone 'tiny' is a small RANDOM model: these numbers only show that the pipeline "
                        "runs; they say nothing about how well diffusion hyperfeatures correspond")
VIS_ALPHA = 0.1  # pictures mark a prediction correct within this fraction of the box (or image) side


def _jsonable(value):
    if torch.is_tensor(value):
        return value.tolist() if value.numel() > 1 else float(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def evaluate(checkpoint: str, overrides: Sequence[str] = (), out_json: Optional[str] = None,
             backbone: Optional[Backbone] = None) -> dict:
    """Evaluate ``checkpoint`` on ``cfg.task`` (and ``cfg.data`` for semantic pairs), print the
    table and write the JSON record; ``backbone`` reuses an already loaded backbone."""
    hf = Hyperfeatures.from_checkpoint(checkpoint, overrides=overrides, backbone=backbone)
    cfg = hf.cfg
    random_backbone = str(cfg.backbone.model) == "tiny"
    if random_backbone:  # said before the progress bars too, so nobody waits for numbers that mean nothing
        print(RANDOM_BACKBONE_NOTE)
    if cfg.task == "semantic":
        results, table = evaluate_semantic(hf)
    else:
        from hyperfeat.video_eval import evaluate_video

        results, table = evaluate_video(hf)
    name = cfg.data.name if cfg.task == "semantic" else cfg.task
    print(table)
    if random_backbone:
        print(RANDOM_BACKBONE_NOTE)
    path = Path(out_json) if out_json else Path(cfg.paths.output_dir) / f"eval_{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"checkpoint": str(checkpoint), "task": str(cfg.task), "data": str(cfg.data.name),
              "backbone": str(cfg.backbone.model), "random_backbone": random_backbone, "results": _jsonable(results)}
    path.write_text(json.dumps(record, indent=2))
    print(f"wrote {path}")
    return record


def evaluate_semantic(hf: Hyperfeatures) -> tuple[dict, str]:
    """PCK on the test split of ``cfg.data`` (pairs), with optional pictures."""
    from hyperfeat.data import build_pair_dataset, collate_pairs
    from hyperfeat.evaluation import update_pck
    from hyperfeat.metrics import PCK, format_pck

    cfg = hf.cfg
    dataset = build_pair_dataset(cfg.data, "test", hf.load_size)
    batch_size = int(cfg.eval.batch_size)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate_pairs,
                                         num_workers=int(cfg.train.num_workers))  # in order: item = step·B + b
    metric = PCK(alphas=tuple(float(a) for a in cfg.eval.alphas))
    vis_left = int(cfg.eval.save_vis)
    vis_dir = Path(cfg.paths.output_dir) / f"vis_{cfg.data.name}"
    for step, batch in enumerate(tqdm(loader, desc=f"evaluating {cfg.data.name}", unit="batch")):
        images = torch.cat([batch["source_image"], batch["target_image"]])
        desc = hf.describe_batch(images)
        src, tgt = desc.chunk(2)

        def save_picture(b: int, pred: torch.Tensor) -> None:
            nonlocal vis_left
            if vis_left > 0:
                vis_left -= 1
                originals = _original_images(dataset, step * batch_size + b)
                _save_pair_picture(batch, b, pred, hf.load_size, vis_dir, originals)

        update_pck(metric, batch, src, tgt, hf.load_size, method=str(cfg.eval.matcher),
                   temperature=float(cfg.eval.softmax_temperature), on_pair=save_picture)
    results = metric.compute()
    return results, format_pck(results)


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


def _safe_file_name(name: str) -> str:
    """``Cars_006a-Cars_007a:car(G)`` → ``Cars_006a-Cars_007a_car_G``: portable file names."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "pair"


def _save_pair_picture(batch: dict, b: int, pred: torch.Tensor, load_size: int, vis_dir: Path,
                       originals: Optional[tuple[Image.Image, Image.Image]] = None) -> Path:
    """Draw pair ``b`` of ``batch``: its valid points, predictions (original target pixels) and
    ground truth, correct within ``VIS_ALPHA`` of the box (else the image) side. Draws on the
    original images when given, else on the load-size tensors scaled back to the original sizes."""
    from hyperfeat.images import tensor_to_pil
    from hyperfeat.matching import rescale_points
    from hyperfeat.viz import draw_correspondences

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
    draw_correspondences(source, target, src_points, pred.cpu(), gt, None, VIS_ALPHA * side, out_path=out,
                         title=f"{title} (α={VIS_ALPHA:g} of the {basis} side)")
    return out
