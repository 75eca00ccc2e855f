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
