"""Does training the aggregation network on video help tracking? Tiny backbone, real DAVIS frames.

The DAVIS-2017 sequences are split once (``data.val_fraction`` hold-out, seed 0): training sees
only the train sequences, every number marked "held-out" comes from the other ones. For each
seed (the network's initialisation and the batch order) four networks on the same frozen tiny
backbone (one-step plan, 128 px, 32² maps):

* ``untrained``: the network as initialised by that seed (what training starts from);
* ``smoke``: ``experiment=smoke`` (semantic pairs: warped images), same plan and seed;
* ``video_supervised``: ``experiment=video_supervised`` (frame pairs of synthetic clips made of
  the train sequences, exact tracks, occluded points left out);
* ``video_selfsup``: ``experiment=video_selfsup`` (clips of the train sequences' raw frames, the
  contrastive random walk; no labels).

Measured: the temporal losses (the supervised correspondence loss of tracked frame pairs and the
walk loss of unlabelled clips) on train and held-out data, and point tracking (the default memory
tracker) on synthetic clips built only from held-out sequences (exact tracks and occlusion;
TAP-Vid AJ, δ_avg, OA, query mode "first"). Test-time adaptation: each held-out clip again
after ``--tta-steps`` self-supervised steps on that clip alone. Mean ± std over the seeds.

    OMP_NUM_THREADS=1 python benchmarks/video_training.py [--seeds 0 1 2] [--steps 150] [--clips 6]
    # on a GPU, the real backbone (any backbone and plan: --overrides reach every network's config):
    python benchmarks/video_training.py --overrides backbone=sd15 backbone.device=cuda features.load_size=512 \
        --out benchmarks/video_training_sd15.json
    # re-measure (e.g. other --tta-lr) on the networks of an earlier run, without training again:
    OMP_NUM_THREADS=1 python benchmarks/video_training.py --reuse <its hyperfeat-video-training-* folder> --tta-lr 3e-3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA_ROOT = Path(os.environ.get("HYPERFEAT_DATA_ROOT", ROOT.parent / "shared" / "data"))
PLAN = ["features.num_steps=1", "features.save_steps=[0]"]  # the presets' one-step plan, for smoke too
TRACK_KEYS = ("average_jaccard", "average_pts_within_thresh", "occlusion_accuracy")
MODELS = ("untrained", "smoke", "video_supervised", "video_selfsup")


TTA_WALKS = {"auto": None, "mirrored": True, "plain": False}  # --tta-walk → AdaptSettings.mirror


def walk_adapt_settings(args, seed: int):
    """The walk adaptation these benchmarks measure (``--tta-steps``, ``--tta-lr``, ``--tta-walk``)."""
    from hyperfeat.train.adapt import AdaptSettings

    return AdaptSettings(
        steps=args.tta_steps, lr=args.tta_lr, seed=seed, mirror=TTA_WALKS[args.tta_walk], objective="walk"
    )


def common_overrides(tmp: Path, seed: int, name: str, steps: int, lr: float) -> list[str]:
    return [
        f"paths.data_root={DATA_ROOT}",
        f"paths.output_dir={tmp / 'out'}",
        f"paths.checkpoint_dir={tmp / name / str(seed)}",
        f"train.cache_dir={tmp / 'cache'}",
        f"train.seed={seed}",
        f"train.max_steps={steps}",
        f"train.val_every_n_steps={steps}",
        f"train.lr={lr}",
        "logger.backend=none",
        "train.resume=false",
    ]


def batches(dataset, indices, size):
    for start in range(0, len(indices), size):
        yield [dataset[i] for i in indices[start : start + size]]


@torch.no_grad()
def temporal_losses(network, extractor, cache, sup_data, walk_data, cfg_walk) -> dict[str, float]:
    """Mean supervised correspondence loss over the pairs and mean walk loss over the clips."""
    from hyperfeat.data.pairs.base import collate_pairs
    from hyperfeat.train.losses import correspondence_loss, cycle_walk_loss

    network.eval()
    sup, walk = [], []
    for items in batches(sup_data, list(range(len(sup_data))), 8):
        batch = collate_pairs(items)
        raw = cache.get_or_compute(torch.cat([batch["source_image"], batch["target_image"]]), extractor)
        src, tgt = network(raw).chunk(2)
        sup.append(
            float(
                correspondence_loss(
                    src,
                    tgt,
                    batch["source_points"],
                    batch["target_points"],
                    batch["valid"],
                    load_size=int(cfg_walk.features.load_size),
                )
            )
        )
    clips = [walk_data[i] for i in range(len(walk_data))]
    mixed = []
    for clip in shortcut_clips(clips):
        for store, items in ((walk, clip["real"]), (mixed, clip["mixed"])):
            images = items  # (K, 3, L, L)
            raw = cache.get_or_compute(images, extractor)
            desc = network(raw)[None]  # (1, K, D, R, R)
            store.append(
                float(cycle_walk_loss(desc, float(cfg_walk.train.walk_temperature), int(cfg_walk.train.walk_pool)))
            )
    return {"supervised": float(np.mean(sup)), "walk": float(np.mean(walk)), "walk_mixed": float(np.mean(mixed))}


def shortcut_clips(clips: list[dict]) -> list[dict]:
    """Each clip (``real``: its frames (K, 3, L, L)) beside a ``mixed`` clip whose frame k comes
    from the k-th next clip of another video: a walk that still comes home there matches by
    position, not by content (the walk's shortcut)."""
    out = []
    for v, clip in enumerate(clips):
        frames, used = [clip["frame_images"][0]], {clip["video"]}
        step = v
        while len(frames) < len(clip["frame_images"]):
            step = (step + 1) % len(clips)
            other = clips[step]
            if other["video"] in used:
                if step == v:  # fewer videos than frames: allow repeats
                    used = {clip["video"]}
                continue
            used.add(other["video"])
            frames.append(other["frame_images"][len(frames)])
        out.append({"real": clip["frame_images"], "mixed": torch.stack(frames)})
    return out


def spread(dataset, n: int):
    from torch.utils.data import Subset

    if len(dataset) <= n:
        return dataset
    return Subset(dataset, [int(i) for i in np.linspace(0, len(dataset) - 1, n).round()])


@torch.no_grad()
def track_clip(hf, network, raw, clip) -> dict[str, float]:
    from hyperfeat.eval.metrics.tapvid import TapVidMetrics
    from hyperfeat.video.frames import frames_from_uint8

    network.eval()
    desc = torch.cat([network(raw[i : i + 8].float()) for i in range(0, len(raw), 8)])  # (T, D, R, R)
    queries = torch.from_numpy(clip.queries)
    tracks, visible = hf.track(frames_from_uint8(clip.frames), queries, descriptors=desc)
    metric = TapVidMetrics(query_mode="first")
    metric.update(queries, torch.from_numpy(clip.points), torch.from_numpy(clip.occluded), tracks, ~visible, clip.size)
    out = metric.compute()
    return {k: float(out[k]) for k in TRACK_KEYS}


def mean_std(values) -> str:
    values = [v for v in values if v == v]
    if not values:
        return "–"
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def pct(values) -> str:
    values = [100 * v for v in values if v == v]
    return f"{np.mean(values):.1f} ± {np.std(values):.1f}" if len(values) > 1 else f"{values[0]:.1f}"


def main() -> None:
    import lightning as L

    from hyperfeat.api import Hyperfeatures
    from hyperfeat.config import load_config
    from hyperfeat.data.videos.temporal import build_temporal_dataset, davis_track_clips
    from hyperfeat.model.backbone import load_backbone
    from hyperfeat.model.checkpoint import load_checkpoint
    from hyperfeat.train.adapt import adapt_network, video_raw_maps
    from hyperfeat.train.cache import FeatureCache
    from hyperfeat.train.module import module_class
    from hyperfeat.train.trainer import train
    from hyperfeat.video.frames import frames_from_uint8

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=150, help="training steps of each preset")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--clips", type=int, default=6, help="held-out synthetic tracking clips")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--models", nargs="+", default=list(MODELS[1:]), help="which of the trained networks to train")
    parser.add_argument("--tta-steps", type=int, default=20)
    parser.add_argument("--tta-lr", type=float, default=1e-3)
    parser.add_argument(
        "--tta-walk",
        choices=["auto", "mirrored", "plain"],
        default="auto",
        help="the adaptation walk: AdaptSettings.mirror None (auto: hyperfeat.train.adapt.adapt_mirrored), True or False",
    )
    parser.add_argument("--tta-models", nargs="*", default=["untrained", "video_selfsup", "video_supervised"])
    parser.add_argument(
        "--overrides",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="overrides of every network's config, before --sup/--selfsup: the backbone and plan "
        "(e.g. backbone=sd15 backbone.device=cuda features.load_size=512 on a GPU; default: the tiny one-step plan)",
    )
    parser.add_argument("--sup", nargs="*", default=[], help="extra overrides of the supervised preset")
    parser.add_argument("--selfsup", nargs="*", default=[], help="extra overrides of the self-supervised preset")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "video_training.json"))
    parser.add_argument(
        "--reuse",
        default=None,
        help="the work folder of an earlier run: load its checkpoints "
        "(<folder>/<network>/<seed>/last.ckpt) instead of training (re-measure, e.g. other TTA settings)",
    )
    parser.add_argument("--from-json", default=None, help="only print the table and draw the picture of a record")
    args = parser.parse_args()
    if args.from_json:
        report(json.loads(Path(args.from_json).read_text()), Path(args.out))
        return
    torch.set_num_threads(1)
    started = time.time()

    tmp = Path(args.reuse) if args.reuse else Path(tempfile.mkdtemp(prefix="hyperfeat-video-training-"))
    base = common_overrides(tmp, 0, "x", args.steps, args.lr)
    cfg_sup = load_config(overrides=["experiment=video_supervised", *base, *args.overrides, *args.sup])
    cfg_walk = load_config(overrides=["experiment=video_selfsup", *base, *args.overrides, *args.selfsup])
    backbone = load_backbone(cfg_sup)
    L.seed_everything(0)
    extractor = module_class(cfg_sup).from_config(cfg_sup, backbone=backbone).extractor
    cache = FeatureCache(cfg_sup.train.cache_dir, cfg_sup)
    load = int(cfg_sup.features.load_size)
    # evaluation data: 64 frame pairs and 16 clips of each side of the split
    loss_sets = {
        split: (
            spread(build_temporal_dataset(cfg_sup.data, split, load), 64),
            spread(build_temporal_dataset(cfg_walk.data, split, load), 16),
        )
        for split in ("train", "val")
    }
    held_cfg = load_config(
        overrides=[
            "experiment=video_supervised",
            *base,
            *args.overrides,
            f"data.num_clips={args.clips}",
            f"data.num_frames={args.frames}",
            "data.num_points=32",
        ]
    )
    clips = davis_track_clips(held_cfg.data, "val")  # background, object and occluder: held-out sequences only
    train_names = sorted(build_temporal_dataset(cfg_walk.data, "train", load).videos.names)
    held_names = sorted(build_temporal_dataset(cfg_walk.data, "val", load).videos.names)
    assert not set(train_names) & set(held_names)
    assert all(set(c.name.split("+")) <= set(held_names) for c in clips)
    hf_cfg = load_config(overrides=["backbone=tiny", *PLAN, f"paths.data_root={DATA_ROOT}", *args.overrides])
    probe = Hyperfeatures(hf_cfg, backbone, module_class(cfg_sup).from_config(cfg_sup, backbone=backbone).aggregation)
    clip_raw = [video_raw_maps(probe, frames_from_uint8(c.frames))[0] for c in clips]  # (T, S, C, R, R) each
    clip_mirrored = [
        video_raw_maps(probe, frames_from_uint8(c.frames), mirrored=True)[0] if args.tta_walk != "plain" else None
        for c in clips
    ]

    record = {
        "settings": {**vars(args), "out": Path(args.out).name, "reuse": args.reuse and Path(args.reuse).name},
        "train_sequences": train_names,
        "held_out_sequences": held_names,
        "clips": [c.name for c in clips],
        "per_seed": {},
    }
    for seed in args.seeds:
        per = record["per_seed"][seed] = {}
        networks, metas = {}, {}
        L.seed_everything(seed)
        networks["untrained"] = module_class(cfg_sup).from_config(cfg_sup, backbone=backbone).aggregation
        # (preset, its own defaults, then --overrides, then the preset's extra overrides)
        runs = {
            "smoke": ("experiment=smoke", PLAN, []),
            "video_supervised": ("experiment=video_supervised", [], args.sup),
            "video_selfsup": ("experiment=video_selfsup", [], args.selfsup),
        }
        for name, preset in runs.items():
            if name not in args.models:
                continue
            over = common_overrides(tmp, seed, name, args.steps, args.lr)
            preset_name, preset_defaults, extra = preset
            cfg = load_config(overrides=[preset_name, *over, *preset_defaults, *args.overrides, *extra])
            t0 = time.time()
            last = tmp / name / str(seed) / "last.ckpt"
            if not args.reuse:
                last = train(cfg, backbone=backbone, enable_progress_bar=False)
            elif not last.is_file():
                raise SystemExit(
                    f"--reuse {tmp}: no checkpoint {last}; expected <folder>/{name}/<seed>/last.ckpt of an earlier run"
                )
            networks[name], metas[name] = load_checkpoint(last)
            per.setdefault("train_seconds", {})[name] = time.time() - t0
        for name, network in networks.items():
            entry = per[name] = {"loss": {}, "tracking": {}, "tta": {}}
            for split, (sup_data, walk_data) in loss_sets.items():
                entry["loss"][split] = temporal_losses(network, extractor, cache, sup_data, walk_data, cfg_walk)
            hf = Hyperfeatures(hf_cfg, backbone, network, metas.get(name))  # meta: how it was trained (the auto walk)
            scores = [track_clip(hf, network, raw, clip) for raw, clip in zip(clip_raw, clips)]
            entry["tracking"] = {k: float(np.mean([s[k] for s in scores])) for k in TRACK_KEYS}
            entry["tracking_per_clip"] = scores
            if name in args.tta_models and args.tta_steps > 0:
                adapted_scores, before, after = [], [], []
                for raw, mirrored, clip in zip(clip_raw, clip_mirrored, clips):
                    result = adapt_network(
                        hf,
                        None,
                        walk_adapt_settings(args, seed),
                        raw=raw,
                        raw_mirrored=mirrored,
                    )
                    adapted_scores.append(track_clip(hf, result.network, raw, clip))
                    before.append(result.loss_before)
                    after.append(result.loss_after)
                entry["tta"] = {
                    "tracking": {k: float(np.mean([s[k] for s in adapted_scores])) for k in TRACK_KEYS},
                    "tracking_per_clip": adapted_scores,
                    "walk_before": float(np.mean(before)),
                    "walk_after": float(np.mean(after)),
                    "mirrored": bool(result.mirror),
                }
            print(
                f"seed {seed} {name}: loss {entry['loss']} tracking {entry['tracking']}"
                + (
                    f" tta {entry['tta']['tracking']} walk {entry['tta']['walk_before']:.3f}→{entry['tta']['walk_after']:.3f}"
                    if entry["tta"]
                    else ""
                ),
                flush=True,
            )
    record["seconds"] = time.time() - started
    Path(args.out).write_text(json.dumps(record, indent=2))
    print(f"wrote {args.out}")

    report(record, Path(args.out))


