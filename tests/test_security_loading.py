"""No file the project reads can run code: crafted pickles through every loading path.

Each crafted file holds an object whose unpickling calls ``open(marker, "w")`` (creating the
marker file), as a shell-command payload would run its command. A plain ``torch.load`` /
``pickle.load`` does create the marker (checked first, so the payload is real); every project
path must refuse the file with one clear error and leave no marker behind.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hyperfeat.cli import main
from hyperfeat.errors import CheckpointError, DataError, HyperfeatError
from hyperfeat.io import UnsafeFileError, safe_torch_load, safe_unpickle


class Payload:
    """Unpickling this calls open(marker, 'w'): a visible side effect standing in for any code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def crafted_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"hyperfeat": {"config": Payload(marker)}, "state_dict": {}}, path)
    return path


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "MARKER"


@pytest.fixture
def evil_ckpt(tmp_path, marker):
    path = crafted_checkpoint(tmp_path / "evil.ckpt", marker)
    torch.load(path, weights_only=False)  # the payload is real: an unsafe load runs it
    assert marker.exists()
    marker.unlink()
    return path


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)).save(path)
    return path


def test_safe_loaders_refuse_code_and_read_data(tmp_path, evil_ckpt, marker):
    with pytest.raises(UnsafeFileError, match=r"refusing to load .*(builtins|io)\.open"):
        safe_torch_load(evil_ckpt)
    assert not marker.exists()
    plain = tmp_path / "plain.pt"
    torch.save({"x": torch.arange(3), "n": np.float32(2.5), "a": np.arange(4), "p": Path("a/b")}, plain)
    back = safe_torch_load(plain)
    assert back["x"].tolist() == [0, 1, 2] and float(back["n"]) == 2.5 and back["a"].tolist() == [0, 1, 2, 3]


def test_from_checkpoint_refuses_a_crafted_file(evil_ckpt, marker):
    from hyperfeat.api import Hyperfeatures

    with pytest.raises(CheckpointError, match="refusing to load checkpoint"):
        Hyperfeatures.from_checkpoint(evil_ckpt, device="cpu")
    assert not marker.exists()


def test_every_command_refuses_a_crafted_checkpoint(tmp_path, evil_ckpt, marker, image, capsys):
    frames = tmp_path / "frames"
    frames.mkdir()
    for t in range(2):
        Image.open(image).save(frames / f"{t:05d}.png")
    mask = tmp_path / "mask.png"
    Image.new("P", (32, 32)).save(mask)
    official = tmp_path / "official.pt"
    torch.save({"aggregation_network": Payload(marker)}, official)
    runs = {
        "convert-official": ["convert-official", str(official), str(tmp_path / "out.ckpt"), "backbone=tiny"],
        "eval": ["eval", "--checkpoint", str(evil_ckpt), "data=synthetic"],
        "plot-mixing": ["plot-mixing", str(evil_ckpt), "--out", str(tmp_path / "m.png")],
        "match": [
            "match",
            str(image),
            str(image),
            "--checkpoint",
            str(evil_ckpt),
            "--points",
            "1,2",
            "--out",
            str(tmp_path / "match.png"),
        ],
        "extract": ["extract", str(image), "--out", str(tmp_path / "ex"), "--checkpoint", str(evil_ckpt)],
        "track": [
            "track",
            str(frames),
            "--checkpoint",
            str(evil_ckpt),
            "--points",
            "0,4,4",
            "--out",
            str(tmp_path / "t.gif"),
        ],
        "propagate": [
            "propagate",
            str(frames),
            "--checkpoint",
            str(evil_ckpt),
            "--mask",
            str(mask),
            "--out",
            str(tmp_path / "p"),
        ],
        "changes": [
            "changes",
            str(frames),
            "--checkpoint",
            str(evil_ckpt),
            "--grid",
            "2",
            "--out",
            str(tmp_path / "c"),
        ],
        "export": ["export", str(evil_ckpt), str(tmp_path / "exported")],
    }
    for name, argv in runs.items():
        capsys.readouterr()
        assert main(argv) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("error: refusing to load") and err.count("\n") == 1, (name, err)
        assert not marker.exists(), f"{name} ran code from the file"
    # the `python eval.py --checkpoint` script itself (a wrapper of `hyperfeat eval`)
    import runpy
    import sys

    root = Path(__file__).resolve().parents[1]
    argv, sys.argv = sys.argv, [str(root / "eval.py"), "--checkpoint", str(evil_ckpt), "data=synthetic"]
    try:
        with pytest.raises(SystemExit) as stop:
            runpy.run_path(str(root / "eval.py"), run_name="__main__")
    finally:
        sys.argv = argv
    assert stop.value.code == 2 and not marker.exists()
    assert capsys.readouterr().err.startswith("error: refusing to load")


def test_training_refuses_a_crafted_last_ckpt(tmp_path, marker):
    from hyperfeat.config import load_config
    from hyperfeat.train.trainer import train

    ckpt_dir = tmp_path / "ckpt"
    ckpt_dir.mkdir()
    crafted_checkpoint(ckpt_dir / "last.ckpt", marker)
    cfg = load_config(
        overrides=[
            "backbone=tiny",
            f"paths.checkpoint_dir={ckpt_dir}",
            f"paths.output_dir={tmp_path}/out",
            "logger.backend=none",
        ]
    )
    with pytest.raises(CheckpointError, match="refusing to load"):
        train(cfg)
    assert not marker.exists()


def test_caches_never_unpickle_code(tmp_path, marker):
    from hyperfeat.video import store

    path = tmp_path / "entry.pt"
    torch.save({"descriptors": Payload(marker), "key": "k"}, path)
    with pytest.warns(UserWarning, match="unreadable.*refusing"):
        assert store._load_cache(path, "k", 2) is None  # recomputed, never built
    with pytest.raises(ValueError, match="refusing"):
        safe_torch_load(path, "feature cache entry", ValueError, mmap=True)  # the cache's reader
    assert not marker.exists()


def test_tapvid_pickle_is_read_without_running_code(tmp_path, marker):
    from hyperfeat.data.videos.tapvid import TapVidDavis

    root = tmp_path / "tapvid"
    root.mkdir()
    with open(root / "evil.pkl", "wb") as handle:
        pickle.dump({"videos": [{"video": Payload(marker)}]}, handle)
    with pytest.raises(DataError, match="refusing to load TAP-Vid pickle"):
        TapVidDavis(root, pickle_name="evil.pkl")
    assert not marker.exists()
    # the real layout (numpy arrays, dtypes, scalars in dicts and lists) is read
    good = {
        "videos": [{"points": np.zeros((2, 3, 2), np.float32), "occluded": np.zeros((2, 3), bool), "n": np.int64(3)}]
    }
    with open(root / "good.pkl", "wb") as handle:
        pickle.dump(good, handle)
    back = safe_unpickle(root / "good.pkl")
    assert back["videos"][0]["points"].shape == (2, 3, 2) and int(back["videos"][0]["n"]) == 3
    truncated = root / "cut.pkl"
    truncated.write_bytes((root / "good.pkl").read_bytes()[:40])
    with pytest.raises(HyperfeatError, match="cannot read"):
        safe_unpickle(truncated, error=DataError)
