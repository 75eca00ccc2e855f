"""Any method on a task, and several methods side by side on the same pairs (``eval.py --compare``).

Semantic pairs: every method sees the same pairs (``compare.pairs_per_category`` takes the first
n pairs of each category, a class-stratified subset) and is scored by the same PCK protocol;
dense describers match by nearest neighbour (``eval.matcher``), ``ldm`` by its own argmax. The
table has one row per method: PCK (bbox, every α), PCK@0.1 (bbox) per category, and seconds per
pair (describing and matching, after the backbone is loaded). Video tasks (davis, jhmdb,
tapvid) compare the methods that give dense descriptors (all but ``ldm``), with the task's
scalar results and seconds per video.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional, Sequence

import torch
from tqdm.auto import tqdm

from hyperfeat.config import load_config
from hyperfeat.describe import registry
from hyperfeat.errors import ConfigError
from hyperfeat.eval.metrics.pck import PCK
from hyperfeat.eval.settings import EvalSettings
from hyperfeat.eval.table import format_table
from hyperfeat.geometry import rescale_points

RANDOM_NOTE = (
    "NOTE: backbone 'tiny' is a small RANDOM model: these numbers only show that every method runs; "
    "they say nothing about how well any method corresponds"
)


def stratified_indices(dataset, per_category: Optional[int]) -> list[int]:
    """The first ``per_category`` items of each category, in the data set's order (all if None)."""
    if per_category is None:
        return list(range(len(dataset)))
    records = getattr(dataset, "records", None)
    categories = (
        [r.category for r in records] if records is not None else [dataset[i]["category"] for i in range(len(dataset))]
    )
    seen: dict[str, int] = {}
    keep = []
    for index, category in enumerate(categories):
        if seen.get(category, 0) < per_category:
            seen[category] = seen.get(category, 0) + 1
            keep.append(index)
    return keep


def semantic_pairs(cfg, load_size: int, resample: str = "bilinear"):
    """The test pairs at ``load_size``², resized with the describer's filter (``Describer.resample``)."""
    from hyperfeat.data.pairs import build_pair_dataset

    dataset = build_pair_dataset(cfg.data, "test", load_size)
    dataset.resample = resample
    return torch.utils.data.Subset(dataset, stratified_indices(dataset, cfg.compare.pairs_per_category))


def pck_of_method(method, dataset, cfg, progress: bool = True, name: str = "") -> tuple[dict, float]:
    """PCK results and seconds per pair of a describer or an LDM matcher over ``dataset``."""
    from hyperfeat.data.pairs.base import collate_pairs
    from hyperfeat.describe.ldm import LdmMatcher
    from hyperfeat.eval.semantic import update_pck

    settings = EvalSettings.from_config(cfg)
    metric = PCK(alphas=settings.alphas)
    loader = torch.utils.data.DataLoader(dataset, batch_size=settings.batch_size, collate_fn=collate_pairs)
    load = method.load_size
    start = time.perf_counter()
    for batch in tqdm(loader, desc=f"evaluating {name}", unit="batch", disable=not progress):
        if isinstance(method, LdmMatcher):
            for b in range(len(batch["pair_id"])):
                valid = batch["valid"][b].bool()
                size = tuple(int(v) for v in batch["target_size"][b])
                pred = method.match(
                    batch["source_image"][b], batch["target_image"][b], batch["source_points"][b][valid].float()
                )
                pred = rescale_points(pred, (load, load), size)
                bbox = batch["target_bbox"][b]
                metric.update(
                    pred,
                    batch["target_points_orig"][b][valid].float(),
                    None if torch.isnan(bbox).any() else bbox,
                    size,
                    batch["category"][b],
                )
        else:
            desc = method.describe_batch(torch.cat([batch["source_image"], batch["target_image"]]))
            src, tgt = desc.chunk(2)
            update_pck(metric, batch, src, tgt, load, method=settings.matcher, temperature=settings.softmax_temperature)
    seconds = time.perf_counter() - start
    return metric.compute(), seconds / max(1, len(dataset))


def _build(method: str, cfg, checkpoint, overrides, backbone):
    """The method by its registered name: the checkpoint's own config for the trained ones,
    ``cfg`` (the composed config) for the others."""
    return registry.build(method, overrides, cfg=cfg, checkpoint=checkpoint, backbone=backbone)


