"""Malformed input: truncated files of every kind the project reads, malformed fields of a saved
config, numeric settings out of range, a data set folder missing files, a local backbone folder
that does not load. Each is one line naming the file, field or value and what was expected
(or a warning that says what is missing), never a traceback or a silent wrong result."""

from __future__ import annotations

import json
import pickle
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from hyperfeat.cli import main
from hyperfeat.config import load_config
from hyperfeat.errors import BackboneError, CheckpointError, ConfigError, HyperfeatError
from hyperfeat.model.pretrained import load_pretrained, save_pretrained
from tests.helpers import translated_video, write_frames


@pytest.fixture(scope="module")
def tiny_ckpt(make_tiny_checkpoint):
    return make_tiny_checkpoint()


@pytest.fixture(scope="module")
def saved(tiny_ckpt, tmp_path_factory):
    return save_pretrained(tmp_path_factory.mktemp("saved") / "model", *load_pretrained(tiny_ckpt), card=False)


# ---------------------------------------------------------------------------- truncated files


def _tracks(path):
    from hyperfeat.video.queries import save_tracks

    save_tracks(
        path, torch.tensor([[0.0, 1.0, 2.0]]), torch.zeros(1, 3, 2), torch.ones(1, 3, dtype=torch.bool), size=(8, 8)
    )


def _read_tracks(path):
    from hyperfeat.video.queries import load_tracks

    return load_tracks(path)


def _mask(path):
    Image.fromarray((np.arange(64 * 48).reshape(48, 64) % 3).astype(np.uint8), "L").save(path)


def _image(path):
    Image.fromarray((np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)).save(path)


def _pickle(path):
    path.write_bytes(pickle.dumps({"clip": {"video": np.zeros((2, 4, 4, 3), np.uint8)}}))


def _unpickle(path):
    from hyperfeat.io import safe_unpickle

    return safe_unpickle(path, "TAP-Vid file", HyperfeatError)


def _yaml(path):
    path.write_text("train:\n  lr: 0.001\n  max_steps: 5\npaths:\n  output_dir: 'somewhere/far/away'\n")


