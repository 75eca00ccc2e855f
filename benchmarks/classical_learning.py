"""Does training the aggregation network learn? Measured on the classical backbone, real images.

The classical backbone (``backbone=classical``, hyperfeat/model/classical.py) is a weight-free
filter bank with the shape of the diffusion feature bank, whose descriptors describe real images:
a proxy on which learning gives real numbers on a CPU (not the paper's Stable Diffusion ones).

``semantic`` (this file's default): for each seed (network initialisation and batch order)

* train data: real CUB-200 pairs of the first half of the classes (001-025 of the shared 50), plus
  every image of those classes warped (homography + colour jitter) with exact truth;
* held-out data: CUB pairs of the other classes (026-050) and PF-WILLOW's 900 pairs (no image of
  either is seen in training);
* networks on the same frozen bank: ``untrained`` (the network as that seed initialises it, what
  training starts from), ``concat-all`` (every raw (timestep, layer) map L2-normalised and
  concatenated: the training-free baseline of the paper, SD-Concat-All), ``trained``;
* PCK@0.05/0.1 (bbox: PF-WILLOW's keypoint box, CUB's bird box) by the evaluation's own matcher
  (nearest neighbour of bilinearly upsampled descriptors, points rescaled to the original image).

Raw maps are computed once per image into the feature cache (a temporary folder) and read back by
every run. Mean ± std over the seeds; the mixing weights of each trained network are drawn.

``--tapvid RUN``: the temporal half on real tracks. ``benchmarks/video_training.py --overrides
backbone=classical …`` trains, per seed, a network on tracked frame pairs (``video_supervised``)
and one by the cycle walk on raw frames (``video_selfsup``) of the DAVIS train sequences; this
evaluates its networks (the ``--reuse`` work folder RUN, the record ``--record``) and each seed's
untrained network on the real TAP-Vid-DAVIS tracks of the held-out sequences only (strided
queries, TAP-Vid metrics), before and after test-time adaptation to each video.

``--tapvid-learn WORK``: temporal learning on the TAP-Vid-DAVIS clips themselves, split as the video
presets split DAVIS (21 train / 9 held-out). Per seed, from that seed's untrained network: ``tracks``
(the correspondence loss on frame pairs of the train clips' real tracks plus warped copies of their
frames: 15 clips' ~30 tracks alone are memorised, held-out matching falls), ``walk`` (the
cycle walk on the train clips' raw frames, no labels, ending where ``--walk-home`` says: frame 0, its
mirror, or its raw maps shifted), and self-supervised on the same raw
frames without any label: ``warp`` (the correspondence loss of warped copies of the train clips'
frames, homography + colour jitter, the warp being the truth) and ``walk+warp`` (that plus the
walk); scored on the held-out clips beside the untrained network, concat-all and the
untrained network adapted to each held-out clip, by the walk (``tta``) and on warped copies of the
clip's own frames (``tta_warp``). Settings were chosen on a split of the train clips (15 fit / 6
validation: ``--validation``), never on the held-out ones; the defaults are the kept ones (each
correspondence loss at temperature 0.01, the walk at 0.002: at 0.07 none beat concat-all).
``--reuse JSON`` takes each row an earlier record made with the row's own settings
(:data:`REUSE_SETTINGS`), checked seed by seed against its untrained network's scores (within
:data:`REUSE_NOISE`).

    OMP_NUM_THREADS=1 python benchmarks/classical_learning.py [--seeds 0 1 2] [--steps 300]
    python benchmarks/classical_learning.py --from-json benchmarks/classical_learning.json   # table only
    OMP_NUM_THREADS=1 python benchmarks/video_training.py --overrides backbone=classical features.num_steps=4 \
        "features.save_steps=[3,1,0]" --models video_supervised video_selfsup --out benchmarks/classical_video_training.json
    OMP_NUM_THREADS=1 python benchmarks/classical_learning.py --tapvid <its work folder> \
        --record benchmarks/classical_video_training.json --out benchmarks/classical_tapvid.json
    OMP_NUM_THREADS=1 python benchmarks/classical_learning.py --tapvid-learn <work folder> --tta-steps 10 \
        --tta-lr 1e-4 --tta-warp-steps 40 --tta-warp-lr 3e-3 --ss-steps 600 --walk-home shift \
        --walk-temperature 0.002 --walk-lr 1e-3 --walk-steps 300 --trainings tracks walk warp \
        [--reuse <an earlier record>]   # writes benchmarks/classical_tapvid_learning.json, .txt, _mixing.png
    ... --tapvid-learn <work folder> --validation --seeds 0 --out <json>   # the same on the validation split
    ... --tapvid-learn <work folder> --seeds <s> --trainings walk --tta-rows \
        --overrides aggregation.projection_dim=128 --out <seed json>   # the walk, 128-D (one process a seed),
    ... --merge <seed jsons> --out benchmarks/classical_tapvid_walk_d128.json   # merged: its own record
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA_ROOT = Path(os.environ.get("HYPERFEAT_DATA_ROOT", ROOT.parent / "shared" / "data"))

from hyperfeat.io import safe_torch_load  # noqa: E402
from hyperfeat.train.adapt import WARP_GEOMETRY  # noqa: E402

ALPHAS = (0.05, 0.1)
METHODS = ("untrained", "concat-all", "trained")
HELD_OUT = ("pf_willow", "cub_heldout")
NUM_POINTS = 16  # points per training pair (CUB has at most 15 parts; warps get a 4×4 grid)
WARP = WARP_GEOMETRY  # the warps of the warped pairs: those of the warp adaptation (hyperfeat.train.adapt)

Describe = Callable[[torch.Tensor], torch.Tensor]  # raw (B, S, C, R, R) → descriptors (B, D, R, R)


def base_overrides(tmp: Path, args) -> list[str]:
    return [
        "backbone=classical",
        f"paths.data_root={DATA_ROOT}",
        f"paths.output_dir={tmp / 'out'}",
        f"train.cache_dir={tmp / 'cache'}",
        f"train.lr={args.lr}",
        "logger.backend=none",
        f"train.pairs_per_step={args.pairs_per_step}",
        *args.overrides,
    ]


def strip_images(item: dict, cache) -> dict:
    """A pair item with its two images replaced by their cache keys (the raw maps are looked up)."""
    out = {k: v for k, v in item.items() if k not in ("source_image", "target_image")}
    out["source_key"], out["target_key"] = cache.key(item["source_image"]), cache.key(item["target_image"])
    return out


def fill(cache, extractor, dataset, indices, what: str, chunk: int = 16) -> tuple[list[dict], dict]:
    """Raw maps of every image of ``dataset[indices]`` into the cache; the items without images and
    the unique images by key."""
    items, images = [], {}
    for i in tqdm(indices, desc=f"raw maps: {what}", unit="pair", leave=False):
        item = dataset[i]
        stripped = strip_images(item, cache)
        images.setdefault(stripped["source_key"], item["source_image"])
        images.setdefault(stripped["target_key"], item["target_image"])
        items.append(stripped)
    keys = list(images)
    for start in range(0, len(keys), chunk):
        cache.get_or_compute(torch.stack([images[k] for k in keys[start : start + chunk]]), extractor)
    return items, images


def raw_of(cache, extractor, images: dict, keys: list[str]) -> torch.Tensor:
    """(B, S, C, R, R) float32 of the images ``keys`` (read from the cache)."""
    return cache.get_or_compute(torch.stack([images[k] for k in keys]), extractor)


def concat_all(raw: torch.Tensor) -> torch.Tensor:
    """SD-Concat-All on raw (B, S, C, R, R): each (timestep, layer) map L2-normalised over its channels,
    concatenated; (B, S·C, R, R). (As describe/raw.py's concat-all; the classical maps arrive
    normalised per location, the bilinear resize only blurs that.)"""
    return F.normalize(raw, dim=2).flatten(1, 2)


def concat_all_layers(raw: torch.Tensor, channels: list[int]) -> torch.Tensor:
    parts = torch.split(raw, channels, dim=2)  # per layer (B, S, C_l, R, R)
    return torch.cat([concat_all(p) for p in parts], dim=1)  # (B, S·C, R, R)


@torch.no_grad()
def held_out_pck(items: list[dict], images: dict, describe: Describe, cache, extractor, load_size: int) -> dict:
    """PCK of ``describe`` on the pairs ``items`` (each image described once)."""
    from hyperfeat.data.pairs.base import collate_pairs
    from hyperfeat.eval.metrics.pck import PCK
    from hyperfeat.eval.semantic import update_pck

    keys = list(dict.fromkeys(k for it in items for k in (it["source_key"], it["target_key"])))
    desc = {}
    for start in range(0, len(keys), 16):
        chunk = keys[start : start + 16]
        for key, d in zip(chunk, describe(raw_of(cache, extractor, images, chunk))):
            desc[key] = d  # (D, R, R)
    metric = PCK(alphas=ALPHAS)
    dummy = torch.zeros(3, 1, 1)
    for it in items:
        batch = collate_pairs([{**it, "source_image": dummy, "target_image": dummy}])
        update_pck(metric, batch, desc[it["source_key"]][None], desc[it["target_key"]][None], load_size)
    result = metric.compute()
    return {f"pck_bbox@{a:g}": float(result[f"pck_bbox@{a:g}"]) for a in ALPHAS}


def train_network(cfg, backbone, items: list[dict], images: dict, cache, seed: int, steps: int) -> tuple:
    """The module's own training step and optimiser on cached raw maps; (module, losses)."""
    from hyperfeat.data.pairs.base import collate_pairs
    from hyperfeat.train.module import HyperfeatModule

    torch.manual_seed(seed)
    module = HyperfeatModule.from_config(cfg, backbone)
    optimizer = module.configure_optimizers()
    order = torch.Generator().manual_seed(seed)
    per_step = int(cfg.train.pairs_per_step)
    perm, pos, losses = torch.randperm(len(items), generator=order), 0, []
    dummy = torch.zeros(3, 1, 1)
    module.train()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.log.*")  # no Trainer attached: logging is a no-op
        for step in tqdm(range(steps), desc=f"train seed {seed}", unit="step", leave=False):
            if pos + per_step > len(items):
                perm, pos = torch.randperm(len(items), generator=order), 0
            chosen = [items[int(i)] for i in perm[pos : pos + per_step]]
            pos += per_step
            batch = collate_pairs([{**it, "source_image": dummy, "target_image": dummy} for it in chosen])
            batch["source_raw"] = raw_of(cache, module.extractor, images, [it["source_key"] for it in chosen])
            batch["target_raw"] = raw_of(cache, module.extractor, images, [it["target_key"] for it in chosen])
            loss = module.training_step(batch, step)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    module.eval()
    return module, losses


