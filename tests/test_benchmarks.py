"""The benchmark scripts' own loading paths (the benchmarks themselves are run by hand: their
numbers go to benchmarks/*.json, not to timed tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def test_state_change_benchmark_loads_trained_hyperfeatures_by_name(make_tiny_checkpoint):
    """``pretrained:NAME`` gives the saved network on its backbone; every describer gets the overrides."""
    from benchmarks import state_changes as bench
    from hyperfeat.model.checkpoint import load_checkpoint

    path = make_tiny_checkpoint(seed=3, randomise_mixing=True)
    describer = bench.make_describer(f"pretrained:{path}", ["video.frame_size=96"])
    saved, _ = load_checkpoint(path)
    loaded = describer.network.state_dict()
    assert set(loaded) == set(saved.state_dict())
    for key, value in saved.state_dict().items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0, msg=key)
    assert int(describer.cfg.video.frame_size) == 96
    stats = bench.make_describer("local-stats", ["video.frame_size=96"])
    assert stats.__class__.__name__ == "LocalStatsDescriber" and int(stats.cfg.video.frame_size) == 96
    with pytest.raises(SystemExit, match="pretrained:NAME"):
        bench.make_describer("sd15")


def test_state_change_benchmark_bad_override_is_one_line(make_tiny_checkpoint, tmp_path):
    path = make_tiny_checkpoint()
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "state_changes.py"),
            "--describers",
            f"pretrained:{path}",
            "--sequences",
            "camel",
            "--trackers",
            "--override",
            "backbone.bogus=1",
            "--out",
            str(tmp_path / "out.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={"HYPERFEAT_DATA_ROOT": str(tmp_path), "PATH": "", "HF_HUB_OFFLINE": "1"},
    )
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "backbone.bogus" in lines[0] and "Traceback" not in run.stderr, run.stderr
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("frames", [4, 6])
def test_temporal_learning_walk_draws_clips_of_walk_frames(frames):
    """``--walk-frames K``: each clip of a walk step is K frames evenly spaced by a stride within
    ``--walk-strides``, inside the video, and the loss is the cycle walk of exactly those frames."""
    import argparse

    import numpy as np

    from benchmarks import classical_learning as bench
    from hyperfeat.model.aggregation import AggregationNetwork
    from hyperfeat.train.losses import cycle_walk_loss

    length = 30
    raw = torch.randn(length, 2, 8, 6, 6, generator=torch.Generator().manual_seed(0))  # (T, S, C, R, R)
    raw[:, 0, 0, 0, 0] = torch.arange(length)  # each frame carries its number
    videos = {"clip": {"raw": raw, "mirrored": raw.flip(-1)}}
    network = AggregationNetwork([4, 4], 2, projection_dim=8, num_norm_groups=2).eval()
    asked = []

    def recording(maps: torch.Tensor) -> torch.Tensor:  # (N, S, C, R, R) → descriptors; notes the frames asked for
        asked.append(maps[:, 0, 0, 0, 0].long())
        return network(maps)

    args = argparse.Namespace(
        walk_clips=3, walk_strides=[1, 4], walk_frames=frames, walk_home="plain", walk_edge_dropout=0.0,
        walk_across_batch=False, walk_temperature=0.05, walk_shift=0.25,
    )  # fmt: skip
    with torch.no_grad():
        loss = bench.walk_loss(recording, videos, np.random.default_rng(7), args, pool=1)
        (numbers,) = asked
        clips = numbers.view(3, frames)  # (clips, K) frame numbers
        expected = cycle_walk_loss(network(raw[clips.flatten()]).unflatten(0, (3, frames)), 0.05, 1)
    steps = clips.diff(dim=1)
    assert (steps == steps[:, :1]).all() and 1 <= int(steps.abs().min()) and int(steps.abs().max()) <= 4
    assert int(clips.min()) >= 0 and int(clips.max()) < length
    torch.testing.assert_close(loss, expected, rtol=0, atol=0)
