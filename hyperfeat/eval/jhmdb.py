"""JHMDB keypoint propagation: PCK of the 15 joints propagated from the first frame."""

from __future__ import annotations

import warnings
from typing import Sequence

from tqdm.auto import tqdm

from hyperfeat.errors import DataError
from hyperfeat.eval.files import VIS_FPS, _frame_size, _safe_name, _vis_dir
from hyperfeat.eval.table import _pct, format_table
from hyperfeat.video.frames import VideoFrames
from hyperfeat.video.run import propagate_joints
from hyperfeat.viz.tracks import draw_joints_vs_truth

# ---------------------------------------------------------------------------------------------
# JHMDB


def evaluate_jhmdb(hf, progress: bool = True) -> tuple[dict, str]:
    """Keypoint propagation on JHMDB (``data.test_split``), PCK@``data.pck_alphas`` of the person box."""
    from hyperfeat.data.videos.jhmdb import jhmdb_from_config
    from hyperfeat.eval.metrics.pck import PCK
    from hyperfeat.io import write_video

    cfg = hf.cfg
    alphas = tuple(float(a) for a in cfg.data.pck_alphas)
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
            one = PCK(alphas=alphas)  # this clip alone, for the title
            for t in range(1, len(clip)):
                one.update(pred[t], clip.joints[t], clip.boxes[t], clip.original_size, name, valid=clip.in_frame[t])
            scores = one.compute()
            score = ", ".join(
                f"PCK@{a:g} {100 * float(scores[f'pck_bbox@{a:g}']):.1f}" for a in alphas if f"pck_bbox@{a:g}" in scores
            )
            pictures = draw_joints_vs_truth(video, pred, clip.joints, clip.in_frame, score)
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
        rows.append(
            [
                label,
                str(int(float(results.get(prefix + "num_pairs", 0)))),
                str(int(float(results.get(prefix + "num_points", 0)))),
                *(_pct(results.get(f"{prefix}pck_bbox@{a:g}")) for a in alphas),
            ]
        )
    notes = [
        "PCK pooled over the joints of frames 1..T-1; threshold α·max(w, h) of the ground-truth person box",
        "frames = frames scored; joints = joints scored (inside the frame)",
    ]
    notes += [f"skipped: {s}" for s in skipped]
    return format_table(headers, rows, title="JHMDB keypoint propagation (PCK, %)", notes=notes)
