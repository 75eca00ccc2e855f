"""The ``match`` and ``plot-mixing`` commands through main(argv), with a tiny checkpoint."""

from __future__ import annotations

import re

import pytest
from PIL import Image

from hyperfeat.cli import main
from tests.helpers import PNG, TGT_WH, write_picture_pair


@pytest.fixture(scope="module")
def ckpt(make_tiny_checkpoint):
    return make_tiny_checkpoint(randomise_mixing=True)  # not uniform: the heat map has a largest cell


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return write_picture_pair(tmp_path_factory.mktemp("pair"))


def test_match_and_plot_mixing_commands_write_pngs(ckpt, pair, tmp_path, capsys):
    _, _, src_path, tgt_path = pair
    out = tmp_path / "match.png"
    assert (
        main(
            [
                "match",
                str(src_path),
                str(tgt_path),
                "--checkpoint",
                str(ckpt),
                "--points",
                "10,20; 150,90",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert out.read_bytes()[:8] == PNG
    printed = re.findall(r"\(([-\d.]+), ([-\d.]+)\) -> \(([-\d.]+), ([-\d.]+)\)", capsys.readouterr().out)
    assert [tuple(map(float, p[:2])) for p in printed] == [(10.0, 20.0), (150.0, 90.0)]
    for *_, u, v in printed:
        assert 0 <= float(u) <= TGT_WH[0] - 1 and 0 <= float(v) <= TGT_WH[1] - 1

    assert main(["match", str(src_path), str(tgt_path), "--checkpoint", str(ckpt), "--points", "1,2;3"]) == 2
    assert "x1,y1;x2,y2" in capsys.readouterr().err

    heat = tmp_path / "mixing.png"
    assert main(["plot-mixing", str(ckpt), "--out", str(heat)]) == 0
    assert heat.read_bytes()[:8] == PNG
    with Image.open(heat) as img:
        assert img.width >= 300 and img.height >= 300


def test_plot_mixing_draws_two_checkpoints_side_by_side(ckpt, make_tiny_checkpoint, tmp_path, capsys):
    other = make_tiny_checkpoint(seed=1, randomise_mixing=True)
    both = tmp_path / "both.png"
    assert main(["plot-mixing", str(ckpt), str(other), "--out", str(both)]) == 0
    alone = tmp_path / "alone.png"
    assert main(["plot-mixing", str(ckpt), "--out", str(alone)]) == 0
    with Image.open(both) as two, Image.open(alone) as one:
        assert two.width > 2 * one.width  # two heat maps and their difference
    assert main(["plot-mixing", *[str(ckpt)] * 5, "--out", str(tmp_path / "many.png")]) == 2
    assert "at most 4 checkpoints" in capsys.readouterr().err and not (tmp_path / "many.png").exists()
