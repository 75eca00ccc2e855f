"""State-change analysis on real DAVIS-2017 val footage: detection of known changes and the
false-event rate on unchanged clips.

For each of the 30 val sequences (first ``--frames`` frames, longer side ``--frame-size``):

* the **unchanged** clip and its **brightness ramp** (gain 1 → 0.55, offset 0 → 0.08): every event
  found there is a false event (reported per 100 frames);
* three clips whose object changes at the middle frame k (``colour``, ``texture``, ``removed``,
  :mod:`hyperfeat.data.videos.state_changes`): a hit is an event within ±2 frames of k whose points
  cover ≥ 25 % of the object's points and < 10 % of the background's (and 4× their rate).

Points: a 10 × 10 lattice split by the frame-0 mask (object points inside, background references
outside). ``truth`` replaces the object's lattice points by the TAP-Vid-DAVIS annotated tracks of
the points visible at frame 0 that lie on the object (exact motion, from the same 30 videos: the
analysis alone, free of tracking errors), the background points tracked as in ``unchanged``.
``unchanged`` reads every clip along tracks made on the unchanged clip by the video tracker
(the analysis on its own); ``self:appearance`` and ``self:query`` let the analysis track each clip
itself (the whole pipeline) with ``changes.tracker`` appearance (follows a changed
point: :func:`hyperfeat.correspond.tracking.track_appearance`) or query (matches the query's own
look). The analysis settings are the config's ``changes`` block. The table gives all clips and
each half of the sequence list: the defaults were chosen on the first half, the second is
held out.

Describers: ``local-stats`` (local colour/texture statistics, no model), ``tiny`` (the tiny
random backbone with an untrained aggregation network, whose descriptors mean little) and
``pretrained:NAME`` — trained hyperfeatures, any name ``Hyperfeatures.from_pretrained`` takes (a
checkpoint, a saved folder, ``dhf-sd15``, a hub id), on the backbone it names; ``--override``
passes config overrides to each describer (e.g. ``backbone.device=cuda``; a local copy of the SD weights:
``backbone.model=<folder> checkpoint.allow_mismatch=[backbone.model]``). Prints a table and writes JSON (default ``benchmarks/state_changes.json``).

    HYPERFEAT_DATA_ROOT=... python benchmarks/state_changes.py --describers local-stats tiny
    # real hyperfeatures, on a GPU with the Stable Diffusion weights at hand:
    HYPERFEAT_DATA_ROOT=... python benchmarks/state_changes.py --describers pretrained:dhf-sd15 \
        --override backbone.device=cuda --truth --out benchmarks/state_changes_sd15.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hyperfeat.config import load_config  # noqa: E402
from hyperfeat.correspond.changes import ChangeSettings, analyse_changes  # noqa: E402
from hyperfeat.data.videos.davis import DavisDataset  # noqa: E402
from hyperfeat.data.videos.state_changes import CHANGE_KINDS, apply_state_change, brightness_ramp, davis_state_change_clip  # noqa: E402
from hyperfeat.eval.table import format_table  # noqa: E402
from hyperfeat.video.changes import mask_queries, video_changes  # noqa: E402
from hyperfeat.video.queries import in_mask  # noqa: E402
from hyperfeat.video.run import describe_frames, track  # noqa: E402


def make_describer(name: str, overrides: Sequence[str] = ()):
    """The describer a ``--describers`` entry names (see the module doc)."""
    if name.startswith("pretrained:"):
        from hyperfeat.api import Hyperfeatures

        return Hyperfeatures.from_pretrained(name.split(":", 1)[1], overrides=list(overrides))
    if name == "local-stats":
        from hyperfeat.describe.stats import LocalStatsDescriber

        return LocalStatsDescriber(load_config(overrides=["features.load_size=128", *overrides]))
    if name == "tiny":
        from hyperfeat.api import Hyperfeatures
        from hyperfeat.model.backbone import load_backbone
        from hyperfeat.model.features import FeatureExtractor
        from hyperfeat.model.checkpoint import build_network

        cfg = load_config(overrides=["backbone=tiny", "features.num_steps=5", "features.save_steps=[4,2,0]", *overrides])
        backbone = load_backbone(cfg)
        torch.manual_seed(0)
        network = build_network(cfg, FeatureExtractor(backbone, cfg.features).channels)
        return Hyperfeatures(cfg, backbone, network)
    raise SystemExit(f"unknown describer {name!r}: local-stats, tiny or pretrained:NAME")


def is_hit(result, k: int, num_obj: int) -> bool:
    background = len(result.is_reference) - num_obj
    for e in result.events:
        on = sum(1 for p in e.points if p < num_obj)
        obj_rate, bg_rate = on / max(num_obj, 1), (len(e.points) - on) / max(background, 1)
        if abs(e.frame - k) <= 2 and obj_rate >= 0.25 and bg_rate < 0.1 and obj_rate > 4 * bg_rate:
            return True
    return False


def truth_points(tapvid, seq: str, frames: int, size: tuple[int, int], first_mask: torch.Tensor):
    """TAP-Vid-DAVIS tracks (``tapvid``: a :class:`TapVidDavis`) of ``seq`` visible at frame 0 and
    on the object → tracks (M, T, 2) in pixels of ``size`` (W, H), visible (M, T)."""
    from hyperfeat.geometry import rescale_points

    video = tapvid.load(seq, frames=False)
    points = rescale_points(video.points[:, :frames], video.size, size)  # (N, T, 2)
    visible = ~video.occluded[:, :frames]
    on = in_mask(first_mask, points[:, 0]) & visible[:, 0]
    return points[on], visible[on]


def run(describer_name: str, root: Path, frames: int, frame_size: int, sequences: list[str], trackers: list[str],
        settings: ChangeSettings, truth: bool = False, overrides: Sequence[str] = ()) -> dict:
    """Per sequence: false events (unchanged clip, brightness ramp) and hits (three changes) along
    tracks of the unchanged clip, and with each of ``trackers`` tracking every clip itself."""
    d = make_describer(describer_name, overrides)
    tapvid = None
    if truth:  # the annotation file is read once, not per sequence
        from hyperfeat.data.videos.tapvid import TapVidDavis

        tapvid = TapVidDavis(root.parent / "tapvid_davis")
    modes = ["unchanged"] + (["truth"] if truth else []) + [f"self:{t}" for t in trackers]
    per_seq = {m: [] for m in modes}
    for seq in sequences:
        base = davis_state_change_clip(root, seq, None, num_frames=frames, frame_size=frame_size)
        size = (int(base.frames.shape[-1]), int(base.frames.shape[-2]))
        q, ref = mask_queries(base.object[0], size, 10)
        num_obj = int((~ref).sum())
        k = len(base) // 2
        clips = {"unchanged": base.frames, "ramp": brightness_ramp(base.frames)}
        for kind in CHANGE_KINDS:
            clips[kind] = apply_state_change(base.frames, base.object, k, kind, name=seq).frames
        desc = {name: describe_frames(d, f, cache_dir=None, progress=False) for name, f in clips.items()}
        tracks, visible = track(d, base.frames, q, descriptors=desc["unchanged"], progress=False)
        if truth:
            obj_tracks, obj_visible = truth_points(tapvid, seq, len(base), size, base.object[0])
            truth_tracks = torch.cat([obj_tracks, tracks[ref]])
            truth_visible = torch.cat([obj_visible, visible[ref]])
            truth_queries = torch.cat([torch.cat([torch.zeros(len(obj_tracks), 1), obj_tracks[:, 0]], 1), q[ref]])
            truth_ref = torch.cat([torch.zeros(len(obj_tracks), dtype=torch.bool), torch.ones(int(ref.sum()), dtype=torch.bool)])
        for mode in modes:
            row = {"sequence": seq, "frames": len(base)}
            objects = len(obj_tracks) if mode == "truth" else num_obj  # object points come first
            for name, f in clips.items():
                if mode == "truth":
                    r = analyse_changes(desc[name], truth_queries, truth_tracks, truth_visible, size, truth_ref, settings)
                elif mode == "unchanged":
                    r = video_changes(d, f, mask=base.object[0], grid=10, tracks=tracks, visible=visible,
                                      descriptors=desc[name], settings=settings)
                else:
                    own = replace(settings, tracker=mode.split(":")[1])
                    r = video_changes(d, f, mask=base.object[0], grid=10, descriptors=desc[name], settings=own)
                row[name] = len(r.events) if name in ("unchanged", "ramp") else is_hit(r, k, objects)
            per_seq[mode].append(row)
        print(f"  {describer_name} {seq}: done", flush=True)

    def summary(rows: list[dict]) -> dict:
        num_frames = max(sum(r["frames"] for r in rows), 1)
        return {"clips": len(rows),
                "false_events_per_100_frames": 100.0 * sum(r["unchanged"] for r in rows) / num_frames,
                "ramp_events_per_100_frames": 100.0 * sum(r["ramp"] for r in rows) / num_frames,
                "detection_rate": {kind: sum(bool(r[kind]) for r in rows) / max(len(rows), 1) for kind in CHANGE_KINDS}}

    half = (len(sequences) + 1) // 2
    return {
        "describer": describer_name,
        "modes": {m: {"all": summary(rows), "first_half": summary(rows[:half]), "second_half": summary(rows[half:]),
                      "hits": {kind: [r["sequence"] for r in rows if r[kind]] for kind in CHANGE_KINDS}}
                  for m, rows in per_seq.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--describers", nargs="+", default=["local-stats", "tiny"])
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--frame-size", type=int, default=160)
    parser.add_argument("--sequences", nargs="*", default=None, help="default: all of val")
    parser.add_argument("--trackers", nargs="*", default=["appearance", "query"],
                        help="trackers that track each clip themselves (changes.tracker values); none: only along unchanged-clip tracks")
    parser.add_argument("--truth", action="store_true",
                        help="also read the object's TAP-Vid-DAVIS annotated tracks (mode truth)")
    parser.add_argument("--changes", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override the config's changes settings, e.g. noise_strength=0 member_ratio=0.5")
    parser.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides of every describer, e.g. backbone.device=cuda for pretrained:NAME")
    parser.add_argument("--out", default=str(Path(__file__).with_name("state_changes.json")))
    args = parser.parse_args()
    root = Path(os.environ.get("HYPERFEAT_DATA_ROOT", Path(__file__).resolve().parents[2] / "shared" / "data")) / "davis2017"
    sequences = args.sequences or DavisDataset(root).sequences
    settings = ChangeSettings.from_config(load_config(overrides=[f"changes.{kv}" for kv in args.changes]).changes)
    results = []
    for name in args.describers:
        start = time.time()
        res = run(name, root, args.frames, args.frame_size, sequences, args.trackers, settings, args.truth, args.override)
        res["seconds"] = round(time.time() - start, 1)
        results.append(res)
    header = ["describer", "tracks", "clips", "false ev/100 fr", "ramp ev/100 fr"] + [f"hit {k}" for k in CHANGE_KINDS]
    rows = []
    for r in results:
        for mode, parts in r["modes"].items():
            for part in ("all", "first_half", "second_half"):
                m = parts[part]
                rows.append([r["describer"], f"{mode} ({part.replace('_', ' ')})", m["clips"],
                             f"{m['false_events_per_100_frames']:.2f}", f"{m['ramp_events_per_100_frames']:.2f}"]
                            + [f"{m['detection_rate'][k]:.2f}" for k in CHANGE_KINDS])
    print(format_table(header, rows))
    Path(args.out).write_text(json.dumps({"settings": {**vars(args), "out": Path(args.out).name},
                                          "changes": vars(settings), "results": results}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    from hyperfeat.errors import HyperfeatError

    try:
        main()
    except HyperfeatError as err:  # a bad name, path or override: one line, no traceback
        raise SystemExit(f"error: {err}") from None