def backbone_name(settings: dict) -> str:
    """What the networks of a record ran on, from its ``--overrides`` (older records: the tiny backbone)."""
    chosen = [
        o.split("=", 1)[1] for o in settings.get("overrides", []) if o.startswith(("backbone=", "backbone.model="))
    ]
    return f"the {chosen[-1]} backbone" if chosen else "the tiny backbone"


def report(record: dict, out: Path) -> None:
    """The table (printed and written beside the JSON as .txt) and the picture (.png) of a record."""
    from hyperfeat.eval.table import format_table

    cfg = record["settings"]
    seeds = list(record["per_seed"].values())
    rows = []
    shown = [m for m in MODELS if m == "untrained" or m in cfg["models"]]
    for name in shown:
        get = lambda path: [eval_path(s[name], path) for s in seeds]  # noqa: E731
        rows.append(
            [
                name,
                mean_std(get("loss.train.supervised")),
                mean_std(get("loss.val.supervised")),
                mean_std(get("loss.train.walk")),
                mean_std(get("loss.val.walk")),
                mean_std(get("loss.val.walk_mixed")),
                *(pct(get(f"tracking.{k}")) for k in TRACK_KEYS),
            ]
        )
    rows.append(None)
    for name in shown:
        if name not in cfg["tta_models"] or cfg["tta_steps"] <= 0:
            continue
        get = lambda path: [eval_path(s[name], path) for s in seeds]  # noqa: E731
        walks = {"mirrored" if s[name]["tta"].get("mirrored") else "plain" for s in seeds}
        walk = (
            f", {'/'.join(sorted(walks))} walk" if cfg.get("tta_walk") else ""
        )  # records before the mirrored walk: plain
        rows.append(
            [
                f"{name} + TTA ({cfg['tta_steps']} steps, lr {cfg['tta_lr']:g}{walk})",
                "",
                "",
                mean_std(get("tta.walk_before")) + " →",
                mean_std(get("tta.walk_after")),
                "",
                *(pct(get(f"tta.tracking.{k}")) for k in TRACK_KEYS),
            ]
        )
    table = format_table(
        [
            "network",
            "sup loss train",
            "sup loss held-out",
            "walk loss train",
            "walk loss held-out",
            "walk, mixed videos",
            "AJ",
            "δ_avg",
            "OA",
        ],
        rows,
        title=f"Temporal training on {backbone_name(cfg)}: {len(seeds)} seeds, {cfg['steps']} steps each; tracking on "
        f"{len(record['clips'])} held-out synthetic clips × {cfg['frames']} frames (TAP-Vid metrics, %)",
        groups=[("temporal losses (lower is better)", 5), ("held-out tracking", 3)],
        notes=[
            f"train sequences: {len(record['train_sequences'])}, held-out: {len(record['held_out_sequences'])} ({', '.join(record['held_out_sequences'])})",
            "sup loss: correspondence cross-entropy of tracked frame pairs (64 per side); walk loss: cycle walk of "
            "16 unlabelled clips per side",
            "walk, mixed videos: the held-out walk with frame k of each clip taken from another video; close to the "
            "real clips' walk loss means the walk is won by position, not content (the shortcut)",
            "TTA rows: walk loss of fixed clips of each held-out clip before → after adapting (mirrored walk: to the mirrored first frame); tracking after adapting",
            f"mean ± std over seeds {', '.join(map(str, cfg['seeds']))}; total {record['seconds'] / 60:.1f} min",
        ],
    )
    print(table)
    out.with_suffix(".txt").write_text(table + "\n")
    plot(record, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.txt')} and {out.with_suffix('.png')}")


def plot(record: dict, path: Path) -> None:
    """Held-out losses, tracking, and tracking after test-time adaptation per network, mean ± std
    over seeds (headless Matplotlib)."""
    from matplotlib.figure import Figure

    seeds = list(record["per_seed"].values())
    cfg = record["settings"]
    names = [m for m in MODELS if m == "untrained" or m in cfg["models"]]
    colours = dict(zip(MODELS, ("tab:gray", "tab:orange", "tab:green", "tab:blue")))

    def stats(name: str, key: str, scale: float) -> tuple[float, float]:
        values = [scale * eval_path(s[name], key) for s in seeds]
        values = [v for v in values if v == v]
        return (float(np.mean(values)), float(np.std(values))) if values else (float("nan"), 0.0)

    fig = Figure(figsize=(12, 3.8), dpi=110)
    panels = [
        (
            "held-out temporal losses (lower is better)",
            [("sup loss", "loss.val.supervised"), ("walk loss", "loss.val.walk")],
            1.0,
        ),
        (
            "held-out tracking (%)",
            [("AJ", "tracking.average_jaccard"), ("δ_avg", "tracking.average_pts_within_thresh")],
            100.0,
        ),
    ]
    width = 0.8 / len(names)
    for p, (title, metrics, scale) in enumerate(panels):
        ax = fig.add_subplot(1, 3, p + 1)
        for n, name in enumerate(names):
            got = [stats(name, key, scale) for _, key in metrics]
            xs = np.arange(len(metrics)) + (n - (len(names) - 1) / 2) * width
            ax.bar(xs, [g[0] for g in got], width, yerr=[g[1] for g in got], capsize=2, label=name, color=colours[name])
        ax.set_xticks(np.arange(len(metrics)), [m for m, _ in metrics])
        ax.set_title(title, fontsize=9)
        if p == 0:
            ax.legend(fontsize=7, loc="lower left")
    ax = fig.add_subplot(1, 3, 3)
    adapted = [m for m in names if m in cfg["tta_models"]]
    for n, name in enumerate(adapted):
        for k, (label, key) in enumerate(
            (("before", "tracking.average_jaccard"), ("after", "tta.tracking.average_jaccard"))
        ):
            mean, std = stats(name, key, 100.0)
            ax.bar(
                n + (k - 0.5) * 0.38,
                mean,
                0.38,
                yerr=std,
                capsize=2,
                color=colours[name],
                hatch="//" if k else None,
                alpha=1.0 if k else 0.55,
            )
    ax.set_xticks(np.arange(len(adapted)), adapted, fontsize=7)
    ax.set_title(f"held-out AJ (%): before (plain) / after (hatched) {cfg['tta_steps']} TTA steps", fontsize=9)
    fig.suptitle(f"{backbone_name(cfg).capitalize()}, real DAVIS frames, {len(seeds)} seed(s), mean ± std", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)


def eval_path(entry: dict, path: str) -> float:
    value = entry
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return float("nan")
        value = value[part]
    return float(value)


if __name__ == "__main__":
    main()
