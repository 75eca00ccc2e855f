"""Behaviour snapshot: run every command on the tiny backbone and record what it produces.

Only the command line is used (``hyperfeat …`` and ``python eval.py …``), so the same script
describes any version of the package: run it before and after a change and compare.

    python benchmarks/behaviour_snapshot.py --out before.json
    ... change the code ...
    python benchmarks/behaviour_snapshot.py --out after.json --compare before.json

Recorded: a sha256 of every tensor written by ``extract`` (raw maps and hyperfeatures), the
matched coordinates printed by ``match``, the numbers of ``eval`` on PF-WILLOW, DAVIS, JHMDB and
TAP-Vid (small subsets of the real data under ``HYPERFEAT_DATA_ROOT`` / ``../shared/data``),
the tracks of ``track`` and a sha256 of every mask of ``propagate``. A checkpoint is trained
first with a short smoke run. ``--compare`` prints one row per recorded item and exits 1 when
any differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("HYPERFEAT_DATA_ROOT", ROOT.parent / "shared" / "data"))
TINY = ["backbone=tiny", "features.num_steps=5", "features.save_steps=[4,2,0]"]


def run(args: list[str], cwd: Path) -> str:
    env = dict(
        os.environ, OMP_NUM_THREADS="1", WANDB_MODE="offline", HF_HUB_OFFLINE="1", HYPERFEAT_DATA_ROOT=str(DATA_ROOT)
    )
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"command failed ({done.returncode}): {' '.join(args)}\n{done.stderr[-3000:]}")
    return done.stdout


def sha(array: np.ndarray) -> str:
    array = np.ascontiguousarray(array)
    return hashlib.sha256(str(array.dtype).encode() + str(array.shape).encode() + array.tobytes()).hexdigest()[:16]


def numbers(record: dict) -> dict:
    """The numeric leaves of an eval JSON, rounded to 6 digits (key paths joined by '/')."""
    out: dict = {}

    def walk(value, prefix):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{prefix}/{k}" if prefix else str(k))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[prefix] = round(float(value), 6)

    walk(record, "")
    return out


def snapshot(work: Path) -> dict:
    import torch

    hf = [sys.executable, "-m", "hyperfeat.cli"]
    result: dict = {}
    ckpt_dir, out_dir = work / "ckpt", work / "outputs"
    run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "experiment=smoke",
            "train.max_steps=6",
            "train.val_every_n_steps=6",
            f"paths.checkpoint_dir={ckpt_dir}",
            f"paths.output_dir={out_dir}",
            "logger.backend=none",
            f"data.root={DATA_ROOT / 'spair_dhf' / 'images'}",
        ],
        ROOT,
    )
    ckpt = ckpt_dir / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    result["train/weights"] = {k: sha(v.numpy()) for k, v in sorted(state.items())}

    images = sorted((DATA_ROOT / "spair_dhf" / "images").glob("*.jpg"))[:2]
    extract_dir = work / "extract"
    run(hf + ["extract", *map(str, images), "--out", str(extract_dir), "--raw", "--checkpoint", str(ckpt), *TINY], ROOT)
    for path in sorted(extract_dir.glob("*.pt")):
        saved = torch.load(path, map_location="cpu", weights_only=True)
        for key in sorted(k for k in saved if isinstance(saved[k], torch.Tensor)):
            result[f"extract/{path.stem}/{key}"] = sha(saved[key].float().numpy())

    printed = run(
        hf
        + [
            "match",
            str(images[0]),
            str(images[1]),
            "--checkpoint",
            str(ckpt),
            "--points",
            "10,20;100,80;200,150",
            "--out",
            str(work / "match.png"),
            *TINY,
        ],
        ROOT,
    )
    result["match/stdout"] = [line for line in printed.splitlines() if "->" in line]

    evals = {
        "pf_willow": ["data=pf_willow", "data.max_pairs=12"],
        "davis": ["task=davis", "data.sequences=[blackswan,dog]", "data.max_frames=6"],
        "jhmdb": ["task=jhmdb", "data.max_frames=6"],
        "tapvid": ["task=tapvid", "data.sequences=[dog]", "data.max_frames=8"],
    }
    for name, overrides in evals.items():
        out_json = work / f"eval_{name}.json"
        run(
            [
                sys.executable,
                str(ROOT / "eval.py"),
                "--checkpoint",
                str(ckpt),
                "--out",
                str(out_json),
                f"paths.output_dir={out_dir}",
                *TINY,
                *overrides,
            ],
            ROOT,
        )
        result[f"eval/{name}"] = numbers(json.loads(out_json.read_text()))

    frames = DATA_ROOT / "davis2017" / "JPEGImages" / "480p" / "dog"
    clip = work / "clip"
    clip.mkdir()
    for frame in sorted(frames.glob("*.jpg"))[:6]:
        (clip / frame.name).symlink_to(frame)
    run(
        hf
        + [
            "track",
            str(clip),
            "--checkpoint",
            str(ckpt),
            "--points",
            "0,400,240;2,300,200",
            "--out",
            str(work / "tracks.mp4"),
            *TINY,
        ],
        ROOT,
    )
    # the tracks JSON is <out>.json (tracks.mp4.json); versions before that wrote tracks.json
    record = work / "tracks.mp4.json" if (work / "tracks.mp4.json").is_file() else work / "tracks.json"
    tracks = json.loads(record.read_text())
    result["track/tracks"] = np.round(np.asarray(tracks["tracks"]), 4).tolist()
    result["track/visible"] = tracks["visible"]

    mask = DATA_ROOT / "davis2017" / "Annotations" / "480p" / "dog" / "00000.png"
    masks_dir = work / "masks"
    run(
        hf + ["propagate", str(clip), "--checkpoint", str(ckpt), "--mask", str(mask), "--out", str(masks_dir), *TINY],
        ROOT,
    )
    from PIL import Image

    result["propagate/masks"] = {p.name: sha(np.asarray(Image.open(p))) for p in sorted(masks_dir.glob("*.png"))}
    return result


def flatten(record: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in record.items():
        name = f"{prefix}/{key}" if prefix else key
        if isinstance(value, dict):
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="behaviour_snapshot.json", help="JSON file of this run's snapshot")
    parser.add_argument("--compare", default=None, help="an earlier snapshot: print differences, exit 1 on any")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = snapshot(Path(tmp))
    Path(args.out).write_text(json.dumps(result, indent=1, sort_keys=True))
    print(f"wrote {args.out}: {len(flatten(result))} recorded values")
    if args.compare is None:
        return 0
    before, after = flatten(json.loads(Path(args.compare).read_text())), flatten(result)
    keys = sorted(set(before) | set(after))
    differing = [k for k in keys if before.get(k) != after.get(k)]
    print(f"{'item':60s} same")
    groups: dict[str, bool] = {}
    for key in keys:
        group = "/".join(key.split("/")[:2])
        groups[group] = groups.get(group, True) and key not in differing
    for group, same in groups.items():
        print(f"{group:60s} {'yes' if same else 'NO'}")
    print(f"{len(keys) - len(differing)}/{len(keys)} values identical")
    for key in differing[:20]:
        print(f"  differs: {key}: {before.get(key)!r} → {after.get(key)!r}")
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
