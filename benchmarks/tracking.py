"""Point tracking on the real TAP-Vid-DAVIS tracks (first table) and on synthetic clips cut from
real footage (second table): every registered tracker, the coherent tracker with each part
switched off, and the trivial baselines on the same queries, TAP-Vid metrics (query mode "first").

Real: the 30 TAP-Vid-DAVIS clips (32 frames, 480p tracks) described once by the weight-free
classical describer (registered as ``classical``: :class:`hyperfeat.describe.daisy.DaisyDescriber`;
256 px, a 64 × 64 grid); the clips are split alphabetically into a *chosen* half (even places: every default of the
trackers was chosen there, the visibility weights fitted there) and a *held-out* half (odd
places), and the table gives all 30, the chosen and the held-out half. Beside each tracker: the
same tracks called all visible (``AJ all-vis``, ``OA all-vis``: what its visibility decision is
worth), and the two trivial baselines, standing still and all visible. Tracking speed is frames
per second of the tracker alone (descriptors computed once), peak RSS the process's.

    python benchmarks/tracking.py [--clips N] [--synthetic] [--fit-visibility] [--out benchmarks/tracking.json]

``--fit-visibility`` refits the coherent tracker's visibility weights (logistic regression of
the ground-truth visibility on its evidence) on the chosen half and prints them, the way the
defaults in ``video.trackers.coherent.visibility_weights`` were made.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA_ROOT = Path(os.environ.get("HYPERFEAT_DATA_ROOT", ROOT.parent / "shared" / "data"))

from hyperfeat.io import safe_torch_load  # noqa: E402

KEYS = ("average_jaccard", "average_pts_within_thresh", "occlusion_accuracy")
SUBSETS = ("all", "chosen", "held-out")


def variants() -> dict[str, tuple[str, object]]:
    """Row name → (tracker, settings): the registered trackers at their defaults, then the
    coherent tracker with one part switched off or changed."""
    from hyperfeat.correspond.track import TRACKERS

    new = TRACKERS["coherent"].settings()
    rows = {
        f"{name}{' (default)' if name == 'coherent' else ''}": (name, spec.settings())
        for name, spec in TRACKERS.items()
    }
    rows["  − support points"] = ("coherent", replace(new, support_spacing=0))
    rows["  − neighbour motion (σ → 0.01)"] = ("coherent", replace(new, neighbour_sigma=0.01))
    rows["  − re-detection"] = ("coherent", replace(new, redetect=False))
    rows["  − recent look in the template"] = ("coherent", replace(new, recent_weight=0.0))
    rows["  − sub-cell refinement"] = ("coherent", replace(new, refine_radius=0))
    rows["  − refinement on the query look (on the template)"] = ("coherent", replace(new, refine_on_query=False))
    return rows


def split(names: list[str]) -> dict[str, list[str]]:
    """all / chosen (even places, alphabetical) / held-out (odd places)."""
    names = sorted(names)
    return {"all": names, "chosen": names[0::2], "held-out": names[1::2]}


def classical_describer():
    """The registered ``classical`` describer at 256 px (a 64 × 64 grid), frames taken as they are."""
    from hyperfeat.describe import registry

    return registry.build("classical", ["backbone=tiny", "features.load_size=256", "video.frame_size=null"])


def tapvid_clips(cache: Path, limit: Optional[int]) -> dict[str, dict]:
    """name → {desc (T, D, h, w) fp16, points, occluded, size, queries, frames_path}: every
    TAP-Vid-DAVIS clip described once (cached in ``cache``)."""
    from tqdm.auto import tqdm

    from hyperfeat.data.videos.tapvid import TapVidDavis, sample_queries
    from hyperfeat.video.frames import frame_describer, frames_from_uint8

    dataset = TapVidDavis(DATA_ROOT / "tapvid_davis", davis_root=DATA_ROOT / "davis2017")
    describer = classical_describer()
    describe = frame_describer(describer)
    key = hashlib.sha256(json.dumps(describer.identity(), sort_keys=True).encode()).hexdigest()[:12]
    cache.mkdir(parents=True, exist_ok=True)
    clips = {}
    for name in tqdm(sorted(dataset.names)[:limit], desc="describing clips", unit="clip"):
        path = cache / f"{name}-{key}.pt"
        if path.is_file():
            clips[name] = safe_torch_load(path, "cached clip")
            continue
        video = dataset.load(name)
        frames = frames_from_uint8(video.frames)  # (T, 3, H, W)
        desc = torch.cat([describe(frames[i : i + 8]) for i in range(0, len(frames), 8)]).half()
        queries = sample_queries(video.points, video.occluded, "first")
        points, occluded = queries.targets(video.points, video.occluded)
        clips[name] = {
            "desc": desc,
            "points": points,
            "occluded": occluded,
            "queries": queries.queries,
            "size": torch.tensor(video.size),
        }
        torch.save(clips[name], path)
    return clips


def score(clips: dict[str, dict], subsets: dict[str, list[str]], tracker: Callable) -> dict:
    """TAP-Vid metrics of ``tracker(desc, queries, size) → (tracks, visible)`` on each subset of
    clips (each clip tracked once), the same tracks called all visible, and frames per second."""
    from hyperfeat.eval.metrics.tapvid import TapVidMetrics

    seconds, frames, outputs = 0.0, 0, {}
    for name in subsets["all"]:
        clip = clips[name]
        size = tuple(int(v) for v in clip["size"])
        start = time.perf_counter()
        outputs[name] = tracker(clip["desc"].float(), clip["queries"], size)
        seconds += time.perf_counter() - start
        frames += clip["desc"].shape[0]
    results = {}
    for subset, names in subsets.items():
        metric, all_visible = TapVidMetrics(query_mode="first"), TapVidMetrics(query_mode="first")
        for name in names:
            clip, (tracks, visible) = clips[name], outputs[name]
            args = (clip["queries"], clip["points"], clip["occluded"], tracks)
            size = tuple(int(v) for v in clip["size"])
            metric.update(*args, ~visible, size)
            all_visible.update(*args, torch.zeros_like(visible), size)
        out = {k: 100 * float(v) for k, v in metric.compute().items() if k in KEYS}
        out.update({f"{k}_all_visible": 100 * float(v) for k, v in all_visible.compute().items() if k in KEYS})
        out["frames_per_second"] = frames / max(seconds, 1e-9)
        results[subset] = out
    return results


def standing_still(desc: torch.Tensor, queries: torch.Tensor, size) -> tuple[torch.Tensor, torch.Tensor]:
    """Every point stays at its query, visible: the first trivial baseline."""
    tracks = queries[:, None, 1:].repeat(1, desc.shape[0], 1)
    return tracks, torch.ones(tracks.shape[:2], dtype=torch.bool)


def registered(name: str, settings) -> Callable:
    from hyperfeat.correspond.track import track_descriptors

    def run(desc, queries, size):
        tracks, visible, _ = track_descriptors(desc, queries, size, name, settings)
        return tracks, visible

    return run


def fit_visibility(clips: dict[str, dict], names: list[str]) -> list[float]:
    """The coherent tracker's visibility weights fitted on ``names``: L2-regularised logistic
    regression of the ground-truth visibility (frames after each query) on the step's evidence."""
    from hyperfeat.correspond.track.base import as_source, query_groups
    from hyperfeat.correspond.track.coherent import CoherentGroup, CoherentSettings
    from hyperfeat.geometry import pixels_to_cells

    settings = CoherentSettings()
    features, labels = [], []
    for name in names:
        clip = clips[name]
        source = as_source(clip["desc"].float())
        size = tuple(int(v) for v in clip["size"])
        cells = pixels_to_cells(clip["queries"][:, 1:], size, source.shape[-2:])
        for t_query, members in query_groups(clip["queries"]):
            group = CoherentGroup(source[t_query], cells[members], settings)
            for t in range(t_query + 1, len(source)):
                group.step(source[t])
                features.append(group.evidence[: len(members)])
                labels.append((~clip["occluded"][members, t]).float())
    x, y = torch.cat(features), torch.cat(labels)
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    z = (x - mean) / std
    weights, bias = torch.zeros(x.shape[1], requires_grad=True), torch.zeros(1, requires_grad=True)
    optimiser = torch.optim.LBFGS([weights, bias], max_iter=200)

    def loss():
        optimiser.zero_grad()
        value = (
            torch.nn.functional.binary_cross_entropy_with_logits(z @ weights + bias, y) + 1e-3 * weights.pow(2).sum()
        )
        value.backward()
        return value

    optimiser.step(loss)
    w = (weights / std).detach()
    b = (bias - (weights * mean / std).sum()).detach()
    return [round(float(v), 3) for v in w] + [round(float(b), 3)]


