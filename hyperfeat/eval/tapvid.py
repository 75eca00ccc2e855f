"""TAP-Vid-DAVIS point tracking: AJ, δ_avg and occlusion accuracy of tracked queries."""

from __future__ import annotations

import warnings
from typing import Sequence

import torch
from tqdm.auto import tqdm

from hyperfeat.errors import DataError
from hyperfeat.eval.files import (
    VIS_FPS,
    VIS_MAX_TRACKS,
    _frame_size,
    _prefixed,
    _safe_name,
    _vis_dir,
)
from hyperfeat.eval.table import _pct, format_table
from hyperfeat.video.frames import VideoFrames, frames_from_uint8, resize_frames
from hyperfeat.video.run import track
from hyperfeat.viz.tracks import draw_tracks_vs_truth

# ---------------------------------------------------------------------------------------------
# TAP-Vid


def _clamp_queries(queries: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Query positions clamped into the frame (the prediction's start; the metric keeps the given ones)."""
    out = queries.clone()
    out[:, 1] = out[:, 1].clamp(-0.5, size[0] - 0.5)
    out[:, 2] = out[:, 2].clamp(-0.5, size[1] - 0.5)
    return out


def evaluate_tapvid(hf, progress: bool = True) -> tuple[dict, str]:
    """Point tracking on TAP-Vid-DAVIS, TAP-Vid metrics per video and averaged over videos."""
    from hyperfeat.data.videos.tapvid import sample_queries, tapvid_from_config
    from hyperfeat.eval.metrics.tapvid import TapVidMetrics
    from hyperfeat.io import write_video

    cfg = hf.cfg
    mode = str(cfg.data.query_mode)
    stride = int(cfg.data.query_stride)
    dataset = tapvid_from_config(cfg.data)
    overall = TapVidMetrics(query_mode=mode)
    vis_left = int(cfg.eval.save_vis)
    results: dict = {}
    evaluated: list[tuple[str, int, int]] = []
    skipped: list[str] = []
    for name in tqdm(dataset.names, desc="TAP-Vid", unit="video", disable=not progress):
        item = dataset.load(name)
        queries = sample_queries(item.points, item.occluded, mode, stride)
        if len(queries) == 0:
            skipped.append(f"{name} (no visible point to query)")
            continue
        frames, scale = resize_frames(frames_from_uint8(item.frames), _frame_size(cfg))
        video = VideoFrames(frames, item.size, (int(frames.shape[-1]), int(frames.shape[-2])), scale, [])
        tracks, visible = track(hf, video, _clamp_queries(queries.queries, item.size), progress=progress)
        gt_points, gt_occluded = queries.targets(item.points, item.occluded)
        args = (queries.queries, gt_points, gt_occluded, tracks, ~visible, item.size)
        overall.update(*args)
        per_video = TapVidMetrics(query_mode=mode)
        per_video.update(*args)
        results.update(_prefixed(per_video.compute(), f"video/{name}/"))
        results.pop(f"video/{name}/num_videos", None)
        results[f"video/{name}/num_queries"] = float(len(queries))
        evaluated.append((name, item.num_frames, len(queries)))
        if vis_left > 0:
            vis_left -= 1
            keep = torch.linspace(0, len(queries) - 1, min(VIS_MAX_TRACKS, len(queries))).round().long().unique()
            score = f"AJ {100 * float(results[f'video/{name}/average_jaccard']):.1f}"
            write_video(
                draw_tracks_vs_truth(video, tracks[keep], visible[keep], gt_points[keep], ~gt_occluded[keep], score),
                _vis_dir(cfg, "tapvid") / f"{_safe_name(name)}.mp4",
                fps=VIS_FPS,
            )
    if not evaluated:
        raise DataError(f"no TAP-Vid video could be evaluated; skipped: {skipped}")
    for item_note in skipped:
        warnings.warn(f"TAP-Vid: skipped {item_note}", stacklevel=2)
    results = {**overall.compute(), **results}
    results["num_queries"] = float(sum(n for *_, n in evaluated))
    return results, tapvid_table(results, evaluated, mode, skipped)


def tapvid_table(
    results: dict, evaluated: Sequence[tuple[str, int, int]], mode: str, skipped: Sequence[str] = ()
) -> str:
    keys = ("average_jaccard", "average_pts_within_thresh", "occlusion_accuracy")
    headers = ["video", "frames", "queries", "AJ", "δ_avg", "OA"]
    rows: list = [
        [name, str(frames), str(n), *(_pct(results.get(f"video/{name}/{k}")) for k in keys)]
        for name, frames, n in evaluated
    ]
    rows.append(None)
    rows.append(
        [
            f"mean ({len(evaluated)} videos)",
            "",
            str(int(results.get("num_queries", 0))),
            *(_pct(results.get(k)) for k in keys),
        ]
    )
    notes = [
        "AJ = average Jaccard, δ_avg = average fraction within 1, 2, 4, 8, 16 px (256×256 frame), "
        "OA = occlusion accuracy; means over videos"
    ]
    notes += [f"skipped: {s}" for s in skipped]
    return format_table(headers, rows, title=f"TAP-Vid-DAVIS point tracking, query mode {mode} (%)", notes=notes)
