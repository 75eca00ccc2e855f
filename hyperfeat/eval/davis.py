"""DAVIS-2017 semi-supervised label propagation: J&F of masks propagated from the first frame."""

from __future__ import annotations

import warnings
from typing import Sequence

from tqdm.auto import tqdm

from hyperfeat.errors import DataError
from hyperfeat.eval.files import VIS_FPS, _frame_size, _prefixed, _safe_name, _vis_dir
from hyperfeat.eval.table import _pct, format_table
from hyperfeat.video.frames import VideoFrames
from hyperfeat.video.run import propagate
from hyperfeat.viz.masks import draw_masks_vs_truth

# ---------------------------------------------------------------------------------------------
# DAVIS


def evaluate_davis(hf, progress: bool = True) -> tuple[dict, str]:
    """Label propagation on DAVIS-2017 (``data.test_split``), J&F (see the module docstring)."""
    from hyperfeat.data.videos.davis import davis_from_config
    from hyperfeat.eval.metrics.jandf import JandF
    from hyperfeat.io import write_video

    cfg = hf.cfg
    dataset = davis_from_config(cfg.data, "test_split")
    multi, foreground = JandF(), JandF(foreground_only=True)
    vis_left = int(cfg.eval.save_vis)
    evaluated: list[tuple[str, int, int, bool]] = []  # name, frames, objects, exact
    skipped: list[str] = []
    for name in tqdm(dataset.sequences, desc="DAVIS", unit="seq", disable=not progress):
        seq = dataset.load(name, frame_size=_frame_size(cfg))
        if seq.masks.shape[0] != len(seq):
            missing = seq.missing_masks
            skipped.append(
                f"{name} (ground truth only for frame 0: {len(missing)} of {len(seq)} annotation files "
                f"missing, e.g. {missing[0] if missing else '?'})"
            )
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
            one = JandF(foreground_only=not seq.multi_object_exact)  # this sequence alone, for the title
            one.update(pred, gt, name)
            score = f"J&F {100 * float(one.compute()['J&F']):.1f}" + ("" if seq.multi_object_exact else " foreground")
            write_video(
                draw_masks_vs_truth(video, pred, gt, score),
                _vis_dir(cfg, "davis") / f"{_safe_name(name)}.mp4",
                fps=VIS_FPS,
            )
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
        rows.append(
            [
                name + ("" if exact else " *"),
                str(frames),
                str(objects),
                *multi_cells,
                *(_pct(results.get(f + k)) for k in ("J&F", "J-Mean", "F-Mean")),
            ]
        )
    n_multi = sum(exact for *_, exact in evaluated)
    rows.append(None)
    rows.append(
        [
            f"mean, multi-object ({n_multi} seq)",
            "",
            str(int(float(results.get("multi_object/num_objects", 0)))),
            *(_pct(results.get(f"multi_object/{k}")) for k in ("J&F", "J-Mean", "F-Mean")),
            "",
            "",
            "",
        ]
    )
    rows.append(
        [
            f"mean, foreground ({len(evaluated)} seq)",
            "",
            str(int(float(results.get("foreground/num_objects", 0)))),
            "",
            "",
            "",
            *(_pct(results.get(f"foreground/{k}")) for k in ("J&F", "J-Mean", "F-Mean")),
        ]
    )
    table = format_table(headers, rows, title="DAVIS-2017 label propagation (J&F, %)")
    summary_headers = ["overall", "J&F", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]
    summary = [
        [
            label,
            *(
                _pct(results.get(f"{prefix}/{k}"))
                for k in ("J&F", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
            ),
        ]
        for label, prefix in (("multi-object", "multi_object"), ("foreground", "foreground"))
    ]
    notes = ["means are over objects, as the DAVIS toolkit; fg = every object merged into one"]
    if n_multi < len(evaluated):
        notes.append("* objects merged in this copy of the data: multi-object J&F not exact, left out")
    notes += [f"skipped: {s}" for s in skipped]
    return table + "\n\n" + format_table(summary_headers, summary, notes=notes)
