"""Point tracking on synthetic clips with exact ground truth: the window tracker (the original)
against the memory tracker and its parts, TAP-Vid metrics (AJ, δ_avg, OA; query mode "first").

Clips: :func:`hyperfeat.data.videos.synthetic_tracks.davis_synthetic_clips` — a DAVIS object
cut out by its mask moves over another DAVIS sequence while a third crosses in front of it
(points hidden, then back). Describers: the tiny offline backbone with a tiny untrained
checkpoint (its descriptors carry almost no correspondence: it shows the trackers' behaviour on
uninformative descriptors) and :class:`hyperfeat.describe.patches.PatchDescriber`, a fixed
random projection of colour patches (a weak descriptor that does correspond). Each describer's
descriptors are computed once per clip; every tracker runs on the same ones.

    python benchmarks/tracking.py [--clips 6] [--frames 24] [--out benchmarks/tracking.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA_ROOT = Path(os.environ.get("HYPERFEAT_DATA_ROOT", ROOT.parent / "shared" / "data"))

KEYS = ("average_jaccard", "average_pts_within_thresh", "occlusion_accuracy")


def variants():
    """name → (tracker, settings): the old tracker, the new defaults and each part switched off."""
    from hyperfeat.config import load_config
    from hyperfeat.correspond.tracker import TrackerSettings
    from hyperfeat.video.run import tracking_kwargs

    cfg = load_config()
    new = TrackerSettings.from_config(cfg.video)
    out = {"window (old)": ("window", tracking_kwargs(cfg)), "memory (new defaults)": ("memory", new)}
    out["  − re-detection"] = ("memory", replace(new, redetect=False))
    out["  − cycle-consistent choice (cycle_select)"] = ("memory", replace(new, cycle_select=False))
    out["  − margin cue (calibrate)"] = ("memory", replace(new, calibrate=False))
    out["  − uninformative fallback (min_margin −∞)"] = ("memory", replace(new, min_margin=float("-inf")))
    out["  − cycle cue"] = ("memory", replace(new, cycle_check=False))
    out["  cues AND-ed (visibility_vote 1)"] = ("memory", replace(new, visibility_vote=1.0))
    out["  − sub-cell refinement"] = ("memory", replace(new, refine_radius=0))
    out["  + template memory (4)"] = ("memory", replace(new, memory_size=4))
    out["  track_radius 6, refine_radius 1 (best here, worse on TAP-Vid)"] = (
        "memory", replace(new, track_radius=6, refine_radius=1))
    out["  redetect_margin 0.05"] = ("memory", replace(new, redetect_margin=0.05))
    for fb in (3.0, 6.0):
        out[f"  fb_threshold {fb:g}"] = ("memory", replace(new, fb_threshold=fb))
    for thr in (0.75, 1.25):
        out[f"  visibility_threshold {thr}"] = ("memory", replace(new, visibility_threshold=thr))
    out["  visibility_quantile 0.95"] = ("memory", replace(new, visibility_quantile=0.95))
    out["  always visible"] = ("all-visible", None)
    return out


def run_tracker(kind, settings, store, queries, size):
    from hyperfeat.correspond.tracker import track_memory
    from hyperfeat.correspond.tracking import track_points

    if kind == "window":
        return track_points(store, queries, size, **settings)
    tracks, visible, _ = track_memory(store, queries, size, settings)
    if kind == "all-visible":
        visible = torch.ones_like(visible)
    return tracks, visible


def main() -> None:
    from benchmarks.tiny_checkpoint import TINY, build_tiny_checkpoint
    from hyperfeat.api import Hyperfeatures
    from hyperfeat.config import load_config
    from hyperfeat.data.videos.synthetic_tracks import davis_synthetic_clips
    from hyperfeat.describe.patches import PatchDescriber
    from hyperfeat.eval.metrics.tapvid import TapVidMetrics
    from hyperfeat.eval.table import format_table
    from hyperfeat.video.frames import frames_from_uint8
    from hyperfeat.correspond.tracker import TrackerSettings
    from hyperfeat.video.stream import describe_stream
    from hyperfeat.video.frames import frame_describer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--points", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--describers", nargs="+", default=["patches", "tiny"])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "tracking.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    clips = list(davis_synthetic_clips(DATA_ROOT / "davis2017", args.clips, args.frames, num_points=args.points,
                                       seed=args.seed))
    describers = {}
    with tempfile.TemporaryDirectory() as tmp:
        if "tiny" in args.describers:
            ckpt = build_tiny_checkpoint(Path(tmp) / "tiny.ckpt")
            describers["tiny backbone"] = Hyperfeatures.from_checkpoint(ckpt, overrides=TINY)
        if "patches" in args.describers:
            describers["patch stand-in"] = PatchDescriber(load_config(overrides=["backbone=tiny", "features.load_size=256"]))
        table = variants()
        record = {"clips": [c.name for c in clips], "frames": args.frames,
                  "occluded_fraction": float(sum(c.occluded.mean() for c in clips) / len(clips)),
                  "defaults": TrackerSettings.from_config(load_config().video).__dict__, "results": {}}
        rows = []
        for dname, describer in describers.items():
            metrics = {name: TapVidMetrics(query_mode="first") for name in table}
            seconds = {name: 0.0 for name in table}
            for clip in clips:
                frames = frames_from_uint8(clip.frames)
                store = describe_stream(iter(frames), frame_describer(describer), len(frames), 4, "float32",
                                        progress=False)
                queries = torch.from_numpy(clip.queries)
                for name, (kind, settings) in table.items():
                    start = time.perf_counter()
                    tracks, visible = run_tracker(kind, settings, store, queries, clip.size)
                    seconds[name] += time.perf_counter() - start
                    metrics[name].update(queries, torch.from_numpy(clip.points), torch.from_numpy(clip.occluded),
                                         tracks, ~visible, clip.size)
            record["results"][dname] = {}
            for name in table:
                values = {k: float(v) for k, v in metrics[name].compute().items()}
                values["seconds"] = seconds[name]
                record["results"][dname][name] = values
                rows.append([f"{dname}: {name.strip() if name.startswith('  ') else name}" if not name.startswith("  ")
                             else f"    {name.strip()}",
                             *(f"{100 * values[k]:.1f}" for k in KEYS), f"{seconds[name]:.1f}"])
            rows.append(None)
    print(format_table(["describer: tracker", "AJ", "δ_avg", "OA", "track s"], rows[:-1],
                       title=f"Synthetic tracking: {len(clips)} clips × {args.frames} frames, exact tracks and occlusion "
                             f"({100 * record['occluded_fraction']:.0f}% of point-frames occluded), TAP-Vid metrics (%)",
                       notes=["indented rows: the new defaults with one part switched off or one value changed",
                              "always visible: the new tracker's positions, every point called visible (the OA of guessing)"]))
    Path(args.out).write_text(json.dumps(record, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
