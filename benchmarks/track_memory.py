"""Peak memory and time of ``hyperfeat track`` against video length.

The clip is a real DAVIS-2017 480p sequence (854×480 frames), looped (forward, then backward,
so the motion stays continuous) to 100, 300 and 600 frames in a frame folder. Each length runs
``hyperfeat track`` in a fresh process on the tiny offline backbone with a tiny untrained
checkpoint built here, 16 grid points and an MP4 out; peak resident memory is the child's
``ru_maxrss``. Bounded memory means the 600-frame run needs about what the 100-frame run does.

    python benchmarks/track_memory.py [--frames 100 300 600] [--sequence dog] [--out benchmarks/track_memory.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA_ROOT = Path(os.environ.get("HYPERFEAT_DATA_ROOT", ROOT.parent / "shared" / "data"))


def looped_clip(sequence: Path, num_frames: int, out: Path) -> Path:
    """``num_frames`` frames of ``sequence`` played forward and backward, copied into ``out``."""
    frames = sorted(sequence.glob("*.jpg"))
    order = frames + frames[-2:0:-1]
    out.mkdir(parents=True, exist_ok=True)
    for t in range(num_frames):
        shutil.copyfile(order[t % len(order)], out / f"{t:05d}.jpg")
    return out


def run_track(ckpt: Path, clip: Path, out: Path, extra: list[str]) -> tuple[float, float]:
    """(peak RSS MiB, seconds) of one ``hyperfeat track`` run."""
    from benchmarks.tiny_checkpoint import TINY

    args = [
        sys.executable,
        "-m",
        "hyperfeat.cli",
        "track",
        str(clip),
        "--checkpoint",
        str(ckpt),
        "--grid",
        "4",
        "--out",
        str(out),
        *TINY,
        *extra,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    child = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"hyperfeat track failed ({status}): {child.stderr.read().decode()[-2000:]}")
    return usage.ru_maxrss / 1024, seconds


def main() -> None:
    from benchmarks.tiny_checkpoint import build_tiny_checkpoint
    from hyperfeat.eval.table import format_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[100, 300, 600])
    parser.add_argument("--sequence", default="dog")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "track_memory.json"))
    parser.add_argument("overrides", nargs="*", help="key=value overrides for hyperfeat track")
    args = parser.parse_args()
    sequence = DATA_ROOT / "davis2017" / "JPEGImages" / "480p" / args.sequence
    if not sequence.is_dir():
        raise SystemExit(f"DAVIS sequence not found: {sequence} (set HYPERFEAT_DATA_ROOT)")
    rows, record = [], {"sequence": args.sequence, "frame_size_wh": [854, 480], "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ckpt = build_tiny_checkpoint(work / "tiny.ckpt")
        for n in args.frames:
            clip = looped_clip(sequence, n, work / f"clip{n}")
            rss, seconds = run_track(ckpt, clip, work / f"tracks{n}.mp4", args.overrides)
            record["runs"].append({"frames": n, "peak_rss_mib": round(rss, 1), "seconds": round(seconds, 1)})
            rows.append([str(n), f"{rss:.0f}", f"{seconds:.1f}", f"{1000 * seconds / n:.0f}"])
            shutil.rmtree(clip)
    base = record["runs"][0]["peak_rss_mib"]
    for run, row in zip(record["runs"], rows):
        run["rss_vs_first"] = round(run["peak_rss_mib"] / base, 3)
        row.append(f"{run['rss_vs_first']:.2f}×")
    print(
        format_table(
            ["frames", "peak RSS (MiB)", "time (s)", "ms / frame", f"RSS / RSS@{args.frames[0]}"],
            rows,
            title=f"hyperfeat track, tiny backbone, DAVIS '{args.sequence}' looped, 854×480, 16 points",
            notes=["one process per run (OMP_NUM_THREADS=1); peak RSS = the child's ru_maxrss"],
        )
    )
    Path(args.out).write_text(json.dumps(record, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