KINDS = {
    # kind: (file name, write a good file, read it)
    "checkpoint": ("c.ckpt", None, lambda p: load_pretrained(p)),
    "safetensors": ("model.safetensors", None, lambda p: load_pretrained(p)),
    "config.json": ("config.json", None, lambda p: load_pretrained(p.parent)),
    "yaml config": ("c.yaml", _yaml, lambda p: load_config(p)),
    "tracks json": ("t.json", _tracks, _read_tracks),
    "tracks npz": ("t.npz", _tracks, _read_tracks),
    "tracks csv": ("t.csv", _tracks, _read_tracks),
    "mask png (track, changes)": (
        "m.png",
        _mask,
        lambda p: __import__("hyperfeat.video.queries", fromlist=["x"]).read_mask_png(p),
    ),
    "mask png (propagate)": (
        "m.png",
        _mask,
        lambda p: __import__("hyperfeat.data.videos.davis", fromlist=["x"]).read_mask(p),
    ),
    "image": ("i.jpg", _image, lambda p: __import__("hyperfeat.images", fromlist=["x"]).load_image(p)),
    "tap-vid pickle": ("d.pkl", _pickle, _unpickle),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_truncated_file_is_one_line_naming_it(kind, tmp_path, tiny_ckpt, saved):
    name, write, read = KINDS[kind]
    if kind == "checkpoint":
        path = tmp_path / name
        path.write_bytes(tiny_ckpt.read_bytes())
    elif kind in ("safetensors", "config.json"):
        folder = tmp_path / "saved"
        folder.mkdir()
        for item in saved.iterdir():
            (folder / item.name).write_bytes(item.read_bytes())
        path = folder / name
    else:
        path = tmp_path / name
        write(path)
    read(path)  # the whole file reads
    data = path.read_bytes()
    cut = data[: len(data) // 2] if kind != "yaml config" else data[: data.index(b"'") + 5]  # an open quote
    path.write_bytes(cut)
    with pytest.raises(HyperfeatError) as refused:
        read(path)
    message = str(refused.value)
    assert str(path) in message and "Traceback" not in message, message
    assert "\n" not in message or kind == "yaml config", message  # YAML's own error points at the line


def test_a_truncated_checkpoint_through_a_command_is_one_line(tmp_path, tiny_ckpt, capsys):
    bad = tmp_path / "cut.ckpt"
    bad.write_bytes(tiny_ckpt.read_bytes()[:3000])
    image = tmp_path / "i.png"
    _image(image)
    assert main(["match", str(image), str(image), "--checkpoint", str(bad), "--points", "3,4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and str(bad) in err


# ---------------------------------------------------------------------------- saved config fields


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda c: c.__setitem__("aggregation", [1, 2]), "config.aggregation must be a mapping"),
        (lambda c: c.__setitem__("features", "inversion"), "config.features must be a mapping"),
        (
            lambda c: c["aggregation"].__setitem__("projection_dim", "wide"),
            "config.aggregation.projection_dim must be a positive integer; got 'wide'",
        ),
        (
            lambda c: c["aggregation"].__setitem__("num_norm_groups", 2.5),
            "config.aggregation.num_norm_groups must be a positive integer",
        ),
        (
            lambda c: c["features"].__setitem__("save_steps", "all"),
            "config.features.save_steps must be a non-empty list",
        ),
        (lambda c: c.clear(), "config.backbone must be a mapping"),
    ],
)
def test_malformed_config_json_fields_are_one_line(tmp_path, saved, capsys, edit, words):
    folder = tmp_path / "model"
    folder.mkdir()
    for item in saved.iterdir():
        (folder / item.name).write_bytes(item.read_bytes())
    record = json.loads((folder / "config.json").read_text())
    edit(record["config"])
    (folder / "config.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match=rf"{folder / 'config.json'}: {words}"):
        load_pretrained(folder)
    image = tmp_path / "i.png"
    _image(image)
    assert main(["match", str(image), str(image), "--checkpoint", str(folder), "--points", "3,4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words.split(";")[0] in err


@pytest.mark.parametrize(
    "record_edit, words",
    [
        (lambda r: r.__setitem__("feature_dims", "wide"), "lacks or garbles"),
        (lambda r: r.__setitem__("layers", [[1, "x"]]), "lacks or garbles"),
        (lambda r: r.pop("save_steps"), "lacks or garbles"),
    ],
)
def test_malformed_record_fields_are_one_line(tmp_path, saved, record_edit, words):
    folder = tmp_path / "model"
    folder.mkdir()
    for item in saved.iterdir():
        (folder / item.name).write_bytes(item.read_bytes())
    record = json.loads((folder / "config.json").read_text())
    record_edit(record)
    (folder / "config.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match=words):
        load_pretrained(folder)


# ---------------------------------------------------------------------------- numeric ranges


@pytest.mark.parametrize(
    "override, words",
    [
        ("video.temperature=-1", "video.temperature must be > 0; got -1"),
        ("video.topk=0", "video.topk must be >= 1; got 0"),
        ("video.topk=two", "video.topk must be an integer; got 'two'"),
        ("video.temperature=nan", "video.temperature must be a number; got 'nan'"),  # the line gives a string
        ("video.temperature=.nan", "video.temperature must be a finite number; got nan"),
        ("eval.softmax_temperature=.inf", "eval.softmax_temperature must be a finite number; got inf"),
        ("train.lr=.inf", "train.lr must be a finite number; got inf"),
        ("web.max_frames=0", "web.max_frames must be >= 1; got 0"),
        ("web.max_upload_mb=-5", "web.max_upload_mb must be > 0; got -5"),
    ],
)
def test_numeric_settings_out_of_range_are_one_line(override, words):
    with pytest.raises(ConfigError) as refused:
        load_config(overrides=["backbone=tiny", override])
    assert str(refused.value) == words


def tracking_key(leaf: str) -> tuple[str, list[str]]:
    """The config key of the tracking setting ``leaf`` and the overrides that make it the one used:
    ``video.<leaf>``, or ``video.trackers.<name>.<leaf>`` with ``video.tracker=<name>`` where each
    tracker keeps its settings in its own block."""
    video = load_config(overrides=["backbone=tiny"]).video
    if leaf in video:
        return f"video.{leaf}", []
    for name, block in (video.get("trackers") or {}).items():
        if leaf in block:
            return f"video.trackers.{name}.{leaf}", [f"video.tracker={name}"]
    pytest.fail(f"no tracking setting {leaf} in the config")


@pytest.mark.parametrize(
    "leaf, value, words",
    [
        ("track_radius", "-3", "must be >= 0"),
        ("min_similarity", ".nan", "must be a finite number"),
        ("refine_temperature", "0", "must be > 0"),
    ],
)
def test_a_tracking_setting_out_of_range_stops_track_with_one_line(tmp_path, checkpoint, capsys, leaf, value, words):
    """Once said silently wrong (a negative radius tracked, a NaN floor taken, a zero temperature
    ending in 'points_xy must be finite'): now one line naming the key, and nothing written."""
    write_frames(translated_video(steps=3), tmp_path / "frames")
    key, chosen = tracking_key(leaf)
    out = tmp_path / "t.gif"
    argv = ["track", str(tmp_path / "frames"), "--checkpoint", str(checkpoint), "--points", "0,10,10"]
    code = main([*argv, "--out", str(out), *chosen, f"{key}={value}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err and err[-1].startswith("error: ") and key in err[-1] and words in err[-1], err
    assert not out.exists()


# ---------------------------------------------------------------------------- data sets and backbones


def test_a_pf_willow_folder_missing_images_says_so(tmp_path):
    from scipy.io import savemat

    from hyperfeat.data.pairs.base import DataWarning
    from hyperfeat.data.pairs.pf_willow import PFWillowPairs

    root = tmp_path / "PF-dataset-WILLOW"
    for cls in ("car(G)", "duck(S)"):
        (root / cls).mkdir(parents=True)
        for i in range(10 if cls == "car(G)" else 9):  # duck(S) lost one image and its annotation
            Image.new("RGB", (40, 30), (20 * i, 50, 90)).save(root / cls / f"{cls[:3]}{i:02d}.png")
            savemat(
                str(root / cls / f"{cls[:3]}{i:02d}.mat"),
                {"pts_coord": np.array([[5.0, 10.0, 20.0], [4.0, 8.0, 12.0]])},
            )
    with pytest.warns(
        DataWarning,
        match=r"1 class folder\(s\) do not hold the benchmark's 10 images \(duck\(S\): 9\): "
        r"162 pairs are listed instead of 900",
    ):
        data = PFWillowPairs(tmp_path, 64)
    assert len(data) == 90 + 72
    (root / "duck(S)" / "duc00.png").unlink()  # an image without its picture: those pairs are skipped, said too
    with pytest.warns(DataWarning) as said:
        PFWillowPairs(tmp_path, 64)
    assert any("missing" in str(w.message) and "duc00.png" in str(w.message) for w in said)


def test_a_local_backbone_folder_that_does_not_load_names_the_folder_not_a_download(tmp_path):
    from hyperfeat.model.backbone import SD_SUBFOLDERS, load_pretrained_components

    for sub in SD_SUBFOLDERS:
        (tmp_path / "sd" / sub).mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(BackboneError) as refused:
            load_pretrained_components(str(tmp_path / "sd"))
    message = str(refused.value)
    assert f"from the folder {tmp_path / 'sd'}" in message and "damaged or incomplete" in message
    assert "hf download" not in message and "\n" not in message