def picture(clips: dict[str, dict], name: str, out: Path) -> None:
    """Ground truth beside the default tracker's prediction on one real clip, four frames stacked."""
    from PIL import Image

    from hyperfeat.correspond.track import track_descriptors
    from hyperfeat.data.videos.tapvid import TapVidDavis
    from hyperfeat.video.frames import VideoFrames, frames_from_uint8, resize_frames
    from hyperfeat.viz.tracks import draw_tracks_vs_truth

    clip = clips[name]
    size = tuple(int(v) for v in clip["size"])
    video = TapVidDavis(DATA_ROOT / "tapvid_davis", davis_root=DATA_ROOT / "davis2017").load(name)
    frames, scale = resize_frames(frames_from_uint8(video.frames), 480)
    view = VideoFrames(frames, size, (int(frames.shape[-1]), int(frames.shape[-2])), scale, [])
    tracks, visible, _ = track_descriptors(clip["desc"].float(), clip["queries"], size)
    keep = torch.linspace(0, len(tracks) - 1, min(24, len(tracks))).round().long().unique()
    drawn = draw_tracks_vs_truth(
        view,
        tracks[keep],
        visible[keep],
        clip["points"][keep],
        ~clip["occluded"][keep],
        f"{name}, coherent tracker, classical describer",
    )
    picks = [drawn[t] for t in (0, len(drawn) // 3, 2 * len(drawn) // 3, len(drawn) - 1)]
    sheet = Image.new("RGB", (picks[0].width, sum(p.height for p in picks)))
    for i, p in enumerate(picks):
        sheet.paste(p, (0, i * p.height))
    sheet.save(out)


def real_table(args) -> dict:
    from hyperfeat.eval.table import format_table

    cache = Path(args.cache or Path(tempfile.gettempdir()) / "hyperfeat-bench-tracking")
    clips = tapvid_clips(cache, args.clips)
    subsets = split(list(clips))
    if args.fit_visibility:
        print("visibility weights fitted on the chosen half:", fit_visibility(clips, subsets["chosen"]))
    rows_spec = {"standing still": standing_still, **{k: registered(*v) for k, v in variants().items()}}
    record: dict = {"describer": classical_describer().identity(), "subsets": subsets, "results": {}}
    rows = []
    for row, tracker in rows_spec.items():
        record["results"][row] = score(clips, subsets, tracker)
        r = record["results"][row]
        rows.append(
            [
                row,
                *(f"{r[s][k]:.1f}" for s in SUBSETS for k in ("average_jaccard", "occlusion_accuracy")),
                f"{r['held-out']['average_pts_within_thresh']:.1f}",
                f"{r['held-out']['average_jaccard_all_visible']:.1f}",
                f"{r['held-out']['occlusion_accuracy_all_visible']:.1f}",
                f"{r['all']['frames_per_second']:.0f}",
            ]
        )
        print(
            f"  {row}: held-out AJ {r['held-out']['average_jaccard']:.1f} OA {r['held-out']['occlusion_accuracy']:.1f}",
            flush=True,
        )
    record["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        format_table(
            [
                "tracker",
                "AJ all",
                "OA all",
                "AJ chosen",
                "OA chosen",
                "AJ held",
                "OA held",
                "δ_avg held",
                "AJ all-vis held",
                "OA all-vis held",
                "frames/s",
            ],
            rows,
            title=f"Real TAP-Vid-DAVIS: {len(clips)} clips × 32 frames, 'first' queries, classical describer (64×64 grid), "
            "TAP-Vid metrics (%)",
            notes=[
                "chosen: the half every default was chosen on; held: the other half, never looked at while choosing",
                "all-vis: the same tracks with every point called visible (the visibility decision's baseline)",
                "standing still: every point stays at its query, visible (the positions' baseline)",
                "memory: the tracker configured before the coherent one became the default",
                f"peak RSS {record['peak_rss_mb']:.0f} MB; frames/s of the tracker alone (descriptors computed once)",
            ],
        )
    )
    if args.picture:
        picture(clips, args.picture_clip, Path(args.picture))
        record["picture"] = args.picture
    return record


def synthetic_table(args) -> dict:
    """The trackers on clips cut from real footage with exact tracks (a DAVIS object moving over
    another sequence, a third crossing in front)."""
    from hyperfeat.data.videos.synthetic_tracks import davis_synthetic_clips
    from hyperfeat.eval.metrics.tapvid import TapVidMetrics
    from hyperfeat.eval.table import format_table
    from hyperfeat.video.frames import frame_describer, frames_from_uint8

    clips = list(davis_synthetic_clips(DATA_ROOT / "davis2017", 6, 24, num_points=32, seed=0))
    describe = frame_describer(classical_describer())
    rows_spec = {k: registered(*v) for k, v in variants().items() if not k.startswith("  ")}
    metrics = {row: TapVidMetrics(query_mode="first") for row in rows_spec}
    for clip in clips:
        desc = describe(frames_from_uint8(clip.frames))
        queries = torch.from_numpy(clip.queries)
        for row, tracker in rows_spec.items():
            tracks, visible = tracker(desc, queries, clip.size)
            metrics[row].update(
                queries, torch.from_numpy(clip.points), torch.from_numpy(clip.occluded), tracks, ~visible, clip.size
            )
    results = {row: {k: 100 * float(v) for k, v in m.compute().items() if k in KEYS} for row, m in metrics.items()}
    print(
        format_table(
            ["tracker", "AJ", "δ_avg", "OA"],
            [[row, *(f"{r[k]:.1f}" for k in KEYS)] for row, r in results.items()],
            title="Synthetic clips cut from DAVIS (6 × 24 frames, exact tracks and occlusion), classical describer",
        )
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=None, help="only the first N clips (default: all 30)")
    parser.add_argument("--cache", default=None, help="folder for the clips' descriptors (default: a temp folder)")
    parser.add_argument("--fit-visibility", action="store_true")
    parser.add_argument("--synthetic", action="store_true", help="also the synthetic table")
    parser.add_argument("--picture", default=str(ROOT / "docs" / "images" / "tracking_real.png"))
    parser.add_argument("--picture-clip", default="horsejump-high")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "tracking.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    record = {"real": real_table(args)}
    if args.synthetic:
        record["synthetic"] = synthetic_table(args)
    Path(args.out).write_text(json.dumps(record, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
