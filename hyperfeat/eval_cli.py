"""``python eval.py``: evaluate a checkpoint, print a table, write a JSON of all numbers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import torch
from tqdm.auto import tqdm

from hyperfeat.api import Hyperfeatures

RANDOM_BACKBONE_NOTE = ("note: the backbone is the tiny random model: these numbers say the pipeline runs, "
                        "not how well real diffusion hyperfeatures correspond")


def _jsonable(value):
    if torch.is_tensor(value):
        return value.tolist() if value.numel() > 1 else float(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def evaluate(checkpoint: str, overrides: Sequence[str] = (), out_json: Optional[str] = None) -> dict:
    hf = Hyperfeatures.from_checkpoint(checkpoint, overrides=overrides)
    cfg = hf.cfg
    if cfg.task == "semantic":
        results, table = evaluate_semantic(hf)
    else:
        from hyperfeat.video_eval import evaluate_video

        results, table = evaluate_video(hf)
    name = cfg.data.name if cfg.task == "semantic" else cfg.task
    print(table)
    random_backbone = str(cfg.backbone.model) == "tiny"
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
    loader = torch.utils.data.DataLoader(dataset, batch_size=int(cfg.eval.batch_size), collate_fn=collate_pairs,
                                         num_workers=int(cfg.train.num_workers))
    metric = PCK(alphas=tuple(float(a) for a in cfg.eval.alphas))
    vis_left = int(cfg.eval.save_vis)
    vis_dir = Path(cfg.paths.output_dir) / f"vis_{cfg.data.name}"
    for batch in tqdm(loader, desc=f"evaluating {cfg.data.name}", unit="batch"):
        images = torch.cat([batch["source_image"], batch["target_image"]])
        desc = hf.describe_batch(images)
        src, tgt = desc.chunk(2)

        def save_picture(b: int, pred: torch.Tensor) -> None:
            nonlocal vis_left
            if vis_left <= 0:
                return
            vis_left -= 1
            _save_pair_picture(dataset, batch, b, pred, cfg, vis_dir)

        update_pck(metric, batch, src, tgt, hf.load_size, method=str(cfg.eval.matcher),
                   temperature=float(cfg.eval.softmax_temperature), on_pair=save_picture)
    results = metric.compute()
    return results, format_pck(results)


def _save_pair_picture(dataset, batch: dict, b: int, pred: torch.Tensor, cfg, vis_dir: Path) -> None:
    from hyperfeat.images import tensor_to_pil
    from hyperfeat.matching import rescale_points
    from hyperfeat.viz import draw_correspondences

    vis_dir.mkdir(parents=True, exist_ok=True)
    valid = batch["valid"][b].bool()
    size = tuple(int(v) for v in batch["target_size"][b])
    src_size = tuple(int(v) for v in batch["source_size"][b])
    load = (hf_load := int(cfg.features.load_size), hf_load)
    source = tensor_to_pil(batch["source_image"][b] / 2 + 0.5).resize(src_size)
    target = tensor_to_pil(batch["target_image"][b] / 2 + 0.5).resize(size)
    src_points = rescale_points(batch["source_points"][b][valid].float(), load, src_size)
    gt = batch["target_points_orig"][b][valid].float()
    bbox = batch["target_bbox"][b]
    side = max(size) if torch.isnan(bbox).any() else float(max(bbox[2] - bbox[0], bbox[3] - bbox[1]))
    threshold = 0.1 * side
    name = str(batch["pair_id"][b]).replace("/", "_")
    draw_correspondences(source, target, src_points, pred.cpu(), gt, None, threshold,
                         out_path=vis_dir / f"{name}.png", title=f"{batch['category'][b]} {name}")
