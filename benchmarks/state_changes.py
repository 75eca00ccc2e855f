"""Changes of state on real DAVIS-2017 val footage, scored like the field: events found by
precision and recall at a temporal tolerance, localisation error, false events on controls.

For each of the 30 val sequences (first ``--frames`` frames, longer side ``--frame-size``),
:mod:`hyperfeat.data.videos.state_changes` makes clips with an exact truth:

* **changes of state** of the object from the middle frame k: ``colour`` (sudden), ``colour-gradual``
  (faded in over 6 frames: one event with a start and an end), ``texture``, ``removed`` (upper half
  cut off), ``part`` (only the left half painted);
* **controls**, no change of state: the unchanged clip itself, ``exposure`` and ``white-balance``
  jumps, a lighting ``ramp``, focus ``blur``, camera ``shake``, ``zoom``, ``compression``.

Scoring (as VOST's transformation subset / Ego4D keyframe localisation): on a change clip the
truth is one event starting at k. A found event *matches* when its start is within
``--tolerance`` (2) frames of k and most of its points lie on the altered pixels (dilated by
one descriptor cell) at the truth's end frame; each truth matches at most one event. Precision =
matched / events found on change clips, recall = matched / truths, F1; localisation: the median
|start − k| (frames) and, for the gradual change, the median |end − true end|; the share of a
matched event's points on the altered pixels (spatial precision). On controls every event is a
false event (per 100 frames). Frame labelling: the states learnt on a change clip label the
next ``--frames`` frames of the same sequence with the same change at another frame (the
share of frames whose object is given the right state).

Points: a ``--grid`` lattice split by the frame-0 mask (object points inside, background
references outside). Tracks: ``truth`` — the object's TAP-Vid-DAVIS annotated tracks (visible at
frame 0; exact motion and occlusion) with the background tracked on the unchanged clip (the
analysis alone); ``unchanged`` — every point tracked on the unchanged clip (the analysis alone,
with a real tracker's errors); ``self`` — each clip tracked on its own descriptors (the whole
pipeline). Geometric controls (shake, zoom) move the given tracks with the frames.

Settings are chosen on the even-indexed sequences (alphabetical; ``tune``) and reported on the
odd ones (``held-out``) and on all. The trivial baseline — no event ever — has recall 0 and no
false event. Descriptors and tracks of each clip are cached (``--cache``), so rerunning the
analysis with other settings (``--changes KEY=VALUE``) is cheap.

    HYPERFEAT_DATA_ROOT=... python benchmarks/state_changes.py --describers classical local-stats
    # real hyperfeatures, on a GPU with the Stable Diffusion weights at hand:
    HYPERFEAT_DATA_ROOT=... python benchmarks/state_changes.py --describers pretrained:dhf-sd15 \
        --override backbone.device=cuda --out benchmarks/state_changes_sd15.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from statistics import median
from typing import Callable, Iterable, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hyperfeat.config import load_config  # noqa: E402
from hyperfeat.correspond.changes import ChangeSettings, StateChanges, analyse_changes  # noqa: E402
from hyperfeat.correspond.track import settings_from_config  # noqa: E402
from hyperfeat.data.videos.davis import DavisDataset  # noqa: E402
from hyperfeat.data.videos.state_changes import (  # noqa: E402
    CHANGE_KINDS,
    CONTROL_KINDS,
    StateChangeClip,
    _resize_masks,
    apply_control,
    apply_state_change,
)
from hyperfeat.describe import registry  # noqa: E402
from hyperfeat.eval.table import format_table  # noqa: E402
from hyperfeat.io import safe_torch_load  # noqa: E402
from hyperfeat.video.changes import change_queries, track_for_changes  # noqa: E402
from hyperfeat.video.queries import in_mask  # noqa: E402
from hyperfeat.video.run import describe_frames  # noqa: E402

CONTROLS = ("unchanged",) + CONTROL_KINDS
MODES = ("truth", "unchanged", "self")
LABEL_KINDS = ("colour", "texture")  # changes whose learnt states label another clip
LABEL_FRAME = 8  # the change's frame in the clip that is labelled


def make_describer(name: str, overrides: Sequence[str] = ()):
    """The describer a ``--describers`` entry names: ``classical`` (weight-free colour and
    gradient features), ``local-stats`` (11 colour statistics), ``tiny`` (random backbone) or
    ``pretrained:NAME`` (trained hyperfeatures, any name ``Hyperfeatures.from_pretrained`` takes)."""
    if name.startswith("pretrained:"):
        from hyperfeat.api import Hyperfeatures

        return Hyperfeatures.from_pretrained(name.split(":", 1)[1], overrides=list(overrides))
    if name in ("classical", "local-stats"):  # weight-free, by their registered names, at 128 px
        return registry.build(name, ["features.load_size=128", *overrides])
    if name == "tiny":
        from hyperfeat.api import Hyperfeatures
        from hyperfeat.model.backbone import load_backbone
        from hyperfeat.model.checkpoint import build_network
        from hyperfeat.model.features import FeatureExtractor

        cfg = load_config(
            overrides=["backbone=tiny", "features.num_steps=5", "features.save_steps=[4,2,0]", *overrides]
        )
        backbone = load_backbone(cfg)
        torch.manual_seed(0)
        network = build_network(cfg, FeatureExtractor(backbone, cfg.features).channels)
        return Hyperfeatures(cfg, backbone, network)
    raise SystemExit(f"unknown describer {name!r}: classical, local-stats, tiny or pretrained:NAME")


def describer_key(d) -> str:
    ident = d.identity() if hasattr(d, "identity") else {"class": type(d).__name__}
    return hashlib.sha256(
        json.dumps({"class": type(d).__name__, **ident}, sort_keys=True, default=str).encode()
    ).hexdigest()[:16]


def truth_points(tapvid, seq: str, frames: int, size: tuple[int, int], first_mask: torch.Tensor):
    """TAP-Vid-DAVIS tracks of ``seq`` visible at frame 0 and on the object → tracks (M, T, 2) in
    pixels of ``size`` (W, H), visible (M, T)."""
    from hyperfeat.geometry import rescale_points

    video = tapvid.load(seq, frames=False)
    points = rescale_points(video.points[:, :frames], video.size, size)  # (N, T, 2)
    visible = ~video.occluded[:, :frames]
    on = in_mask(first_mask, points[:, 0]) & visible[:, 0]
    return points[on], visible[on]


def make_clips(frames: torch.Tensor, obj: torch.Tensor, seq: str) -> dict[str, StateChangeClip]:
    k = frames.shape[0] // 2
    clips = {"unchanged": StateChangeClip(f"{seq}-unchanged", frames, obj, torch.zeros_like(obj), None, "unchanged")}
    for kind in CHANGE_KINDS:
        clips[kind] = apply_state_change(frames, obj, k, kind, name=seq)
    for kind in CONTROL_KINDS:
        clips[kind] = apply_control(frames, obj, kind, name=seq)
    return clips


def prepare(
    d, root: Path, tapvid, seq: str, num_frames: int, frame_size: int, grid: int, settings: ChangeSettings, cache: Path
) -> Optional[dict]:
    """Clips, descriptors and the three kinds of tracks of one sequence (cached)."""
    tracker = {"tracker": settings.tracker, "settings": repr(settings_from_config(d.cfg, settings.tracker))}
    key = hashlib.sha256(
        json.dumps([describer_key(d), seq, num_frames, frame_size, grid, tracker, 3], sort_keys=True).encode()
    ).hexdigest()[:20]
    path = cache / f"{seq}-{key}.pt"
    if path.is_file():
        return safe_torch_load(path, "cached clip")
    seq_data = DavisDataset(root, sequences=[seq]).load(seq, frame_size=frame_size)
    if len(seq_data) < num_frames + LABEL_FRAME or seq_data.masks.shape[0] != len(seq_data):
        return None
    size_hw = (int(seq_data.frames.shape[-2]), int(seq_data.frames.shape[-1]))
    size = (size_hw[1], size_hw[0])
    obj_all = _resize_masks(seq_data.masks != 0, size_hw)
    frames, obj = seq_data.frames[:num_frames], obj_all[:num_frames]
    clips = make_clips(frames, obj, seq)
    queries, is_ref = change_queries(obj[0], size, grid)
    desc = {name: describe_frames(d, c.frames, cache_dir=None, progress=False) for name, c in clips.items()}
    cfg = d.cfg
    base_tracks, base_vis = track_for_changes(desc["unchanged"], queries, size, cfg, settings)
    tracks: dict[str, dict] = {m: {} for m in MODES}
    obj_tracks, obj_vis = truth_points(tapvid, seq, num_frames, size, obj[0])
    truth_queries = torch.cat([torch.cat([torch.zeros(len(obj_tracks), 1), obj_tracks[:, 0]], 1), queries[is_ref]])
    truth_ref = torch.cat(
        [torch.zeros(len(obj_tracks), dtype=torch.bool), torch.ones(int(is_ref.sum()), dtype=torch.bool)]
    )
    for name, clip in clips.items():
        tracks["unchanged"][name] = (clip.map_points(base_tracks), base_vis)
        tracks["truth"][name] = (
            clip.map_points(torch.cat([obj_tracks, base_tracks[is_ref]])),
            torch.cat([obj_vis, base_vis[is_ref]]),
        )
        tracks["self"][name] = track_for_changes(desc[name], queries, size, cfg, settings)
    # the next frames of the sequence, changed at another frame: the clip whose frames the learnt states label
    later, later_obj = seq_data.frames[-num_frames:], obj_all[-num_frames:]
    other = {kind: apply_state_change(later, later_obj, LABEL_FRAME, kind, name=seq) for kind in LABEL_KINDS}
    out = {
        "seq": seq,
        "size": size,
        "queries": queries,
        "is_ref": is_ref,
        "truth_queries": truth_queries,
        "truth_ref": truth_ref,
        "clips": {
            n: {"kind": c.kind, "start": c.change_frame, "end": c.change_end, "changed": c.changed, "frames": len(c)}
            for n, c in clips.items()
        },
        "desc": {n: v.half() for n, v in desc.items()},
        "tracks": tracks,
        "other": {
            k: {"desc": describe_frames(d, c.frames, cache_dir=None, progress=False).half(), "object": c.object}
            for k, c in other.items()
        },
    }
    torch.save(out, path)
    return out


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    return F.max_pool2d(mask[None, None].float(), 2 * radius + 1, stride=1, padding=radius)[0, 0] > 0


def score_clip(result: StateChanges, clip: dict, tolerance: int, cell: int) -> dict:
    """Events of one clip against its truth (see the module doc)."""
    events = [(e.start, e.end, e.points) for e in result.events]
    if clip["start"] is None:
        return {"found": len(events), "matched": 0, "truths": 0}
    start, end = clip["start"], clip["end"]
    changed = clip["changed"]
    at = min(end, changed.shape[0] - 1)
    near = _dilate(changed[at], cell)
    best = None
    for e_start, e_end, points in events:
        if abs(e_start - start) > tolerance:
            continue
        xy = result.tracks[points, at]
        on = in_mask(near, xy).float().mean().item()
        exact = in_mask(changed[at], xy).float().mean().item()
        if on >= 0.5 and (best is None or abs(e_start - start) < abs(best[0] - start)):
            best = (e_start, e_end, exact)
    out = {"found": len(events), "matched": int(best is not None), "truths": 1}
    if best is not None:
        out.update(start_error=abs(best[0] - start), end_error=abs(best[1] - end), on_part=best[2])
    return out


def analyse(data: dict, mode: str, name: str, settings: ChangeSettings) -> StateChanges:
    desc = data["desc"][name].float()
    tracks, visible = data["tracks"][mode][name]
    queries, ref = (data["truth_queries"], data["truth_ref"]) if mode == "truth" else (data["queries"], data["is_ref"])
    return analyse_changes(desc, queries, tracks, visible, data["size"], ref, settings)


def label_accuracy(result: StateChanges, data: dict, kind: str, clip: dict, tolerance: int, cell: int) -> float:
    """Share of the other clip's frames whose object gets the right state from the states learnt
    here (no matched event: every frame labelled as before, the trivial answer)."""
    other = data["other"][kind]
    num = other["desc"].shape[0]
    truth = (torch.arange(num) >= LABEL_FRAME).long()
    match = score_clip(result, clip, tolerance, cell)
    learnt = [e for e in result.events if result.prototypes is not None and e.region in result.prototypes.region]
    if not match["matched"] or not learnt:
        return float((truth == 0).float().mean())
    event = min(learnt, key=lambda e: abs(e.start - clip["start"]))
    states, _ = result.prototypes.label_frames(other["desc"].float(), other["object"], region=event.region)
    return float((states == truth).float().mean())


def evaluate(datas: Iterable[dict], settings: ChangeSettings, modes: Sequence[str], tolerance: int) -> dict:
    """Per mode: per-clip scores of every sequence."""
    out: dict[str, list[dict]] = {m: [] for m in modes}
    for data in datas:
        w, h = data["size"]
        cell = max(1, round(max(w, h) / data["desc"]["unchanged"].shape[-1]))
        for mode in modes:
            row = {"sequence": data["seq"]}
            for name, clip in data["clips"].items():
                result = analyse(data, mode, name, settings)
                row[name] = score_clip(result, clip, tolerance, cell)
                row[name]["frames"] = clip["frames"]
                if name in LABEL_KINDS:
                    row[name]["label_accuracy"] = label_accuracy(result, data, name, clip, tolerance, cell)
            out[mode].append(row)
    return out


def summary(rows: list[dict]) -> dict:
    """Precision, recall, F1, localisation, false events per 100 frames over rows of per-clip scores."""
    found = sum(r[k]["found"] for r in rows for k in CHANGE_KINDS)
    matched = sum(r[k]["matched"] for r in rows for k in CHANGE_KINDS)
    truths = sum(r[k]["truths"] for r in rows for k in CHANGE_KINDS)
    precision = matched / found if found else 0.0
    recall = matched / truths if truths else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    starts = [r[k]["start_error"] for r in rows for k in CHANGE_KINDS if r[k]["matched"]]
    ends = [r[k]["end_error"] for r in rows for k in ("colour-gradual",) if r[k]["matched"]]
    on_part = [r[k]["on_part"] for r in rows for k in CHANGE_KINDS if r[k]["matched"]]
    control_frames = sum(r[k]["frames"] for r in rows for k in CONTROLS[1:])
    false = sum(r[k]["found"] for r in rows for k in CONTROLS[1:])
    labels = [r[k]["label_accuracy"] for r in rows for k in LABEL_KINDS]
    return {
        "clips": len(rows),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "recall_by_kind": {k: sum(r[k]["matched"] for r in rows) / max(len(rows), 1) for k in CHANGE_KINDS},
        "median_start_error": median(starts) if starts else None,
        "median_gradual_end_error": median(ends) if ends else None,
        "mean_points_on_change": sum(on_part) / len(on_part) if on_part else None,
        "false_events_per_100_frames": 100.0 * false / max(control_frames, 1),
        "false_by_control": {
            k: 100.0 * sum(r[k]["found"] for r in rows) / max(sum(r[k]["frames"] for r in rows), 1) for k in CONTROLS
        },
        "unchanged_clip_events_per_100_frames": 100.0
        * sum(r["unchanged"]["found"] for r in rows)
        / max(sum(r["unchanged"]["frames"] for r in rows), 1),
        "label_accuracy": sum(labels) / len(labels) if labels else None,
    }


def split(sequences: Sequence[str]) -> tuple[list[str], list[str]]:
    """The fixed split: alphabetical even-indexed sequences tune, odd-indexed are held out."""
    ordered = sorted(sequences)
    return ordered[0::2], ordered[1::2]


def tune(
    datas: Callable[[], Iterable[dict]], base: ChangeSettings, grid: dict[str, list], tolerance: int, max_false: float
) -> tuple[ChangeSettings, list]:
    """Every combination of ``grid`` on the tuning sequences, pipeline tracking itself: the best
    mean F1 (self and unchanged-clip tracks) among those with at most ``max_false`` false events
    per 100 control frames (self)."""
    import itertools

    tried = []
    best, best_key = base, None
    keys = list(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
        s = replace(base, **dict(zip(keys, values)))
        res = evaluate(datas(), s, ("unchanged", "self"), tolerance)
        mine, theirs = summary(res["self"]), summary(res["unchanged"])
        row = {
            **dict(zip(keys, values)),
            "f1_self": mine["f1"],
            "f1_unchanged": theirs["f1"],
            "false_self": mine["false_events_per_100_frames"],
            "false_unchanged": theirs["false_events_per_100_frames"],
        }
        tried.append(row)
        print("  tune", row, flush=True)
        ok = max(mine["false_events_per_100_frames"], theirs["false_events_per_100_frames"]) <= max_false
        key = (ok, (mine["f1"] + theirs["f1"]) / 2)
        if best_key is None or key > best_key:
            best, best_key = s, key
    return best, tried


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--describers", nargs="+", default=["classical", "local-stats"])
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--frame-size", type=int, default=160)
    parser.add_argument("--grid", type=int, default=16, help="lattice of query points on frame 0 (split by the mask)")
    parser.add_argument("--sequences", nargs="*", default=None, help="default: all of val")
    parser.add_argument("--modes", nargs="*", default=list(MODES), choices=MODES)
    parser.add_argument("--trackers", nargs="*", default=None, help=argparse.SUPPRESS)  # older runs' flag, ignored
    parser.add_argument("--tolerance", type=int, default=2, help="frames between a found and a true start")
    parser.add_argument(
        "--changes",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="override the config's changes settings, e.g. threshold=6",
    )
    parser.add_argument(
        "--tune",
        nargs="*",
        default=[],
        metavar="KEY=V1,V2",
        help="choose these settings on the tuning half (first describer), e.g. threshold=4,5,6",
    )
    parser.add_argument("--max-false", type=float, default=0.5, help="tuning: most false events per 100 frames")
    parser.add_argument(
        "--override",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides of every describer, e.g. backbone.device=cuda for pretrained:NAME",
    )
    parser.add_argument(
        "--cache",
        default=str(Path(tempfile.gettempdir()) / "hyperfeat-state-changes"),
        help="folder of cached descriptors and tracks",
    )
    parser.add_argument("--out", default=str(Path(__file__).with_name("state_changes.json")))
    args = parser.parse_args()
    from tqdm import tqdm

    data_root = Path(os.environ.get("HYPERFEAT_DATA_ROOT", Path(__file__).resolve().parents[2] / "shared" / "data"))
    root = data_root / "davis2017"
    settings = ChangeSettings.from_config(load_config(overrides=[f"changes.{kv}" for kv in args.changes]).changes)
    describers = [(name, make_describer(name, args.override)) for name in args.describers]
    sequences = sorted(args.sequences or DavisDataset(root).sequences)
    tuning, held = split(sequences)
    from hyperfeat.data.videos.tapvid import TapVidDavis

    tapvid = TapVidDavis(data_root / "tapvid_davis")
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    results, tried = [], []
    for index, (name, d) in enumerate(describers):
        start = time.time()

        def load(names: Sequence[str], what: str) -> Iterator[dict]:
            """Each sequence's clips, descriptors and tracks, one at a time (from the cache once made)."""
            for seq in tqdm(names, desc=f"{name}: {what}"):
                data = prepare(d, root, tapvid, seq, args.frames, args.frame_size, args.grid, settings, cache)
                if data is not None:
                    yield data

        chosen = settings
        if args.tune and index == 0:
            grid = {
                kv.split("=")[0]: [type(getattr(settings, kv.split("=")[0]))(v) for v in kv.split("=")[1].split(",")]
                for kv in args.tune
            }
            chosen, tried = tune(lambda: load(tuning, "tuning"), settings, grid, args.tolerance, args.max_false)
            settings = chosen
        per = evaluate(load(sequences, "clips, descriptors, tracks, analysis"), chosen, args.modes, args.tolerance)
        results.append(
            {
                "describer": name,
                "describer_class": type(d).__name__,
                "seconds": round(time.time() - start, 1),
                "modes": {
                    m: {
                        "all": summary(rows),
                        "held_out": summary([r for r in rows if r["sequence"] in held]),
                        "tune": summary([r for r in rows if r["sequence"] in tuning]),
                        "per_sequence": rows,
                    }
                    for m, rows in per.items()
                },
            }
        )
    header = [
        "describer",
        "tracks",
        "part",
        "P",
        "R",
        "F1",
        "start err",
        "end err",
        "on change",
        "false/100",
        "unchanged/100",
        "label acc",
    ] + [f"R {k}" for k in CHANGE_KINDS]
    rows = []

    def fmt(v) -> str:
        return "-" if v is None else f"{v:.2f}"

    for r in results:
        for mode, parts in r["modes"].items():
            for part in ("held_out", "all"):
                m = parts[part]
                rows.append(
                    [
                        r["describer"],
                        mode,
                        f"{part.replace('_', '-')} ({m['clips']})",
                        fmt(m["precision"]),
                        fmt(m["recall"]),
                        fmt(m["f1"]),
                        fmt(m["median_start_error"]),
                        fmt(m["median_gradual_end_error"]),
                        fmt(m["mean_points_on_change"]),
                        fmt(m["false_events_per_100_frames"]),
                        fmt(m["unchanged_clip_events_per_100_frames"]),
                        fmt(m["label_accuracy"]),
                    ]
                    + [fmt(m["recall_by_kind"][k]) for k in CHANGE_KINDS]
                )
    rows.append(
        [
            "trivial (no event)",
            "any",
            "any",
            "-",
            "0.00",
            "0.00",
            "-",
            "-",
            "-",
            "0.00",
            "0.00",
            f"{LABEL_FRAME / args.frames:.2f}",
        ]
        + ["0.00"] * len(CHANGE_KINDS)
    )
    print(format_table(header, rows))
    false_table = [
        [r["describer"], mode] + [fmt(parts["held_out"]["false_by_control"][k]) for k in CONTROLS]
        for r in results
        for mode, parts in r["modes"].items()
    ]
    print(format_table(["describer", "tracks"] + [f"{k}/100" for k in CONTROLS], false_table))
    record = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "cache")},
        "split": {"tune": tuning, "held_out": held},
        "changes": asdict(settings),
        "tuning": tried,
        "results": results,
    }
    Path(args.out).write_text(json.dumps(record, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    from hyperfeat.errors import HyperfeatError

    try:
        main()
    except HyperfeatError as err:  # a bad name, path or override: one line, no traceback
        raise SystemExit(f"error: {err}") from None