def comparison_table(
    rows: Sequence[tuple[str, dict, float]], alphas: Sequence[float], title: str, notes: Sequence[str] = ()
) -> str:
    """One row per method: pairs, points, PCK bbox@α…, PCK bbox@0.1 per category, s/pair."""
    cats = sorted({k[len("cat/") :].rsplit("/", 1)[0] for _, r, _ in rows for k in r if k.startswith("cat/")})
    headers = ["method", "pairs", "points"] + [f"bbox@{a:g}" for a in alphas] + [f"{c}@0.1" for c in cats] + ["s/pair"]
    body = []
    for name, r, seconds in rows:
        pct = lambda key: "-" if key not in r else f"{100 * float(r[key]):.2f}"  # noqa: E731
        body.append(
            [name, str(int(float(r.get("num_pairs", 0)))), str(int(float(r.get("num_points", 0))))]
            + [pct(f"pck_bbox@{a:g}") for a in alphas]
            + [pct(f"cat/{c}/pck_bbox@0.1") for c in cats]
            + [f"{seconds:.2f}"]
        )
    return format_table(headers, body, title=title, notes=notes)


SUMMARY_GROUPS = ("multi_object", "foreground")  # DAVIS's overall J&F, of every object and of the merged one


def headline_keys(results: dict) -> list[str]:
    """The overall scalars of a video task's results: top-level numbers (JHMDB, TAP-Vid) and the
    summary groups' (DAVIS: ``multi_object/J&F`` …), never per-sequence or per-item ones."""
    return [
        k
        for k in results
        if not k.startswith("num_") and ("/" not in k or (k.count("/") == 1 and k.split("/")[0] in SUMMARY_GROUPS))
    ]


def video_table(rows: Sequence[tuple[str, dict, float]], title: str, notes: Sequence[str] = ()) -> str:
    """One row per method: the task's overall scalar results (in %) and seconds per video."""
    keys = list(dict.fromkeys(k for _, r, _ in rows for k in headline_keys(r)))
    headers = ["method"] + keys + ["s/video"]
    body = [
        [name] + [f"{100 * float(r[k]):.2f}" if k in r else "-" for k in keys] + [f"{s:.2f}"] for name, r, s in rows
    ]
    return format_table(headers, body, title=title, notes=notes)


def _write(record: dict, out_json: Optional[str], default_name: str, cfg) -> Path:
    from hyperfeat.eval.runner import _jsonable

    path = Path(out_json) if out_json else Path(cfg.paths.output_dir) / default_name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(record), indent=2))
    print(f"wrote {path}")
    return path


def checkpoint_config(checkpoint: Optional[str], overrides: Sequence[str] = ()):
    """The config the methods are compared under: with a checkpoint, on its backbone and features
    plan (:func:`hyperfeat.model.checkpoint.inference_config`, ``overrides`` on top), so a tiny
    checkpoint compares on the tiny backbone without ``backbone=tiny`` by hand; else the defaults
    and ``overrides``."""
    if checkpoint is None:
        return load_config(overrides=list(overrides))
    from hyperfeat.model.checkpoint import inference_config
    from hyperfeat.model.pretrained import load_pretrained

    _, meta = load_pretrained(checkpoint)
    return inference_config(meta, list(overrides))


