"""Evaluation of the video tasks: DAVIS-2017 label propagation (J&F), JHMDB keypoint
propagation (PCK) and TAP-Vid-DAVIS point tracking, each over ``cfg.data`` through its loader.

``evaluate_video(hf)`` dispatches on ``hf.cfg.task`` and returns ``(results, table)``: a flat
dict of 0-dim tensors / floats (fractions in [0, 1]; J/F decays in [-1, 1]; counts) and an
aligned text table (numbers in %). Frames are described as :mod:`hyperfeat.video_api` does
(resized to load_size², the descriptor grid covering the whole frame), with the ``video.*``
settings; ``eval.save_vis`` = N writes pictures of the first N items into
``<paths.output_dir>/vis_<task>/``.

Protocols:

* davis: the first frame's mask is propagated through every frame (``data.sequences`` /
  ``data.max_frames`` limit the work); J&F as the DAVIS toolkit (first and last frames not
  scored, means over objects). Multi-object J&F only on the sequences whose masks are exact
  (:func:`hyperfeat.data.davis.multi_object_exact`), foreground J&F (every object merged, the
  prediction too) on all. Keys ``multi_object/…`` and ``foreground/…`` with the
  :class:`~hyperfeat.metrics.JandF` names (``J&F``, ``J-Mean``, …, ``seq/<name>/J&F`` …).
* jhmdb: the 15 joints of frame 0 are propagated; PCK@α (``data.pck_alphas``) of frames 1…T-1
  with threshold α · max(w, h) of the frame's ground-truth person box (tight box of its
  joints), joints outside the frame left out. Keys of :class:`~hyperfeat.metrics.PCK`:
  ``pck_bbox@0.1`` (pooled over all joints of all frames), ``…_per_image`` (mean over
  frames), ``cat/<clip>/…`` per clip.
* tapvid: queries by ``data.query_mode`` (first | strided, ``data.query_stride``), tracks and
  visibility from :func:`hyperfeat.video.track_points`; :class:`~hyperfeat.metrics.TapVidMetrics`
  (occlusion accuracy, δ_avg = ``average_pts_within_thresh``, ``average_jaccard``, …) averaged
  over videos, and ``video/<name>/…`` per video.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Optional, Sequence

import torch
from tqdm.auto import tqdm

from hyperfeat.data.video import VideoFrames, frames_from_uint8, resize_frames
from hyperfeat.errors import ConfigError, DataError
from hyperfeat.video_api import (
    draw_video_tracks,
    overlay_video_frames,
    propagate,
    propagate_joints,
    track,
)

VIDEO_TASKS = ("davis", "jhmdb", "tapvid")
VIS_FPS = 10
VIS_MAX_TRACKS = 40  # TAP-Vid pictures: at most this many query tracks (evenly spaced)


# ---------------------------------------------------------------------------------------------
# tables


def _pct(value) -> str:
    if value is None:
        return "-"
    value = float(value)
    return "-" if math.isnan(value) else f"{100 * value:.2f}"


def format_table(headers: Sequence[str], rows: Sequence[Optional[Sequence[str]]], title: str = "",
                 notes: Sequence[str] = ()) -> str:
    """An aligned text table: first column left-aligned, the others right-aligned; a ``None`` row
    is a rule."""
    body = [list(r) for r in rows if r is not None]
    widths = [max([len(str(h))] + [len(str(r[i])) for r in body]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        first = f"{cells[0]:<{widths[0]}}"
        rest = [f"{c:>{w}}" for c, w in zip(cells[1:], widths[1:])]
        return "  ".join([first] + rest).rstrip()

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    out = [title] if title else []
    out += [line(headers), rule]
    out += [rule if r is None else line([str(c) for c in r]) for r in rows]
    out += list(notes)
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# helpers


def _check_task_data(cfg, task: str) -> None:
    """A known data preset of another task is a config mistake (task=davis with data=spair)."""
    from hyperfeat.config import preset_names

    name = str(cfg.data.get("name", ""))
    if name != task and name in preset_names("data"):
        raise ConfigError(f"task={task} evaluates the {task} data, but data.name is {name!r}: "
                          f"drop the data= override or use data={task}")


def _frame_size(cfg) -> Optional[int]:
    size = cfg.video.get("frame_size")
    return int(size) if size else None


def _vis_dir(cfg, task: str) -> Path:
    return Path(str(cfg.paths.output_dir)) / f"vis_{task}"


def _safe_name(name: str) -> str:
    return name.replace("/", "_").replace("\\", "_")


def _prefixed(results: dict, prefix: str) -> dict:
    return {f"{prefix}{k}": v for k, v in results.items()}


# ---------------------------------------------------------------------------------------------
# DAVIS


def evaluate_davis(hf, progress: bool = True) -> tuple[dict, str]:
    """Label propagation on DAVIS-2017 (``data.test_split``), J&F (see the module docstring)."""
    from hyperfeat.data.davis import davis_from_config
    from hyperfeat.metrics import JandF
    from hyperfeat.viz import write_video

    cfg = hf.cfg
    dataset = davis_from_config(cfg.data, "test_split")
    multi, foreground = JandF(), JandF(foreground_only=True)
    vis_left = int(cfg.eval.save_vis)
    evaluated: list[tuple[str, int, int, bool]] = []  # name, frames, objects, exact
    skipped: list[str] = []
    for name in tqdm(dataset.sequences, desc="DAVIS", unit="seq", disable=not progress):
        seq = dataset.load(name, frame_size=_frame_size(cfg))
        if seq.masks.shape[0] != len(seq):
            skipped.append(f"{name} (ground truth only for frame 0)")
            continue
        if len(seq) < 3:
            skipped.append(f"{name} ({len(seq)} frames; J&F needs 3: the first and last are not scored)")
            continue
        if not seq.object_ids:
            skipped.append(f"{name} (no object in the first mask)")
            continue
        video = VideoFrames(seq.frames, seq.original_size, seq.size, 1.0, list(seq.frame_files))
        first = seq.masks[0].clone()
        first[first == 255] = 0  # void is background for propagation and scoring
        pred = propagate(hf, video, first, progress=progress)  # (T, H, W)
        gt = seq.masks
        if seq.multi_object_exact:
            multi.update(pred, gt, name)
        foreground.update(pred, gt, name)
        evaluated.append((name, len(seq), len(seq.object_ids), seq.multi_object_exact))
        if vis_left > 0:
            vis_left -= 1
            write_video(overlay_video_frames(video, pred), _vis_dir(cfg, "davis") / f"{_safe_name(name)}.mp4", fps=VIS_FPS)
    if not evaluated:
        raise DataError(f"no DAVIS sequence could be evaluated; skipped: {skipped}")
    for item in skipped:
        warnings.warn(f"DAVIS: skipped {item}", stacklevel=2)

    results = _prefixed(multi.compute(), "multi_object/")
    results.update(_prefixed(foreground.compute(), "foreground/"))
    results["num_sequences"] = float(len(evaluated))
    results["num_sequences_multi_object"] = float(sum(exact for *_, exact in evaluated))
    return results, davis_table(results, evaluated, skipped)


def davis_table(results: dict, evaluated: Sequence[tuple[str, int, int, bool]], skipped: Sequence[str] = ()) -> str:
    headers = ["sequence", "frames", "objects", "J&F", "J", "F", "fg J&F", "fg J", "fg F"]
    rows: list = []
    for name, frames, objects, exact in evaluated:
        m, f = f"multi_object/seq/{name}/", f"foreground/seq/{name}/"
        multi_cells = [_pct(results.get(m + k)) if exact else "-" for k in ("J&F", "J-Mean", "F-Mean")]
        rows.append([name + ("" if exact else " *"), str(frames), str(objects), *multi_cells,
                     *(_pct(results.get(f + k)) for k in ("J&F", "J-Mean", "F-Mean"))])
    n_multi = sum(exact for *_, exact in evaluated)
    rows.append(None)
    rows.append([f"mean, multi-object ({n_multi} seq)", "", str(int(float(results.get("multi_object/num_objects", 0)))),
                 *(_pct(results.get(f"multi_object/{k}")) for k in ("J&F", "J-Mean", "F-Mean")), "", "", ""])
    rows.append([f"mean, foreground ({len(evaluated)} seq)", "", str(int(float(results.get("foreground/num_objects", 0)))),
                 "", "", "", *(_pct(results.get(f"foreground/{k}")) for k in ("J&F", "J-Mean", "F-Mean"))])
    table = format_table(headers, rows, title="DAVIS-2017 label propagation (J&F, %)")
    summary_headers = ["overall", "J&F", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]
    summary = [[label, *(_pct(results.get(f"{prefix}/{k}")) for k in ("J&F", "J-Mean", "J-Recall", "J-Decay",
                                                                      "F-Mean", "F-Recall", "F-Decay"))]
               for label, prefix in (("multi-object", "multi_object"), ("foreground", "foreground"))]
    notes = ["means are over objects, as the DAVIS toolkit; fg = every object merged into one"]
    if n_multi < len(evaluated):
        notes.append("* objects merged in this copy of the data: multi-object J&F not exact, left out")
    notes += [f"skipped: {s}" for s in skipped]
    return table + "\n\n" + format_table(summary_headers, summary, notes=notes)


# ---------------------------------------------------------------------------------------------
# JHMDB


def evaluate_jhmdb(hf, progress: bool = True) -> tuple[dict, str]:
    """Keypoint propagation on JHMDB (``data.test_split``), PCK@``data.pck_alphas`` of the person box."""
    from hyperfeat.data.jhmdb import jhmdb_from_config
    from hyperfeat.metrics import PCK
    from hyperfeat.viz import write_video

    cfg = hf.cfg
    alphas = tuple(float(a) for a in cfg.data.get("pck_alphas", (0.1, 0.2)))
    dataset = jhmdb_from_config(cfg.data, "test_split")
    metric = PCK(alphas=alphas)
    vis_left = int(cfg.eval.save_vis)
    evaluated: list[str] = []
    skipped: list[str] = []
    for name in tqdm(dataset.clips, desc="JHMDB", unit="clip", disable=not progress):
        clip = dataset.load(name, frame_size=_frame_size(cfg))
        if len(clip) < 2:
            skipped.append(f"{name} ({len(clip)} frame: nothing to propagate to)")
            continue
        video = VideoFrames(clip.frames, clip.original_size, clip.size, 1.0, list(clip.frame_files))
        pred = propagate_joints(hf, video, clip.joints[0], progress=progress)  # (T, 15, 2)
        for t in range(1, len(clip)):
            metric.update(pred[t], clip.joints[t], clip.boxes[t], clip.original_size, name, valid=clip.in_frame[t])
        evaluated.append(name)
        if vis_left > 0:
            vis_left -= 1
            pictures = draw_video_tracks(video, pred.transpose(0, 1), torch.ones(pred.shape[1], pred.shape[0], dtype=torch.bool))
            write_video(pictures, _vis_dir(cfg, "jhmdb") / f"{_safe_name(name)}.mp4", fps=VIS_FPS)
    if not evaluated:
        raise DataError(f"no JHMDB clip could be evaluated; skipped: {skipped}")
    for item in skipped:
        warnings.warn(f"JHMDB: skipped {item}", stacklevel=2)
    results = metric.compute()
    results["num_clips"] = float(len(evaluated))
    return results, jhmdb_table(results, evaluated, alphas, skipped)


def jhmdb_table(results: dict, clips: Sequence[str], alphas: Sequence[float], skipped: Sequence[str] = ()) -> str:
    headers = ["clip", "frames", "joints"] + [f"PCK@{a:g}" for a in alphas]
    rows: list = []
    entries: list = [(c, f"cat/{c}/") for c in clips] + [None, (f"all ({len(clips)} clips)", "")]
    for entry in entries:
        if entry is None:
            rows.append(None)
            continue
        label, prefix = entry
        rows.append([label, str(int(float(results.get(prefix + "num_pairs", 0)))),
                     str(int(float(results.get(prefix + "num_points", 0)))),
                     *(_pct(results.get(f"{prefix}pck_bbox@{a:g}")) for a in alphas)])
    notes = ["PCK pooled over the joints of frames 1..T-1; threshold α·max(w, h) of the ground-truth person box",
             "frames = frames scored; joints = joints scored (inside the frame)"]
    notes += [f"skipped: {s}" for s in skipped]
    return format_table(headers, rows, title="JHMDB keypoint propagation (PCK, %)", notes=notes)


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
    from hyperfeat.data.tapvid import sample_queries, tapvid_from_config
    from hyperfeat.metrics import TapVidMetrics
    from hyperfeat.viz import write_video

    cfg = hf.cfg
    mode = str(cfg.data.get("query_mode", "first"))
    stride = int(cfg.data.get("query_stride", 5))
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
            write_video(draw_video_tracks(video, tracks[keep], visible[keep]),
                        _vis_dir(cfg, "tapvid") / f"{_safe_name(name)}.mp4", fps=VIS_FPS)
    if not evaluated:
        raise DataError(f"no TAP-Vid video could be evaluated; skipped: {skipped}")
    for item_note in skipped:
        warnings.warn(f"TAP-Vid: skipped {item_note}", stacklevel=2)
    results = {**overall.compute(), **results}
    results["num_queries"] = float(sum(n for *_, n in evaluated))
    return results, tapvid_table(results, evaluated, mode, skipped)


def tapvid_table(results: dict, evaluated: Sequence[tuple[str, int, int]], mode: str,
                 skipped: Sequence[str] = ()) -> str:
    keys = ("average_jaccard", "average_pts_within_thresh", "occlusion_accuracy")
    headers = ["video", "frames", "queries", "AJ", "δ_avg", "OA"]
    rows: list = [[name, str(frames), str(n), *(_pct(results.get(f"video/{name}/{k}")) for k in keys)]
                  for name, frames, n in evaluated]
    rows.append(None)
    rows.append([f"mean ({len(evaluated)} videos)", "", str(int(results.get("num_queries", 0))),
                 *(_pct(results.get(k)) for k in keys)])
    notes = ["AJ = average Jaccard, δ_avg = average fraction within 1, 2, 4, 8, 16 px (256×256 frame), "
             "OA = occlusion accuracy; means over videos"]
    notes += [f"skipped: {s}" for s in skipped]
    return format_table(headers, rows, title=f"TAP-Vid-DAVIS point tracking, query mode {mode} (%)", notes=notes)


# ---------------------------------------------------------------------------------------------
# entry


def evaluate_video(hf, progress: bool = True) -> tuple[dict, str]:
    """Evaluate ``hf`` on the video task ``hf.cfg.task`` (davis | jhmdb | tapvid) over ``hf.cfg.data``.

    Returns (results, table); see the module docstring for the keys.
    """
    task = str(hf.cfg.task)
    if task not in VIDEO_TASKS:
        raise ConfigError(f"evaluate_video needs task to be one of {', '.join(VIDEO_TASKS)}; got {task!r}")
    _check_task_data(hf.cfg, task)
    run = {"davis": evaluate_davis, "jhmdb": evaluate_jhmdb, "tapvid": evaluate_tapvid}[task]
    return run(hf, progress=progress)
