"""State-change analysis on real DAVIS-2017 val footage: detection of known changes and the
false-event rate on unchanged clips.

For each of the 30 val sequences (first ``--frames`` frames, longer side ``--frame-size``):

* the **unchanged** clip and its **brightness ramp** (gain 1 → 0.55, offset 0 → 0.08): every event
  found there is a false event (reported per 100 frames);
* three clips whose object changes at the middle frame k (``colour``, ``texture``, ``removed``,
  :mod:`hyperfeat.data.videos.state_changes`): a hit is an event within ±2 frames of k whose points
  cover ≥ 25 % of the object's points and < 10 % of the background's (and 4× their rate).

Points: a 10 × 10 lattice split by the frame-0 mask (object points inside, background references
outside). ``tracks: unchanged`` reads the changed clip along tracks made on the unchanged clip
(the analysis on its own); ``tracks: self`` tracks the changed clip itself (the whole pipeline:
an appearance tracker may lose a point whose appearance changed).

Describers: ``local-stats`` (local colour/texture statistics, no model) and ``tiny`` (the tiny
random backbone with an untrained aggregation network, whose descriptors mean little).
Prints a table and writes JSON (default ``benchmarks/state_changes.json``).

    HYPERFEAT_DATA_ROOT=... python benchmarks/state_changes.py --describers local-stats tiny
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hyperfeat.data.videos.davis import DavisDataset  # noqa: E402
from hyperfeat.data.videos.state_changes import CHANGE_KINDS, apply_state_change, brightness_ramp, davis_state_change_clip  # noqa: E402
from hyperfeat.eval.table import format_table  # noqa: E402
from hyperfeat.video.changes import mask_queries, video_changes  # noqa: E402
from hyperfeat.video.run import describe_frames, track  # noqa: E402


def make_describer(name: str):
    if name == "local-stats":
        from hyperfeat.describe.stats import LocalStatsDescriber

        return LocalStatsDescriber()
    if name == "tiny":
        from hyperfeat.api import Hyperfeatures
        from hyperfeat.config import load_config
        from hyperfeat.model.backbone import load_backbone
        from hyperfeat.model.features import FeatureExtractor
        from hyperfeat.model.checkpoint import build_network

        cfg = load_config(overrides=["backbone=tiny", "features.num_steps=5", "features.save_steps=[4,2,0]"])
        backbone = load_backbone(cfg)
        torch.manual_seed(0)
        network = build_network(cfg, FeatureExtractor(backbone, cfg.features).channels)
        return Hyperfeatures(cfg, backbone, network)
    raise SystemExit(f"unknown describer {name!r}")


def is_hit(result, k: int, num_obj: int) -> bool:
    background = len(result.is_reference) - num_obj
    for e in result.events:
        on = sum(1 for p in e.points if p < num_obj)
        obj_rate, bg_rate = on / max(num_obj, 1), (len(e.points) - on) / max(background, 1)
        if abs(e.frame - k) <= 2 and obj_rate >= 0.25 and bg_rate < 0.1 and obj_rate > 4 * bg_rate:
            return True
    return False


def run(describer_name: str, root: Path, frames: int, frame_size: int, sequences: list[str], self_track: bool) -> dict:
    d = make_describer(describer_name)
    rows = {"unchanged_events": 0, "ramp_events": 0, "frames": 0, "clips": 0}
    hits = {f"{kind}/{mode}": [] for kind in CHANGE_KINDS for mode in (("unchanged", "self") if self_track else ("unchanged",))}
    for seq in sequences:
        base = davis_state_change_clip(root, seq, None, num_frames=frames, frame_size=frame_size)
        size = (int(base.frames.shape[-1]), int(base.frames.shape[-2]))
        q, ref = mask_queries(base.object[0], size, 10)
        num_obj = int((~ref).sum())
        desc = describe_frames(d, base.frames, cache_dir=None, progress=False)
        tracks, visible = track(d, base.frames, q, descriptors=desc, progress=False)
        r = video_changes(d, base.frames, mask=base.object[0], grid=10, tracks=tracks, visible=visible, descriptors=desc)
        rows["unchanged_events"] += len(r.events)
        ramp = brightness_ramp(base.frames)
        r = video_changes(d, ramp, mask=base.object[0], grid=10, tracks=tracks, visible=visible)
        rows["ramp_events"] += len(r.events)
        rows["frames"] += len(base)
        rows["clips"] += 1
        k = len(base) // 2
        for kind in CHANGE_KINDS:
            clip = apply_state_change(base.frames, base.object, k, kind, name=seq)
            cdesc = describe_frames(d, clip.frames, cache_dir=None, progress=False)
            r = video_changes(d, clip.frames, mask=clip.object[0], grid=10, tracks=tracks, visible=visible, descriptors=cdesc)
            hits[f"{kind}/unchanged"].append(is_hit(r, k, num_obj))
            if self_track:
                r = video_changes(d, clip.frames, mask=clip.object[0], grid=10, descriptors=cdesc)
                hits[f"{kind}/self"].append(is_hit(r, k, num_obj))
        print(f"  {describer_name} {seq}: done", flush=True)
    per100 = 100.0 / max(rows["frames"], 1)
    return {
        "describer": describer_name, "clips": rows["clips"], "frames": rows["frames"],
        "false_events_per_100_frames": rows["unchanged_events"] * per100,
        "ramp_events_per_100_frames": rows["ramp_events"] * per100,
        "detection_rate": {key: sum(v) / max(len(v), 1) for key, v in hits.items()},
        "hits": {key: [s for s, h in zip(sequences, v) if h] for key, v in hits.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--describers", nargs="+", default=["local-stats", "tiny"])
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--frame-size", type=int, default=160)
    parser.add_argument("--sequences", nargs="*", default=None, help="default: all of val")
    parser.add_argument("--no-self-track", action="store_true")
    parser.add_argument("--out", default=str(Path(__file__).with_name("state_changes.json")))
    args = parser.parse_args()
    root = Path(os.environ.get("HYPERFEAT_DATA_ROOT", Path(__file__).resolve().parents[2] / "shared" / "data")) / "davis2017"
    sequences = args.sequences or DavisDataset(root).sequences
    results = []
    for name in args.describers:
        start = time.time()
        res = run(name, root, args.frames, args.frame_size, sequences, not args.no_self_track)
        res["seconds"] = round(time.time() - start, 1)
        results.append(res)
    kinds = sorted(results[0]["detection_rate"])
    header = ["describer", "clips", "false ev/100 fr", "ramp ev/100 fr"] + [f"hit {k}" for k in kinds]
    rows = [[r["describer"], r["clips"], f"{r['false_events_per_100_frames']:.2f}", f"{r['ramp_events_per_100_frames']:.2f}"]
            + [f"{r['detection_rate'][k]:.2f}" for k in kinds] for r in results]
    print(format_table(header, rows))
    Path(args.out).write_text(json.dumps({"settings": {**vars(args), "out": Path(args.out).name}, "results": results}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
