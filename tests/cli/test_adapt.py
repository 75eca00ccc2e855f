"""``--adapt-steps`` of ``hyperfeat track`` and ``hyperfeat changes``: the network is adapted to
the video first (a line says how), the checkpoint file is left as it was."""

from __future__ import annotations

import hashlib
import json

import pytest

from hyperfeat.cli import main
from tests.helpers import translated_video, write_frames


def test_track_and_changes_adapt_to_the_video(checkpoint, tmp_path, capsys):
    write_frames(translated_video(steps=5), tmp_path / "frames")
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    code = main(
        [
            "track",
            str(tmp_path / "frames"),
            "--checkpoint",
            str(checkpoint),
            "--points",
            "0,40,30;0,150,90",
            "--out",
            str(tmp_path / "tracks.gif"),
            "--adapt-steps",
            "3",
            "--adapt-lr",
            "0.003",
            "--adapt-mirror",
            "video.frame_size=128",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "adapted the aggregation network to" in out and "3 steps, walk loss (mirrored home)" in out
    assert len(json.loads((tmp_path / "tracks.gif.json").read_text())["tracks"]) == 2
    pytest.importorskip("ruptures")
    code = main(
        [
            "changes",
            str(tmp_path / "frames"),
            "--checkpoint",
            str(checkpoint),
            "--grid",
            "3",
            "--out",
            str(tmp_path / "changes"),
            "--adapt-steps",
            "2",
            "--no-adapt-mirror",
            "video.frame_size=128",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "2 steps, walk loss " in out and "mirrored home" not in out
    assert hashlib.sha256(checkpoint.read_bytes()).hexdigest() == digest


def test_adapt_steps_errors(checkpoint, tmp_path, capsys):
    write_frames(translated_video(steps=3), tmp_path / "frames")
    code = main(
        [
            "track",
            str(tmp_path / "frames"),
            "--checkpoint",
            str(checkpoint),
            "--points",
            "0,40,30",
            "--out",
            str(tmp_path / "t.gif"),
            "--adapt-steps",
            "-1",
        ]
    )
    assert code != 0
    assert "--adapt-steps must be >= 0; got -1" in capsys.readouterr().err
    code = main(
        [
            "changes",
            str(tmp_path / "frames"),
            "--describer",
            "local-stats",
            "--grid",
            "3",
            "--out",
            str(tmp_path / "c"),
            "--adapt-steps",
            "2",
        ]
    )
    assert code != 0
    assert "--adapt-steps needs trained hyperfeatures" in capsys.readouterr().err