def compare(
    overrides: Sequence[str] = (),
    checkpoint: Optional[str] = None,
    methods: Optional[Sequence[str]] = None,
    out_json: Optional[str] = None,
    backbone=None,
    progress: bool = True,
) -> dict:
    """Run several methods on the same pairs (or videos) and print one table."""
    from hyperfeat.eval.runner import VIDEO_TASKS, evaluate_video
    from hyperfeat.model.backbone import load_backbone

    cfg = checkpoint_config(checkpoint, overrides)
    methods = list(methods or cfg.compare.methods)
    for name in methods:
        registry.check_name(name, "compare.methods")
    skipped = [m for m in methods if m in registry.CHECKPOINT_METHODS and checkpoint is None]
    video = str(cfg.task) in VIDEO_TASKS
    skipped += [m for m in methods if video and m not in registry.DENSE]
    methods = [m for m in methods if m not in skipped]
    if not methods:
        raise ConfigError(f"nothing to compare: {', '.join(skipped)} need a checkpoint or dense descriptors")
    random_backbone = str(cfg.backbone.model) == "tiny"
    reasons = {
        m: "no dense descriptors for a video task" if m not in registry.DENSE else "needs --checkpoint" for m in skipped
    }
    notes = [f"skipped: {', '.join(f'{m} ({why})' for m, why in reasons.items())}"] if skipped else []
    if random_backbone:
        print(RANDOM_NOTE)
        notes.append(RANDOM_NOTE)
    if backbone is None and any(registry.REGISTRY[m].uses_backbone for m in methods):
        backbone = load_backbone(cfg)
    rows, datasets = [], {}
    for name in methods:
        method = _build(name, cfg, checkpoint, overrides, backbone)
        if video:
            start = time.perf_counter()
            results, _ = evaluate_video(method, progress=progress)
            count = float(results.get("num_videos", results.get("num_clips", 1)) or 1)
            rows.append((name, results, (time.perf_counter() - start) / count))
            continue
        key = (method.load_size, getattr(method, "resample", "bilinear"))
        if key not in datasets:
            datasets[key] = semantic_pairs(cfg, *key)
        results, seconds = pck_of_method(method, datasets[key], cfg, progress, name)
        rows.append((name, results, seconds))
    if video:
        table = video_table(rows, f"{cfg.task}: methods compared", notes)
    else:
        alphas = list(EvalSettings.from_config(cfg).alphas)
        per = cfg.compare.pairs_per_category
        table = comparison_table(
            rows,
            alphas,
            f"{cfg.data.name}: methods compared on the same pairs" + (f" (first {per} per category)" if per else ""),
            notes,
        )
    print(table)
    record = {
        "task": str(cfg.task),
        "data": str(cfg.data.name),
        "backbone": str(cfg.backbone.model),
        "random_backbone": random_backbone,
        "checkpoint": checkpoint,
        "skipped": skipped,
        "methods": {name: {"results": r, "seconds_per_item": s} for name, r, s in rows},
    }
    _write(record, out_json, f"compare_{cfg.task if video else cfg.data.name}.json", cfg)
    return record


def evaluate_method(
    overrides: Sequence[str] = (),
    checkpoint: Optional[str] = None,
    out_json: Optional[str] = None,
    backbone=None,
    progress: bool = True,
) -> dict:
    """``eval.py method=NAME``: one method (``cfg.method``) on ``cfg.task``; the training-free
    ones need no checkpoint."""
    from hyperfeat.eval.runner import VIDEO_TASKS, evaluate_video
    from hyperfeat.eval.table import format_pck
    from hyperfeat.model.backbone import load_backbone

    cfg = load_config(overrides=list(overrides))
    name = str(cfg.method)
    spec = registry.check_name(name)
    video = str(cfg.task) in VIDEO_TASKS
    if video and not spec.dense:
        raise ConfigError(
            f"method={name} matches points between two images and gives no dense descriptors, so it "
            f"cannot run the video tasks; valid methods for them: {', '.join(registry.DENSE)}"
        )
    registry.require_checkpoint(name, checkpoint)
    random_backbone = str(cfg.backbone.model) == "tiny"
    if random_backbone:
        print(RANDOM_NOTE)
    if backbone is None and spec.uses_backbone and not spec.needs_checkpoint:
        backbone = load_backbone(cfg)
    method = _build(name, cfg, checkpoint, overrides, backbone)
    if video:
        results, table = evaluate_video(method, progress=progress)
    else:
        results, _ = pck_of_method(
            method, semantic_pairs(cfg, method.load_size, getattr(method, "resample", "bilinear")), cfg, progress, name
        )
        table = format_pck(results)
    print(table)
    if random_backbone:
        print(RANDOM_NOTE)
    record = {
        "method": name,
        "task": str(cfg.task),
        "data": str(cfg.data.name),
        "backbone": str(cfg.backbone.model),
        "random_backbone": random_backbone,
        "checkpoint": checkpoint,
        "results": results,
    }
    _write(record, out_json, f"eval_{name}_{cfg.task if video else cfg.data.name}.json", cfg)
    return record