def semantic(args) -> dict:
    from hyperfeat.config import load_config
    from hyperfeat.data.pairs import build_pair_dataset
    from hyperfeat.data.pairs.synthetic import SyntheticPairs
    from hyperfeat.model.backbone import load_backbone
    from hyperfeat.model.features import FeatureExtractor
    from hyperfeat.train.cache import FeatureCache
    from hyperfeat.viz.mixing import label_timestep_values

    torch.set_num_threads(1)
    started = time.time()
    tmp = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="hyperfeat-classical-learning-"))
    base = base_overrides(tmp, args)
    cfg = load_config(overrides=base)
    load = int(cfg.features.load_size)
    backbone = load_backbone(cfg)
    extractor = FeatureExtractor(backbone, cfg.features)
    cache = FeatureCache(cfg.train.cache_dir, cfg)

    cub = build_pair_dataset(
        load_config(
            overrides=[*base, "data=cub", f"data.num_pairs={args.cub_pairs}", f"data.max_points={NUM_POINTS}"]
        ).data,
        "test",
        load,
    )
    categories = sorted({r.category for r in cub.records})
    train_cats = set(categories[: len(categories) // 2])
    cub_train = [i for i, r in enumerate(cub.records) if r.category in train_cats]
    cub_held = [i for i, r in enumerate(cub.records) if r.category not in train_cats]
    train_files = sorted({str(p) for i in cub_train for p in (cub.records[i].source_path, cub.records[i].target_path)})
    warped = SyntheticPairs(
        train_files,
        load,
        "all",
        seed=0,
        pairs_per_image=args.warps_per_image,
        num_points=NUM_POINTS,
        max_points=NUM_POINTS,
        **WARP,
    )
    willow = build_pair_dataset(load_config(overrides=[*base, "data=pf_willow"]).data, "test", load)
    willow_idx = list(range(len(willow)))[:: max(1, len(willow) // args.willow_pairs)][: args.willow_pairs]

    t0 = time.time()
    train_real, img_a = fill(cache, extractor, cub, cub_train, "CUB train classes")
    train_warp, img_b = fill(cache, extractor, warped, list(range(len(warped))), "warped CUB train images")
    held = {
        "cub_heldout": fill(cache, extractor, cub, cub_held, "CUB held-out classes"),
        "pf_willow": fill(cache, extractor, willow, willow_idx, "PF-WILLOW"),
    }
    images = {**img_a, **img_b}
    for _, imgs in held.values():
        images.update(imgs)
    assert not {p for i in cub_held for p in (cub.records[i].source_path, cub.records[i].target_path)} & set(
        map(Path, train_files)
    ), "held-out CUB images must not be trained on"
    raw_seconds = time.time() - t0
    train_items = train_real + train_warp
    channels = list(extractor.channels)

    record = {
        "settings": {k: v for k, v in vars(args).items() if k != "func"},
        "backbone": {
            "model": "classical",
            "load_size": load,
            "output_resolution": int(cfg.features.output_resolution),
            "save_steps": list(cfg.features.save_steps),
            "num_steps": int(cfg.features.num_steps),
            "channels": channels,
            "projection_dim": int(cfg.aggregation.projection_dim),
        },
        "data": {
            "train_real_pairs": len(train_real),
            "train_warped_pairs": len(train_warp),
            "train_classes": sorted(train_cats),
            "held_out_pairs": {k: len(v[0]) for k, v in held.items()},
            "held_out_classes": sorted(set(categories) - train_cats),
        },
        "raw_seconds": raw_seconds,
        "per_seed": {},
    }
    out = Path(args.out)
    if args.baseline:  # no seed: no network
        record["concat-all"] = {
            name: held_out_pck(items, imgs, lambda raw: concat_all_layers(raw, channels), cache, extractor, load)
            for name, (items, imgs) in held.items()
        }
        out.write_text(json.dumps(record, indent=2))
    for seed in args.seeds:
        torch.manual_seed(seed)
        from hyperfeat.train.module import HyperfeatModule

        untrained = HyperfeatModule.from_config(cfg, backbone).aggregation.eval()
        per = record["per_seed"][seed] = {}
        per["untrained"] = {
            name: held_out_pck(items, imgs, untrained, cache, extractor, load) for name, (items, imgs) in held.items()
        }
        t1 = time.time()
        module, losses = train_network(cfg, backbone, train_items, images, cache, seed, args.steps)
        network = module.aggregation
        per["trained"] = {
            name: held_out_pck(items, imgs, network, cache, extractor, load) for name, (items, imgs) in held.items()
        }
        per["loss_first"], per["loss_last"] = float(np.mean(losses[:25])), float(np.mean(losses[-25:]))
        per["train_seconds"] = time.time() - t1
        per["mixing"] = network.mixing_grid().detach().tolist()  # (S, L)
        print(
            f"seed {seed}: "
            + "; ".join(f"{m} {per[m]}" for m in ("untrained", "trained"))
            + f"; loss {per['loss_first']:.3f} → {per['loss_last']:.3f}",
            flush=True,
        )
        record["seconds"] = time.time() - started
        out.write_text(json.dumps(record, indent=2))  # after every seed
    record["layer_names"], record["timestep_values"] = (
        extractor.layer_names,
        label_timestep_values(str(cfg.features.mode), int(cfg.features.num_steps), extractor.save_steps),
    )
    out.write_text(json.dumps(record, indent=2))
    print(f"wrote {out}")
    if "concat-all" in record:
        finish(record, out)
    return record


def merge(paths: list[str], out: Path) -> dict:
    """One record of several runs' seeds (e.g. one process per seed over the same --work folder)."""
    records = [json.loads(Path(p).read_text()) for p in paths]
    record = dict(records[0])
    record["per_seed"] = {k: v for r in records for k, v in r["per_seed"].items()}
    if "warped_pairs" in record:  # --tapvid-learn records: one process per seed, the same work folder
        for key in ("layer_names", "channels", "save_steps"):  # written when a run ends
            record[key] = next(r[key] for r in records if key in r)
        record["seconds"] = sum(r["seconds"] for r in records)
        record["settings"] = {**record["settings"], "seeds": sorted(int(k) for k in record["per_seed"])}
        out.write_text(json.dumps(record, indent=2))
        tapvid_learning_report(record, out)
        return record
    if "num_queries" in record:  # held-out TAP-Vid records
        record["seconds"] = sum(r["seconds"] for r in records)
        out.write_text(json.dumps(record, indent=2))
        tapvid_report(record, out)
        return record
    record["concat-all"] = next(r["concat-all"] for r in records if "concat-all" in r)
    record["seconds"] = max(r["seconds"] for r in records)
    record["settings"] = {
        **record["settings"],
        "seeds": sorted(int(k) for k in record["per_seed"]),
        "merged_from": [Path(p).name for p in paths],
    }
    out.write_text(json.dumps(record, indent=2))
    finish(record, out)
    return record


def finish(record: dict, out: Path) -> None:
    """The table and the mixing weights of every seed's trained network, side by side."""
    from hyperfeat.viz.mixing import MixingPanel, plot_mixing_comparison

    b = record["backbone"]
    panels = [
        MixingPanel(
            np.array(per["mixing"]),
            b["save_steps"],
            record["layer_names"],
            f"semantic, seed {seed}",
            b["channels"],
            record["timestep_values"],
        )
        for seed, per in record["per_seed"].items()
    ]
    plot_mixing_comparison(panels, out.with_name(out.stem + "_mixing.png"))
    report(record, out)


def mean_std(values) -> str:
    return f"{100 * np.mean(values):.1f} ± {100 * np.std(values):.1f}"


def report(record: dict, out: Path) -> None:
    seeds = list(record["per_seed"])
    b, d = record["backbone"], record["data"]
    lines = [
        f"Semantic learning on the classical backbone (weight-free proxy, not Stable Diffusion): "
        f"{len(seeds)} seeds, {record['settings']['steps']} steps × {record['settings']['pairs_per_step']} pairs; "
        f"{b['load_size']} px, {b['output_resolution']}² maps, labels {b['save_steps']} of {b['num_steps']}, "
        f"D = {b['projection_dim']} (PCK, %, bbox)"
    ]
    head = (
        f"{'network':<14}" + "".join(f"{f'{s} @{a:g}':>22}" for s in HELD_OUT for a in ALPHAS) + f"{'train loss':>20}"
    )
    lines += [head, "-" * len(head)]
    for method in METHODS:
        row = f"{method:<14}"
        for s in HELD_OUT:
            for a in ALPHAS:
                values = (
                    [record["concat-all"][s][f"pck_bbox@{a:g}"]]
                    if method == "concat-all"
                    else [record["per_seed"][k][method][s][f"pck_bbox@{a:g}"] for k in seeds]
                )
                row += f"{mean_std(values):>22}"
        if method == "trained":
            first = [record["per_seed"][k]["loss_first"] for k in seeds]
            last = [record["per_seed"][k]["loss_last"] for k in seeds]
            row += f"{f'{np.mean(first):.2f} → {np.mean(last):.2f}':>20}"
        lines.append(row)
    lines += [
        "-" * len(head),
        f"train: {d['train_real_pairs']} real CUB pairs of classes {d['train_classes'][0]} … {d['train_classes'][-1]} "
        f"+ {d['train_warped_pairs']} warped pairs of their images; held out: {d['held_out_pairs']['pf_willow']} "
        f"PF-WILLOW pairs, {d['held_out_pairs']['cub_heldout']} CUB pairs of classes {d['held_out_classes'][0]} … "
        f"{d['held_out_classes'][-1]}",
        f"untrained: the network as each seed initialises it; concat-all: every raw map L2-normalised and "
        f"concatenated (no network, one value); mean ± std over seeds {', '.join(map(str, seeds))}; "
        f"total {record['seconds'] / 60:.1f} min",
    ]
    text = "\n".join(lines)
    print(text)
    out.with_suffix(".txt").write_text(text + "\n")


TRACK_KEYS = ("average_jaccard", "average_pts_within_thresh", "occlusion_accuracy")
TAPVID_MODELS = ("untrained", "video_supervised", "video_selfsup")


def stored_raw_maps(probe, frames: torch.Tensor, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """A video's raw maps and its mirror's (:func:`hyperfeat.train.adapt.video_raw_maps`), read from
    ``path`` when an earlier run or seed made them, else made and kept there."""
    from hyperfeat.train.adapt import video_raw_maps

    if path.is_file():
        return safe_torch_load(path, "raw-map cache file")
    raw, mirrored = video_raw_maps(probe, frames)[0], video_raw_maps(probe, frames, mirrored=True)[0]
    torch.save((raw, mirrored), path)
    return raw, mirrored


def tapvid(args) -> dict:
    """Held-out TAP-Vid-DAVIS tracking of a video-training run's networks, with and without TTA."""
    import lightning as L

    from benchmarks.video_training import PLAN, common_overrides, walk_adapt_settings
    from hyperfeat.api import Hyperfeatures
    from hyperfeat.config import load_config
    from hyperfeat.data.videos.tapvid import sample_queries, tapvid_from_config
    from hyperfeat.eval.metrics.tapvid import TapVidMetrics
    from hyperfeat.model.backbone import load_backbone
    from hyperfeat.model.checkpoint import load_checkpoint
    from hyperfeat.train.adapt import adapt_network
    from hyperfeat.train.module import module_class
    from hyperfeat.video.frames import frames_from_uint8

    torch.set_num_threads(1)
    started = time.time()
    run = json.loads(Path(args.record).read_text())
    settings = run["settings"]
    work = Path(args.tapvid)
    held = list(run["held_out_sequences"])
    base = common_overrides(work, 0, "x", settings["steps"], settings["lr"])
    cfg_sup = load_config(overrides=["experiment=video_supervised", *base, *settings["overrides"], *settings["sup"]])
    backbone = load_backbone(cfg_sup)
    hf_cfg = load_config(
        overrides=[
            "backbone=tiny",
            *PLAN,
            f"paths.data_root={DATA_ROOT}",
            *settings["overrides"],
            "task=tapvid",
            f"data.sequences=[{','.join(held)}]",
            f"video.tracker={args.tracker}",
        ]
    )
    dataset = tapvid_from_config(hf_cfg.data)
    assert set(dataset.names) <= set(held) and not set(dataset.names) & set(run["train_sequences"])
    mode, stride = str(hf_cfg.data.query_mode), int(hf_cfg.data.query_stride)
    probe = Hyperfeatures(hf_cfg, backbone, module_class(cfg_sup).from_config(cfg_sup, backbone=backbone).aggregation)
    videos = []
    stored = work / "tapvid_raw"  # the raw maps of each video (and of its mirror), kept for later seeds' runs
    stored.mkdir(exist_ok=True)
    for name in tqdm(dataset.names, desc="TAP-Vid raw maps", unit="video"):
        item = dataset.load(name)
        frames = frames_from_uint8(item.frames)  # (T, 3, H, W) in [0, 1]
        raw, mirrored = stored_raw_maps(probe, frames, stored / f"{name}.pt")
        videos.append((item, frames, sample_queries(item.points, item.occluded, mode, stride), raw, mirrored))

    @torch.no_grad()
    def score(hf, network) -> dict:
        network.eval()
        metric = TapVidMetrics(query_mode=mode)
        for item, frames, queries, raw, _ in videos:
            metric.update(*track_args(hf, network, raw, item, frames, queries))
        out = metric.compute()
        return {k: float(out[k]) for k in TRACK_KEYS}

    def track_args(hf, network, raw, item, frames, queries):
        desc = torch.cat([network(raw[i : i + 8].float()) for i in range(0, len(raw), 8)])  # (T, D, R, R)
        tracks, visible = hf.track(frames, queries.queries, descriptors=desc)
        gt_points, gt_occluded = queries.targets(item.points, item.occluded)
        return queries.queries, gt_points, gt_occluded, tracks, ~visible, item.size

    record = {
        "settings": {
            "record": Path(args.record).name,
            "tta_steps": args.tta_steps,
            "tta_lr": args.tta_lr,
            "tracker": args.tracker,
            "tta_walk": args.tta_walk,
            "query_mode": mode,
            "query_stride": stride,
            "overrides": settings["overrides"],
            "train_steps": settings["steps"],
        },
        "held_out_sequences": list(dataset.names),
        "num_queries": int(sum(len(v[2]) for v in videos)),
        "per_seed": {},
    }
    for seed in args.seeds:
        per = record["per_seed"][seed] = {}
        L.seed_everything(seed)  # as video_training.py: the untrained network of this seed
        networks = {"untrained": (module_class(cfg_sup).from_config(cfg_sup, backbone=backbone).aggregation, None)}
        for name in args.tapvid_models:
            if name != "untrained":
                networks[name] = load_checkpoint(work / name / str(seed) / "last.ckpt")
        for name, (network, meta) in networks.items():
            hf = Hyperfeatures(hf_cfg, backbone, network, meta)
            entry = per[name] = {"tracking": score(hf, network)}
            if args.tta_steps > 0 and name in args.tta_models:
                metric, before, after = TapVidMetrics(query_mode=mode), [], []
                for item, frames, queries, raw, mirrored in tqdm(videos, desc=f"TTA {name} seed {seed}", leave=False):
                    result = adapt_network(
                        hf,
                        None,
                        walk_adapt_settings(args, seed),
                        raw=raw,
                        raw_mirrored=mirrored,
                    )
                    metric.update(*track_args(hf, result.network, raw, item, frames, queries))
                    before.append(result.loss_before)
                    after.append(result.loss_after)
                out = metric.compute()
                entry["tta"] = {
                    "tracking": {k: float(out[k]) for k in TRACK_KEYS},
                    "walk_before": float(np.mean(before)),
                    "walk_after": float(np.mean(after)),
                    "mirrored": bool(result.mirror),
                }
            print(f"seed {seed} {name}: {entry}", flush=True)
    record["seconds"] = time.time() - started
    out = Path(args.out)
    out.write_text(json.dumps(record, indent=2))
    print(f"wrote {out}")
    tapvid_report(record, out)
    return record


def video_train(args) -> None:
    """Train ``video_supervised`` and ``video_selfsup`` for ``--seeds`` into the work folder
    ``--video-train`` exactly as ``video_training.py`` does (its configs, its folder layout), without
    its evaluation, and write the record ``--record`` that ``--tapvid`` reads. Several processes
    (one per seed) may share the folder: the feature cache is keyed by content."""
    from benchmarks.video_training import common_overrides
    from hyperfeat.config import load_config
    from hyperfeat.data.videos.temporal import build_temporal_dataset
    from hyperfeat.model.backbone import load_backbone
    from hyperfeat.train.trainer import train

    torch.set_num_threads(1)
    work = Path(args.video_train)
    overrides = ["backbone=classical", *args.overrides]
    base = common_overrides(work, 0, "x", args.video_steps, args.video_lr)
    cfg_walk = load_config(overrides=["experiment=video_selfsup", *base, *overrides])
    load = int(cfg_walk.features.load_size)
    backbone = load_backbone(cfg_walk)
    seconds = {}
    for seed in args.seeds:
        for name in ("video_supervised", "video_selfsup"):
            cfg = load_config(
                overrides=[
                    f"experiment={name}",
                    *common_overrides(work, seed, name, args.video_steps, args.video_lr),
                    *overrides,
                ]
            )
            t0 = time.time()
            train(cfg, backbone=backbone, enable_progress_bar=False)
            seconds[f"{name}/{seed}"] = time.time() - t0
    record = {
        "settings": {
            "steps": args.video_steps,
            "lr": args.video_lr,
            "overrides": overrides,
            "sup": [],
            "seeds": args.seeds,
            "train_seconds": seconds,
        },
        "train_sequences": sorted(build_temporal_dataset(cfg_walk.data, "train", load).videos.names),
        "held_out_sequences": sorted(build_temporal_dataset(cfg_walk.data, "val", load).videos.names),
    }
    Path(args.record).write_text(json.dumps(record, indent=2))
    print(f"wrote {args.record}")


def tapvid_report(record: dict, out: Path) -> None:
    seeds = list(record["per_seed"])
    s = record["settings"]
    lines = [
        f"Held-out TAP-Vid-DAVIS on the classical backbone (weight-free proxy, not Stable Diffusion): "
        f"{len(record['held_out_sequences'])} held-out videos × 32 frames, {record['num_queries']} {s['query_mode']} "
        f"queries; networks of {s['record']} ({s['train_steps']} steps); TAP-Vid metrics, %"
    ]
    head = f"{'network':<44}{'AJ':>14}{'δ_avg':>14}{'OA':>14}{'walk loss before → after':>30}"
    lines += [head, "-" * len(head)]
    for name in [m for m in TAPVID_MODELS if m in record["per_seed"][seeds[0]]]:
        for tta in (False, True):
            entries = [record["per_seed"][k][name] for k in seeds]
            if tta and not all("tta" in e for e in entries):
                continue
            values = [e["tta"]["tracking"] if tta else e["tracking"] for e in entries]
            label = name + (f" + TTA ({s['tta_steps']} steps, lr {s['tta_lr']:g})" if tta else "")
            walk = (
                (
                    f"{np.mean([e['tta']['walk_before'] for e in entries]):.3f} → "
                    f"{np.mean([e['tta']['walk_after'] for e in entries]):.3f}"
                )
                if tta
                else ""
            )
            lines.append(
                f"{label:<44}" + "".join(f"{mean_std([v[k] for v in values]):>14}" for k in TRACK_KEYS) + f"{walk:>30}"
            )
    lines += [
        "-" * len(head),
        f"held-out videos: {', '.join(record['held_out_sequences'])}",
        f"mean ± std over seeds {', '.join(map(str, seeds))}; total {record['seconds'] / 60:.1f} min",
    ]
    text = "\n".join(lines)
    print(text)
    out.with_suffix(".txt").write_text(text + "\n")


TAPVID_LEARN = ("untrained", "concat-all", "tracks", "walk", "warp", "walk+warp")
TRAININGS = ("tracks", "walk", "warp", "walk+warp")
# --reuse: settings every reused row needs equal, and each row's own (a row is recomputed when its own differ)
REUSE_COMMON = ("tracker", "validation", "warp_every", "overrides")
_WALK = ("walk_steps", "walk_lr", "walk_clips", "walk_pool", "walk_across_batch", "walk_home", "walk_shift")
_WALK += ("walk_temperature", "walk_strides", "walk_edge_dropout", "walk_frames")
REUSE_SETTINGS = {
    "tracks": ("track_steps", "track_lr", "track_pairs", "warp_pairs", "track_temperature"),
    "walk": _WALK,
    "warp": ("ss_steps", "ss_lr", "ss_warp_pairs", "ss_temperature"),
    "walk+warp": (
        "ss_steps",
        "ss_lr",
        "ss_warp_pairs",
        "ss_temperature",
        "ss_walk",
        "ss_walk_pool",
        "walk_clips",
        *_WALK[4:],
    ),
    "tta": ("tta_steps", "tta_lr"),
    "tta_warp": ("tta_warp_steps", "tta_warp_lr", "tta_objective", "tta_warps", "tta_warp_weight", "tta_temperature"),
}
REUSE_BEFORE = {  # a record older than a setting was made with this value of it
    "walk_home": "mirror",
    "walk_shift": 0.25,
    "walk_strides": [1, 4],
    "walk_edge_dropout": 0.0,
    "walk_frames": 4,
    **dict.fromkeys(("walk_temperature", "track_temperature", "ss_temperature", "tta_temperature"), 0.07),
}
# the untrained network must score as in the reused record: to 1e-4 (0.01 AJ point), since a fresh process may
# differ in the last float digits (seed 1: AJ 0.220790 against 0.220801)
REUSE_NOISE = 1e-4


def tapvid_track_pairs(videos: dict, rng: np.random.Generator, count: int, max_delta: int, load: int) -> list[tuple]:
    """``count`` frame pairs (name, t1, t2, points_1 (N, 2), points_2 (N, 2)) of the real TAP-Vid tracks of
    ``videos``: |t2 − t1| in [1, max_delta], the tracks visible in both frames, points in the L × L load frame
    (the frames are squashed to L × L, so x·L/W, y·L/H)."""
    names, out = list(videos), []
    while len(out) < count:
        item = videos[names[int(rng.integers(len(names)))]]["item"]
        points, occluded = item.points, item.occluded  # (N, T, 2) pixels, (N, T)
        frames = points.shape[1]
        t1, delta = int(rng.integers(frames)), int(rng.integers(1, max_delta + 1))
        t2 = t1 + delta if t1 + delta < frames else t1 - delta
        seen = (~occluded[:, t1] & ~occluded[:, t2]).nonzero().flatten()
        if t2 < 0 or len(seen) == 0:
            continue
        scale = torch.tensor([load / item.size[0], load / item.size[1]])
        out.append((item.name, t1, t2, points[seen, t1] * scale, points[seen, t2] * scale))
    return out


def warped_frames(names: list[str], load: int, extractor, every: int, seed: int) -> list[tuple]:
    """Dense exact tracks beside the sparse real ones: each ``every``-th of the first 32 DAVIS frames of the
    clips ``names`` and a warped copy (homography + colour jitter, :class:`SyntheticPairs`, 8 × 8 grid of
    points); (raw_1, raw_2 (S, C, R, R) float16, points_1, points_2 (N, 2), valid (N,)) per pair."""
    from hyperfeat.data.pairs.synthetic import SyntheticPairs

    root = DATA_ROOT / "davis2017" / "JPEGImages" / "480p"
    files = [str(p) for n in names for p in sorted((root / n).glob("*.jpg"))[:32:every]]
    pairs = SyntheticPairs(files, load, "all", seed=seed, pairs_per_image=2, num_points=64, **WARP)
    out = []
    with torch.no_grad():
        for start in tqdm(range(0, len(pairs), 16), desc="warped train frames", unit="batch", leave=False):
            items = [pairs[i] for i in range(start, min(len(pairs), start + 16))]
            raw_a = extractor.run(torch.stack([it["source_image"] for it in items])).half()  # (b, S, C, R, R)
            raw_b = extractor.run(torch.stack([it["target_image"] for it in items])).half()
            for it, a, b in zip(items, raw_a, raw_b):
                valid = torch.as_tensor(it["valid"]).bool()
                points = [torch.nan_to_num(torch.as_tensor(it[k]).float()) for k in ("source_points", "target_points")]
                out.append((a, b, *points, valid))
    return out


def train_on_tracks(network, videos: dict, warps: list[tuple], args, seed: int, load: int) -> tuple:
    """Supervised temporal training: each step ``--track-pairs`` real-track frame pairs of the train clips and
    ``--warp-pairs`` warped train frames, the correspondence loss at ``--track-temperature``, AdamW.
    Returns (network, losses)."""
    from hyperfeat.train.losses import correspondence_loss

    network = copy.deepcopy(network).train().requires_grad_(True)
    optimiser = torch.optim.AdamW(network.parameters(), lr=args.track_lr, weight_decay=0.0)
    rng, losses = np.random.default_rng([seed, 2]), []
    for _ in tqdm(range(args.track_steps), desc=f"tracks seed {seed}", unit="step", leave=False):
        pairs = tapvid_track_pairs(videos, rng, args.track_pairs, 8, load)
        chosen = [warps[int(i)] for i in rng.integers(len(warps), size=args.warp_pairs)]
        rows = [(p[3], p[4], torch.ones(len(p[3]), dtype=torch.bool)) for p in pairs] + [w[2:] for w in chosen]
        n = max(len(r[0]) for r in rows)
        pts_a, pts_b = torch.zeros(len(rows), n, 2), torch.zeros(len(rows), n, 2)
        valid = torch.zeros(len(rows), n, dtype=torch.bool)  # (B, N)
        for i, (a, b, v) in enumerate(rows):
            pts_a[i, : len(a)], pts_b[i, : len(b)], valid[i, : len(v)] = a, b, v
        raw_a = torch.stack([videos[p[0]]["raw"][p[1]] for p in pairs] + [w[0] for w in chosen]).float()
        raw_b = torch.stack([videos[p[0]]["raw"][p[2]] for p in pairs] + [w[1] for w in chosen]).float()
        desc_a, desc_b = network(torch.cat([raw_a, raw_b])).chunk(2)  # (B, D, R, R) each
        loss = correspondence_loss(
            desc_a, desc_b, pts_a, pts_b, valid, load_size=load, temperature=args.track_temperature
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    return network.eval().requires_grad_(False), losses


def walk_loss(network, videos: dict, rng: np.random.Generator, args, pool: int) -> torch.Tensor:
    """The cycle walk (:func:`cycle_walk_loss`) over ``--walk-clips`` clips of ``--walk-frames`` raw frames of
    ``videos``, ``--walk-strides`` (1-4) apart, forwards or backwards, maps average-pooled by ``pool``, ending
    where ``--walk-home`` says: on frame 0 itself (plain), on its mirror image, or on its raw maps shifted by a
    random (dy, dx) of up to ``--walk-shift`` of the grid (a multiple of ``pool`` cells, not both zero)."""
    from hyperfeat.train.losses import cycle_walk_loss, draw_shift, shift_maps

    names, maps, firsts, frames = list(videos), [], [], int(args.walk_frames)
    for _ in range(args.walk_clips):
        video = videos[names[int(rng.integers(len(names)))]]
        stride = int(rng.integers(args.walk_strides[0], args.walk_strides[1] + 1))
        start = int(rng.integers(0, video["raw"].shape[0] - (frames - 1) * stride))
        index = [start + k * stride for k in range(frames)][:: 1 if rng.random() < 0.5 else -1]
        maps.append(video["raw"][index])  # (K, S, C, R, R)
        firsts.append(video["mirrored" if args.walk_home == "mirror" else "raw"][index[0]])
    desc = network(torch.cat(maps).float()).unflatten(0, (len(maps), frames))  # (B, K, D, R, R)
    dropout = float(args.walk_edge_dropout)
    walk = dict(edge_dropout=dropout, across_batch=args.walk_across_batch)
    if dropout > 0:  # the dropped transitions drawn from the step's own stream: reproducible per seed
        walk["generator"] = torch.Generator().manual_seed(int(rng.integers(2**31)))
    if args.walk_home == "plain":
        return cycle_walk_loss(desc, args.walk_temperature, pool, **walk)
    if args.walk_home == "mirror":
        home = network(torch.stack(firsts).float())  # (B, D, R, R)
        return cycle_walk_loss(desc, args.walk_temperature, pool, mirrored_home=home, **walk)
    dy, dx = draw_shift(rng, min(desc.shape[-2:]), pool, args.walk_shift)
    home = network(shift_maps(torch.stack(firsts), dy, dx).float())  # (B, D, R, R)
    return cycle_walk_loss(desc, args.walk_temperature, pool, shifted_home=(home, dy, dx), **walk)


def warp_loss(
    network, warps: list[tuple], rng: np.random.Generator, count: int, load: int, temperature: float
) -> torch.Tensor:
    """The correspondence loss of ``count`` warped train frames (:func:`warped_frames`: exact truth, no labels)."""
    from hyperfeat.train.losses import correspondence_loss

    chosen = [warps[int(i)] for i in rng.integers(len(warps), size=count)]
    raw_a, raw_b = (torch.stack([w[k] for w in chosen]).float() for k in (0, 1))
    pts_a, pts_b, valid = (torch.stack([w[k] for w in chosen]) for k in (2, 3, 4))
    desc_a, desc_b = network(torch.cat([raw_a, raw_b])).chunk(2)  # (B, D, R, R) each
    return correspondence_loss(desc_a, desc_b, pts_a, pts_b, valid, load_size=load, temperature=temperature)


def train_on_walk(network, videos: dict, args, seed: int) -> tuple:
    """Self-supervised temporal training on the train clips' raw frames (no tracks): the cycle walk
    (:func:`walk_loss`, mirrored home: a walk won by position alone fails), ``--walk-steps`` AdamW steps
    at ``--walk-lr``. Returns (network, losses)."""
    network = copy.deepcopy(network).train().requires_grad_(True)
    optimiser = torch.optim.AdamW(network.parameters(), lr=args.walk_lr, weight_decay=0.0)
    rng, losses = np.random.default_rng([seed, 3]), []
    for _ in tqdm(range(args.walk_steps), desc=f"walk seed {seed}", unit="step", leave=False):
        loss = walk_loss(network, videos, rng, args, args.walk_pool)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    return network.eval().requires_grad_(False), losses


def train_on_warps(network, videos: dict, warps: list[tuple], args, seed: int, load: int, walk: float) -> tuple:
    """Self-supervised training on the train clips' raw frames, no labels: the correspondence loss of
    ``--ss-warp-pairs`` warped copies of their frames a step (:func:`warp_loss`; the warp is the truth),
    plus ``walk`` × the mirrored walk (:func:`walk_loss`, pooled by ``--ss-walk-pool``) when ``walk`` > 0; ``--ss-steps`` AdamW steps at
    ``--ss-lr``. Returns (network, losses)."""
    network = copy.deepcopy(network).train().requires_grad_(True)
    optimiser = torch.optim.AdamW(network.parameters(), lr=args.ss_lr, weight_decay=0.0)
    rng, losses = np.random.default_rng([seed, 4]), []
    for _ in tqdm(range(args.ss_steps), desc=f"warps seed {seed}", unit="step", leave=False):
        loss = warp_loss(network, warps, rng, args.ss_warp_pairs, load, args.ss_temperature)
        if walk > 0:
            loss = loss + walk * walk_loss(network, videos, rng, args, args.ss_walk_pool)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    return network.eval().requires_grad_(False), losses


def tapvid_learning(args) -> dict:
    """Temporal learning measured on real TAP-Vid-DAVIS: networks trained on the train clips, scored on the
    held-out clips (never trained on), with the untrained network and concat-all beside them, and test-time
    adaptation of the untrained network to each held-out clip."""
    import lightning as L

    from benchmarks.video_training import PLAN
    from hyperfeat.api import Hyperfeatures
    from hyperfeat.config import load_config
    from hyperfeat.data.videos.tapvid import sample_queries, tapvid_from_config
    from hyperfeat.data.videos.temporal import build_temporal_dataset
    from hyperfeat.eval.metrics.tapvid import TapVidMetrics
    from hyperfeat.model.backbone import load_backbone
    from hyperfeat.train.adapt import AdaptSettings, adapt_network
    from hyperfeat.train.module import module_class
    from hyperfeat.video.frames import frames_from_uint8

    torch.set_num_threads(1)
    started = time.time()
    work = Path(args.tapvid_learn)
    overrides = ["backbone=classical", "features.num_steps=4", "features.save_steps=[3,1,0]", *args.overrides]
    cfg = load_config(
        overrides=["experiment=video_supervised", f"paths.data_root={DATA_ROOT}", "logger.backend=none", *overrides]
    )
    cfg_walk = load_config(
        overrides=["experiment=video_selfsup", f"paths.data_root={DATA_ROOT}", "logger.backend=none", *overrides]
    )
    load = int(cfg.features.load_size)
    train_names = sorted(build_temporal_dataset(cfg_walk.data, "train", load).videos.names)  # the video split
    held_names = sorted(build_temporal_dataset(cfg_walk.data, "val", load).videos.names)
    if args.validation:  # choose settings here: 15 of the train clips fit, the other 6 score
        chosen = set(np.random.default_rng(0).permutation(len(train_names))[:6].tolist())
        held_names = [n for i, n in enumerate(train_names) if i in chosen]
        train_names = [n for i, n in enumerate(train_names) if i not in chosen]
    hf_cfg = load_config(
        overrides=["backbone=tiny", *PLAN, f"paths.data_root={DATA_ROOT}", *overrides, "task=tapvid"]
        + [f"video.tracker={args.tracker}"]
    )
    backbone = load_backbone(cfg)

    def untrained(seed: int):
        L.seed_everything(seed)  # as the trainer seeds a run: the network every training starts from
        return module_class(cfg).from_config(cfg, backbone=backbone).aggregation.eval()

    probe = Hyperfeatures(hf_cfg, backbone, untrained(0))  # the tracker; descriptors are passed in
    dataset = tapvid_from_config(hf_cfg.data)
    stored = work / "tapvid_raw"  # each video's raw maps (and its mirror's), kept for later runs
    stored.mkdir(parents=True, exist_ok=True)
    videos = {}
    for name in tqdm(train_names + held_names, desc="TAP-Vid raw maps", unit="video"):
        item = dataset.load(name)
        frames = frames_from_uint8(item.frames)  # (T, 3, H, W) in [0, 1]
        raw, mirrored = stored_raw_maps(probe, frames, stored / f"{name}.pt")
        queries = sample_queries(item.points, item.occluded, str(hf_cfg.data.query_mode), int(hf_cfg.data.query_stride))
        videos[name] = dict(item=item, queries=queries, raw=raw, mirrored=mirrored)
        if name in held_names:  # the tracker's input; training reads the raw maps only (memory)
            videos[name]["frames"] = frames
    train_videos, held = {n: videos[n] for n in train_names}, {n: videos[n] for n in held_names}
    assert not set(train_videos) & set(held), "held-out clips must not be trained on"
    warps_path = work / f"warps_every{args.warp_every}{'_fit' if args.validation else ''}.pt"
    if not {"tracks", "warp", "walk+warp"} & set(args.trainings):
        warps = []  # no training of this run reads them (memory)
    elif warps_path.is_file():
        warps = safe_torch_load(warps_path, "warped-pair cache file")
    else:
        warps = warped_frames(train_names, load, probe.extractor, args.warp_every, seed=0)
        torch.save(warps, warps_path)

    def describe(network, raw: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([network(raw[i : i + 8].float()) for i in range(0, len(raw), 8)])  # (T, D, R, R)

    def score(network, adapt: Optional[AdaptSettings] = None) -> dict:
        metric, walk = TapVidMetrics(query_mode=str(hf_cfg.data.query_mode)), []
        for v in held.values():
            net = network
            if adapt is not None:  # test-time adaptation to this very clip
                result = adapt_network(
                    Hyperfeatures(hf_cfg, backbone, network),
                    v["frames"],
                    adapt,
                    raw=v["raw"],
                    raw_mirrored=v["mirrored"],
                )
                net = result.network
                walk.append((result.loss_before, result.loss_after, result.warp_before, result.warp_after))
            tracks, visible = probe.track(v["frames"], v["queries"].queries, descriptors=describe(net, v["raw"]))
            truth = v["queries"].targets(v["item"].points, v["item"].occluded)
            metric.update(v["queries"].queries, *truth, tracks, ~visible, v["item"].size)
        out = {k: float(v) for k, v in metric.compute().items() if k in TRACK_KEYS}
        if walk:
            keys = ("walk_before", "walk_after", "warp_before", "warp_after")
            out.update({k: float(np.mean(w)) for k, w in zip(keys, zip(*walk))})
        return out

    record = {
        "settings": {  # folders by name only
            k: (Path(v).name if k in ("tapvid_learn", "reuse", "out") and v else v)
            for k, v in vars(args).items()
            if k != "func"
        },
        "tracker": args.tracker,
        "train_sequences": train_names,
        "held_out_sequences": held_names,
        "num_queries": int(sum(len(v["queries"]) for v in held.values())),
        "warped_pairs": len(warps),
        "concat-all": score(lambda raw: concat_all_layers(raw.float(), list(probe.extractor.channels))),
        "per_seed": {},
    }
    out_path = Path(args.out)
    earlier = {}  # --reuse: rows of an earlier record made with the same settings, by seed
    if args.reuse:
        old = json.loads(Path(args.reuse).read_text())
        differ = [k for k in REUSE_COMMON if old["settings"].get(k, False) != record["settings"].get(k, False)]
        if differ:
            raise SystemExit(f"--reuse: {args.reuse} was run with other settings: {', '.join(differ)}")

        def same(row: str) -> bool:  # the row's own settings (a record older than a setting used its default)
            return all(
                old["settings"].get(k, REUSE_BEFORE.get(k, False)) == record["settings"].get(k, False)
                for k in REUSE_SETTINGS[row]
            )

        earlier = {
            k: {
                **{n: v[n] for n in TRAININGS if n in v and same(n)},
                "untrained": {**{n: v["untrained"][n] for n in ("tta", "tta_warp") if n in v["untrained"] and same(n)}},
                "scores": {m: v["untrained"][m] for m in TRACK_KEYS},
            }
            for k, v in old["per_seed"].items()
        }
    ttas = {  # the adaptations of the untrained network to each held-out clip: row key → settings
        "tta": AdaptSettings(steps=args.tta_steps, lr=args.tta_lr, mirror=True, objective="walk"),
        "tta_warp": AdaptSettings(
            steps=args.tta_warp_steps,
            lr=args.tta_warp_lr,
            mirror=True,
            objective=args.tta_objective,
            warps=args.tta_warps,
            warp_weight=args.tta_warp_weight,
            warp_temperature=args.tta_temperature,
        ),
    }
    for seed in args.seeds:
        start = untrained(seed)
        per = record["per_seed"][seed] = {"untrained": score(start)}
        reused = earlier.get(str(seed), {})
        if reused and any(abs(reused["scores"][k] - per["untrained"][k]) > REUSE_NOISE for k in TRACK_KEYS):
            raise SystemExit(f"--reuse: seed {seed}'s untrained network scores otherwise than in {args.reuse}")
        for key in args.tta_rows:
            t0 = time.time()
            if key in reused.get("untrained", {}):
                per["untrained"][key] = {**reused["untrained"][key], "reused": True}
            else:
                per["untrained"][key] = score(start, AdaptSettings(**{**vars(ttas[key]), "seed": seed}))
            print(f"seed {seed} untrained + {key}: {per['untrained'][key]} ({time.time() - t0:.0f} s)", flush=True)
        trainings = {
            "tracks": lambda: train_on_tracks(start, train_videos, warps, args, seed, load),
            "walk": lambda: train_on_walk(start, train_videos, args, seed),
            "warp": lambda: train_on_warps(start, train_videos, warps, args, seed, load, walk=0.0),
            "walk+warp": lambda: train_on_warps(start, train_videos, warps, args, seed, load, walk=args.ss_walk),
        }
        for name in args.trainings:
            if name in reused:  # the earlier run's row (same code, seed and settings)
                per[name] = {**reused[name], "reused": True}
                continue
            fit = trainings[name]
            t0 = time.time()
            network, losses = fit()
            per[name] = {
                **score(network),
                "loss_first": float(np.mean(losses[:25])),
                "loss_last": float(np.mean(losses[-25:])),
                "seconds": time.time() - t0,
                "mixing": network.mixing_grid().tolist(),  # (S, L)
            }
            shown = {k: v for k, v in per[name].items() if k != "mixing"}
            print(f"seed {seed} {name}: {shown}", flush=True)
            out_path.write_text(json.dumps(record, indent=2))
        print(f"seed {seed}: " + "; ".join(f"{k} {v}" for k, v in per.items() if k != "mixing"), flush=True)
        record["seconds"] = time.time() - started
        out_path.write_text(json.dumps(record, indent=2))
    record["layer_names"] = list(probe.extractor.layer_names)
    record["channels"] = list(probe.extractor.channels)
    record["save_steps"] = list(cfg.features.save_steps)
    out_path.write_text(json.dumps(record, indent=2))
    tapvid_learning_report(record, out_path)
    return record


def tapvid_learning_report(record: dict, out: Path) -> None:
    """The table (mean ± std over the seeds) and the mixing weights of every trained network."""
    from hyperfeat.viz.mixing import MixingPanel, plot_mixing_comparison

    seeds, s = list(record["per_seed"]), record["settings"]
    lines = [
        f"Temporal learning on the classical backbone (weight-free proxy, not Stable Diffusion): trained on "
        f"{len(record['train_sequences'])} TAP-Vid-DAVIS clips, scored on the {len(record['held_out_sequences'])} "
        f"held-out clips (32 frames, {record['num_queries']} strided queries, tracker {record['tracker']}); "
        f"TAP-Vid metrics, %{'; config overrides: ' + ' '.join(s['overrides']) if s.get('overrides') else ''}"
    ]
    head = f"{'network':<62}{'AJ':>13}{'δ_avg':>13}{'OA':>13}{'loss first → last':>26}"
    lines += [head, "-" * len(head)]
    per_seed = [record["per_seed"][k] for k in seeds]
    labels = {
        "tracks": f"tracks: {s['track_steps']} steps, T {s.get('track_temperature', 0.07):g}, real + warped frames",
        "walk": f"walk: {s['walk_steps']} steps, T {s.get('walk_temperature', 0.07):g}, "
        f"{s.get('walk_home', 'mirror')} home, {s.get('walk_frames', 4)} frames (no labels)",
        "warp": f"warp: {s.get('ss_steps')} steps, T {s.get('ss_temperature', 0.07):g}, warped raw frames (no labels)",
        "walk+warp": f"warp + {s.get('ss_walk', 0):g} × walk: {s.get('ss_steps')} steps, T {s.get('ss_temperature', 0.07):g} "
        "(no labels)",
    }
    rows = [
        ("untrained (what training starts from)", [e["untrained"] for e in per_seed], None),
        ("concat-all (raw maps, no network)", [record["concat-all"]], None),
    ]
    rows += [(labels[k], [e[k] for e in per_seed], ("loss_first", "loss_last")) for k in TRAININGS if k in per_seed[0]]
    tta_labels = {
        "tta": f"untrained + TTA ({s['tta_steps']} steps, lr {s['tta_lr']:g}, mirrored walk)",
        "tta_warp": f"untrained + TTA ({s.get('tta_warp_steps')} steps, lr {s.get('tta_warp_lr', 0):g}, "
        f"{s.get('tta_objective')}{'' if s.get('tta_objective') == 'walk' else ', ' + str(s.get('tta_warps')) + ' warps'}"
        f"{'' if s.get('tta_objective') == 'walk' else ', T ' + format(s.get('tta_temperature', 0.07), 'g')})",
    }
    for key, label in tta_labels.items():
        if key in per_seed[0]["untrained"]:
            walked = s.get("tta_objective") != "warp" or key == "tta"
            loss = ("walk_before", "walk_after") if walked else ("warp_before", "warp_after")
            rows.append((label, [e["untrained"][key] for e in per_seed], loss))
    tta_note = (
        "TTA rows: walk loss of fixed clips (warp objective: warp loss of the warped copies) of each held-out clip "
        "before → after adapting to it; "
        if any(key in per_seed[0]["untrained"] for key in tta_labels)
        else ""
    )
    for label, entries, loss in rows:
        values = "".join(f"{mean_std([e[k] for e in entries]):>13}" for k in TRACK_KEYS)
        extra = (
            f"{np.mean([e[loss[0]] for e in entries]):.3f} → {np.mean([e[loss[1]] for e in entries]):.3f}"
            if loss
            else ""
        )
        lines.append(f"{label:<62}{values}{extra:>26}")
    lines += [
        "-" * len(head),
        f"train clips: {', '.join(record['train_sequences'])}",
        f"held-out clips: {', '.join(record['held_out_sequences'])}",
        f"{tta_note}mean ± std over seeds {', '.join(map(str, seeds))}; total {record['seconds'] / 60:.1f} min",
    ]
    text = "\n".join(lines)
    print(text)
    out.with_suffix(".txt").write_text(text + "\n")
    panels = [
        MixingPanel(
            np.array(record["per_seed"][k][name]["mixing"]),
            record["save_steps"],
            record["layer_names"],
            f"{name}, seed {k}",
            record["channels"],
            None,
        )
        for name in TRAININGS
        for k in seeds
        if name in record["per_seed"][k]
    ]
    if panels:  # a run of test-time adaptation rows alone trains no network
        plot_mixing_comparison(panels, out.with_name(out.stem + "_mixing.png"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--pairs-per-step", type=int, default=4)
    parser.add_argument("--cub-pairs", type=int, default=1000, help="CUB pairs sampled over the 50 classes")
    parser.add_argument("--willow-pairs", type=int, default=300, help="PF-WILLOW pairs (evenly spaced of 900)")
    parser.add_argument("--warps-per-image", type=int, default=2)
    parser.add_argument("--overrides", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "classical_learning.json"))
    parser.add_argument("--work", default=None, help="the work folder (feature cache) of an earlier or parallel run")
    parser.add_argument(
        "--no-baseline",
        dest="baseline",
        action="store_false",
        help="leave concat-all out (another process of the same --work measures it)",
    )
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON", help="merge per-seed records into --out")
    parser.add_argument("--from-json", default=None, help="only print the table of a record")
    parser.add_argument(
        "--tapvid",
        default=None,
        metavar="RUN",
        help="a video_training.py work folder: evaluate its "
        "networks on held-out TAP-Vid-DAVIS (with --record, its JSON)",
    )
    parser.add_argument("--record", default=None, help="the video_training.py JSON of --tapvid's run")
    parser.add_argument("--tta-steps", type=int, default=20)
    parser.add_argument("--tta-lr", type=float, default=1e-3)
    parser.add_argument(
        "--video-train",
        default=None,
        metavar="RUN",
        help="train the video networks of --seeds "
        "into the work folder RUN (as video_training.py does) and write --record",
    )
    parser.add_argument("--video-steps", type=int, default=150)
    parser.add_argument("--video-lr", type=float, default=1e-3)
    parser.add_argument(
        "--tracker",
        default="memory",
        help="--tapvid: the point tracker (video.tracker; memory: the one video_training.py measured with)",
    )
    parser.add_argument(
        "--tapvid-models", nargs="*", default=list(TAPVID_MODELS), help="--tapvid: the networks measured"
    )
    parser.add_argument(
        "--tta-walk",
        choices=["auto", "mirrored", "plain"],
        default="auto",
        help="--tapvid: the adaptation walk (auto: the one each network was trained with)",
    )
    parser.add_argument(
        "--tta-models",
        nargs="*",
        default=["untrained", "video_supervised"],
        help="--tapvid: the networks adapted to each held-out video",
    )
    learn = parser.add_argument_group("--tapvid-learn: temporal training on the TAP-Vid-DAVIS train clips")
    learn.add_argument(
        "--tapvid-learn",
        default=None,
        metavar="WORK",
        help="train on the train clips and score the held-out clips of TAP-Vid-DAVIS (raw maps kept in WORK)",
    )
    learn.add_argument("--track-steps", type=int, default=600)
    learn.add_argument("--track-lr", type=float, default=1e-3)
    learn.add_argument("--track-pairs", type=int, default=2, help="real-track frame pairs per step")
    learn.add_argument("--warp-pairs", type=int, default=2, help="warped train frames per step")
    learn.add_argument("--track-temperature", type=float, default=0.01, help="tracks: the loss's logit temperature")
    learn.add_argument("--warp-every", type=int, default=2, help="warp every n-th of the first 32 frames of a clip")
    learn.add_argument("--walk-steps", type=int, default=600)
    learn.add_argument("--walk-lr", type=float, default=1e-3)
    learn.add_argument("--walk-clips", type=int, default=2, help="clips per walk step")
    learn.add_argument("--walk-pool", type=int, default=1, help="the walk's pooling of the maps (1: every cell)")
    learn.add_argument("--walk-across-batch", action="store_true", help="walk over the cells of every clip of a step")
    learn.add_argument(
        "--walk-home", default="shift", choices=["plain", "mirror", "shift"], help="where the walks end (walk_loss)"
    )
    learn.add_argument(
        "--walk-shift", type=float, default=0.25, help="--walk-home shift: most shift, share of the grid"
    )
    learn.add_argument("--walk-temperature", type=float, default=0.002, help="the walk's logit temperature")
    learn.add_argument(
        "--walk-edge-dropout", type=float, default=0.0, help="share of the walk's forward transitions dropped"
    )
    learn.add_argument("--walk-strides", type=int, nargs=2, default=[1, 4], help="frames between the walk's frames")
    learn.add_argument("--walk-frames", type=int, default=4, help="frames of a walk's clip (K: the walk goes K-1 out)")
    learn.add_argument(
        "--reuse",
        default=None,
        metavar="JSON",
        help="take the tracks / walk / walk-TTA rows of an earlier --tapvid-learn record with the same settings "
        "(checked, and each seed's untrained network must score the same)",
    )
    learn.add_argument("--trainings", nargs="*", default=list(TRAININGS), choices=TRAININGS)
    learn.add_argument("--ss-steps", type=int, default=600, help="warp / walk+warp: steps")
    learn.add_argument("--ss-lr", type=float, default=1e-3, help="warp / walk+warp: learning rate")
    learn.add_argument("--ss-temperature", type=float, default=0.01, help="warp / walk+warp: the loss's temperature")
    learn.add_argument("--ss-warp-pairs", type=int, default=4, help="warp / walk+warp: warped train frames per step")
    learn.add_argument("--ss-walk", type=float, default=1.0, help="walk+warp: the walk's weight")
    learn.add_argument("--ss-walk-pool", type=int, default=2, help="walk+warp: the walk's pooling of the maps")
    learn.add_argument("--tta-rows", nargs="*", default=["tta", "tta_warp"], choices=["tta", "tta_warp"])
    learn.add_argument("--tta-objective", default="warp", choices=["walk", "warp", "walk+warp"], help="tta_warp row")
    learn.add_argument("--tta-warp-steps", type=int, default=40)
    learn.add_argument("--tta-warp-lr", type=float, default=3e-3)
    learn.add_argument("--tta-warps", type=int, default=8, help="tta_warp: warped copies of the clip's frames")
    learn.add_argument("--tta-temperature", type=float, default=0.01, help="tta_warp: the warp loss's temperature")
    learn.add_argument("--tta-warp-weight", type=float, default=1.0, help="tta_warp with walk+warp: the warp's weight")
    learn.add_argument(
        "--validation", action="store_true", help="fit on 15 of the train clips, score on the other 6 (choose here)"
    )
    args = parser.parse_args()
    if args.tapvid_learn:
        args.out = (
            args.out
            if args.out != parser.get_default("out")
            else str(ROOT / "benchmarks" / "classical_tapvid_learning.json")
        )
        tapvid_learning(args)
        return
    if args.merge:
        merge(args.merge, Path(args.out))
        return
    if args.from_json:
        record = json.loads(Path(args.from_json).read_text())
        if "warped_pairs" in record:
            tapvid_learning_report(record, Path(args.from_json))
        else:
            (tapvid_report if "num_queries" in record else report)(record, Path(args.out))
        return
    if args.video_train:
        if args.record is None:
            parser.error("--video-train needs --record (where its record goes)")
        video_train(args)
        return
    if args.tapvid:
        if args.record is None:
            parser.error("--tapvid needs --record (the run's JSON)")
        tapvid(args)
        return
    semantic(args)


if __name__ == "__main__":
    main()
