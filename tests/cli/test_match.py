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
    assert main(["match", str(src_path), str(tgt_path), "--checkpoint", str(ckpt),
                 "--points", "10,20; 150,90", "--out", str(out)]) == 0
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
