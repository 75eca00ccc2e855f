"""Fault injection: kill a tiny training at random moments and check every rerun resumes well.

    python benchmarks/fault_injection.py                 # 10 kills, about 4 minutes on a CPU
    python benchmarks/fault_injection.py --kills 4       # quicker

A child process trains the tiny backbone on synthetic pairs (``train.checkpoint_every_n_steps=N``)
and reports, for every optimiser step, the step and a fingerprint of its batch. The parent kills it
with SIGKILL or SIGINT, at a random step, or the moment a temporary checkpoint file appears (a kill
during a checkpoint write), then checks:

- ``last.ckpt`` always loads with the safe loader, has finite weights and its metadata (never corrupt);
- it is no older than N steps before the last step reported (SIGKILL), or holds the step that was
  running when SIGINT came; SIGINT exits 130 with a message;
- the rerun starts at the saved step, removes any half-written temporary file, and every step of
  every run saw the same batch as an uninterrupted reference run (no repeated or skipped data).

Prints a table and writes JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout

OVERRIDES = [
    "backbone=tiny",
    "features.num_steps=5",
    "features.save_steps=[4,2,0]",
    "features.load_size=64",
    "features.image_size=64",
    "features.output_resolution=16",
    "features.batch_size=8",
    "aggregation.projection_dim=32",
    "aggregation.num_norm_groups=8",
    "train.pairs_per_step=2",
    "train.val_every_n_steps=10",
    "train.val_max_pairs=2",
    "eval.batch_size=2",
    "train.accelerator=cpu",
    "train.devices=1",
    "train.num_workers=0",
    "logger.backend=none",
    "train.cache_features=true",
    "data=synthetic",
    "data.root=generated",
    "data.generated_images=6",
    "data.generated_size=64",
    "data.pairs_per_image=2",
    "data.num_points=16",
]


def child(work: Path, max_steps: int, every: int, log: Path) -> int:
    """Train, appending 'start S' and 'step S FINGERPRINT' lines to ``log`` (flushed each step)."""
    import torch
    from lightning.pytorch.callbacks import Callback

    torch.set_num_threads(1)
    from hyperfeat.config import load_config
    from hyperfeat.errors import HyperfeatError, TrainingInterrupted
    from hyperfeat.train.trainer import train

    handle = open(log, "a", buffering=1)

    class Report(Callback):
        def on_train_start(self, trainer, pl_module):
            handle.write(f"start {trainer.global_step}\n")
            handle.flush()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            fingerprint = float(batch["source_raw"].double().sum())
            handle.write(f"step {trainer.global_step} {fingerprint:.4f}\n")
            handle.flush()
            time.sleep(0.05)  # leave the parent time to aim between steps

    cfg = load_config(
        overrides=OVERRIDES
        + [
            f"paths.output_dir={work}/out",
            f"paths.checkpoint_dir={work}/ckpt",
            f"train.max_steps={max_steps}",
            f"train.checkpoint_every_n_steps={every}",
        ]
    )
    try:
        train(cfg, callbacks=[Report()], enable_progress_bar=False)
    except TrainingInterrupted as stop:
        return stop.exit_code
    except HyperfeatError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def read_log(log: Path, runs: bool = False) -> tuple[list[int], list[tuple]]:
    """The start step of every run and (step, fingerprint) of every step (with ``runs``: (run, step,
    fingerprint), the run counted from 0)."""
    starts, steps = [], []
    for line in log.read_text().splitlines() if log.is_file() else []:
        parts = line.split()
        if parts[0] == "start":
            starts.append(int(parts[1]))
        elif parts[0] == "step" and len(parts) == 3:
            row = (int(parts[1]), parts[2])
            steps.append((len(starts) - 1, *row) if runs else row)
    return starts, steps


def spawn(work: Path, args, log: Path) -> subprocess.Popen:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        str(work),
        "--steps",
        str(args.steps),
        "--every",
        str(args.every),
        "--log",
        str(log),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def check_last(ckpt_dir: Path) -> dict:
    import torch

    from hyperfeat.io import safe_torch_load

    last = ckpt_dir / "last.ckpt"
    if not last.is_file():
        return {"exists": False}
    ckpt = safe_torch_load(last, "checkpoint")  # raises on a corrupt file
    finite = all(bool(torch.isfinite(v).all()) for v in ckpt["state_dict"].values() if v.is_floating_point())
    return {"exists": True, "step": int(ckpt["global_step"]), "finite": finite, "meta": "hyperfeat" in ckpt}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--steps", type=int, default=40, help="train.max_steps of the run")
    parser.add_argument("--every", type=int, default=3, help="train.checkpoint_every_n_steps (N)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "fault_injection.json"))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--log", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(Path(args.child), args.steps, args.every, Path(args.log))

    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ref_log = tmp / "reference.log"
        ref = spawn(tmp / "reference", args, ref_log)
        ref.communicate()
        _, ref_steps = read_log(ref_log)
        reference = dict(ref_steps)
        assert ref.returncode == 0 and sorted(reference) == list(range(args.steps)), "reference run failed"

        work, log = tmp / "faulty", tmp / "faulty.log"
        plan = [("SIGKILL", "step"), ("SIGINT", "step"), ("SIGKILL", "write")]
        rows, failures = [], []
        pending_tmp: list[Path] = []
        cleaned = 0
        for k in range(args.kills):
            sig_name, moment = plan[k % len(plan)]
            seen_before = len(read_log(log)[1])
            proc = spawn(work, args, log)
            target = rng.randint(1, args.steps - 2)
            killed_at, during_write = None, False
            deadline = time.time() + 300
            size, steps = -1, []
            while proc.poll() is None and time.time() < deadline:
                if log.is_file() and log.stat().st_size != size:  # re-read only when it grew
                    size = log.stat().st_size
                    _, steps = read_log(log)
                current = steps[-1][0] if len(steps) > seen_before else None
                tmp_files = list((work / "ckpt").glob(".*.tmp")) if (work / "ckpt").is_dir() else []
                if moment == "write" and tmp_files and current is not None:
                    during_write = True
                elif moment == "step" and current is not None and current >= target:
                    time.sleep(rng.random() * 0.1)  # somewhere inside or between steps
                else:
                    time.sleep(0.003)
                    continue
                killed_at = read_log(log)[1][-1][0]
                proc.send_signal(getattr(signal, sig_name))
                break
            _, err = proc.communicate()
            survived = [p.name for p in pending_tmp if p.exists()]  # left by the previous kill: this run removes them
            if survived:
                failures.append(f"kill {k + 1}: the run did not remove the temporary files {survived} of the last kill")
            cleaned += len(pending_tmp) - len(survived)
            pending_tmp = list((work / "ckpt").glob(".*.tmp")) if (work / "ckpt").is_dir() else []
            left_tmp = len(pending_tmp)
            state = check_last(work / "ckpt")
            row = {
                "kill": k + 1,
                "signal": sig_name,
                "moment": moment,
                "last_step_seen": killed_at,
                "exit": proc.returncode,
                "during_write": during_write,
                "tmp_left": left_tmp,
                **state,
            }
            if killed_at is None:  # finished before the kill came
                row["note"] = "finished first"
            elif sig_name == "SIGKILL":
                if state.get("exists") and state["step"] < killed_at - args.every:
                    failures.append(
                        f"kill {k + 1}: last.ckpt at step {state['step']}, more than "
                        f"{args.every} steps before {killed_at}"
                    )
            elif proc.returncode == 0 and state.get("step") == args.steps:  # it came during the last step
                row["note"] = "finished during the signal"
                if "the run finished" not in err:
                    failures.append(f"kill {k + 1}: SIGINT in the last step without saying the run finished")
            else:
                if proc.returncode != 130 or "SIGINT received" not in err:
                    failures.append(f"kill {k + 1}: SIGINT exit {proc.returncode}, stderr {err[-300:]!r}")
                elif state.get("step") not in (killed_at, killed_at + 1):
                    failures.append(f"kill {k + 1}: SIGINT at step {killed_at} saved step {state.get('step')}")
            if state.get("exists") and not (state["finite"] and state["meta"]):
                failures.append(f"kill {k + 1}: last.ckpt not finite or without metadata")
            rows.append(row)
            print(row, flush=True)

        # the final rerun finishes; every start was at a saved step, every step saw the reference batch
        saved_before = check_last(work / "ckpt").get("step", 0)
        final = spawn(work, args, log)
        _, err = final.communicate()
        starts, steps = read_log(log)
        if final.returncode != 0:
            failures.append(f"final rerun exit {final.returncode}: {err[-300:]!r}")
        if starts[-1] != saved_before:
            failures.append(f"final rerun started at {starts[-1]}, last.ckpt held {saved_before}")
        after_final = len(list((work / "ckpt").glob(".*.tmp")))
        if after_final:
            failures.append("a temporary file outlived the final run")
        cleaned += sum(not p.exists() for p in pending_tmp)
        wrong = [(run, s, f, reference.get(s)) for run, s, f in read_log(log, runs=True)[1] if reference.get(s) != f]
        if wrong:
            failures.append(
                f"{len(wrong)} steps saw another batch than the reference, e.g. (run, step, seen, "
                f"reference) {wrong[:4]}; runs started at {starts}"
            )
        covered = sorted({s for s, _ in steps})
        skipped = sorted(set(range(args.steps)) - set(covered))
        if skipped:
            failures.append(f"steps skipped: {skipped}")
        if check_last(work / "ckpt").get("step") != args.steps:
            failures.append("last.ckpt does not hold the final step")
        redone = len(steps) - len(covered)

    counts = {
        "kills": len(rows),
        "sigkill": sum(r["signal"] == "SIGKILL" for r in rows),
        "sigint": sum(r["signal"] == "SIGINT" for r in rows),
        "during_checkpoint_write": sum(r["during_write"] for r in rows),
        "finished_before_kill": sum(r.get("note") == "finished first" for r in rows),
        "reruns": len(starts) - 1,
        "steps_redone_after_sigkill": redone,
        "steps_with_another_batch_than_the_reference": len(wrong),  # repeated, skipped or reordered data
        "steps_never_trained": len(skipped),
        "temporary_files_left_by_kills": sum(r["tmp_left"] for r in rows),
        "temporary_files_removed_by_reruns": cleaned,
        "temporary_files_after_final_run": after_final,
        "corrupt_checkpoints": 0,  # check_last raises on one
        "failures": len(failures),
    }
    print()
    print(f"{'kill':>4} {'signal':>7} {'moment':>6} {'seen':>5} {'saved':>5} {'exit':>5} {'in write':>8} {'tmp':>3}")
    for r in rows:
        print(
            f"{r['kill']:>4} {r['signal']:>7} {r['moment']:>6} {str(r['last_step_seen']):>5} "
            f"{str(r.get('step', '-')):>5} {r['exit']:>5} {str(r['during_write']):>8} {r['tmp_left']:>3}"
        )
    print()
    for key, value in counts.items():
        print(f"{key:>32}: {value}")
    for failure in failures:
        print("FAIL", failure)
    Path(args.out).write_text(
        json.dumps(
            {
                "counts": counts,
                "kills": rows,
                "failures": failures,
                "config": {"steps": args.steps, "every": args.every},
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
