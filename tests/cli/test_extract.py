"""`hyperfeat extract` on real images and on bad input."""

import pytest
import torch
from PIL import Image

from hyperfeat.cli import main
from hyperfeat.cli.extract import extract_to_folder
from hyperfeat.errors import ImageError
from tests.helpers import TINY_OVERRIDES, data_dir


@pytest.fixture()
def checkpoint(tmp_path, make_tiny_checkpoint):
    return make_tiny_checkpoint(tmp_path / "agg.ckpt")  # untrained, built after manual_seed(0)


def test_extract_real_spair_images(tmp_path, checkpoint, tiny_cfg):
    images = sorted((data_dir("spair_dhf") / "images").glob("*.jpg"))[:3]
    out = tmp_path / "out"
    code = main(
        ["extract", *map(str, images), "--out", str(out), "--raw", "--checkpoint", str(checkpoint), *TINY_OVERRIDES[1:]]
    )
    assert code == 0
    R = tiny_cfg.features.output_resolution
    for image in images:
        record = torch.load(out / f"{image.stem}.pt")
        assert record["raw"].shape == (3, 64 * 9 + 32 * 3, R, R) and record["raw"].dtype == torch.float32
        assert record["hyperfeatures"].shape == (tiny_cfg.aggregation.projection_dim, R, R)
        assert record["save_steps"] == [4, 2, 0]
        assert tuple(record["image_size_wh"]) == Image.open(image).size
        for key in ("raw", "hyperfeatures"):  # each file holds its own image, not the batch's storage
            tensor = record[key]
            assert tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size(), key


def test_extract_folder_raw_only(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("L", (40, 30), 128).save(folder / "gray.png")  # grayscale: converted
    Image.new("RGBA", (30, 40), (10, 200, 30, 0)).save(folder / "rgba.png")  # RGBA: converted
    assert main(["extract", str(folder), "--out", str(tmp_path / "o"), "--raw", *TINY_OVERRIDES]) == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["gray.pt", "rgba.pt"]
    assert "hyperfeatures" not in torch.load(tmp_path / "o" / "gray.pt")


def test_bad_inputs_are_clear_errors(tmp_path, capsys):
    with pytest.raises(ImageError, match="not found"):
        extract_to_folder([tmp_path / "missing.jpg"], tmp_path / "o", raw=True, overrides=TINY_OVERRIDES)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ImageError, match="no images"):
        extract_to_folder([empty], tmp_path / "o", raw=True, overrides=TINY_OVERRIDES)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    good = tmp_path / "good.png"
    Image.new("RGB", (20, 20)).save(good)
    with pytest.raises(ImageError, match="corrupt.jpg"):
        extract_to_folder([good, corrupt], tmp_path / "o", raw=True, overrides=TINY_OVERRIDES)
    assert not (tmp_path / "o" / "good.pt").exists(), "images are checked before any output is written"
    # the command line turns these into a message and exit code 2
    assert main(["extract", str(tmp_path / "missing.jpg"), "--out", str(tmp_path / "o"), "--raw"]) == 2
    assert "missing.jpg" in capsys.readouterr().err
    assert main(["extract", str(good), "--out", str(tmp_path / "o")]) == 2
