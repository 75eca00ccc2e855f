"""Bad input gets one clear line, never a silent wrong result: checkpoint identity at inference,
images (16-bit, EXIF, tensor ranges), points, config types and ranges, checkpoint metadata."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hyperfeat.api import Hyperfeatures
from hyperfeat.cli import main
from hyperfeat.cli.common import parse_points, parse_queries
from hyperfeat.config import load_config
from hyperfeat.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    HyperfeatError,
    ImageError,
)
from hyperfeat.geometry import as_points
from hyperfeat.images import load_image
from hyperfeat.model.checkpoint import (
    CheckpointMeta,
    build_network,
    load_checkpoint,
    save_checkpoint,
)
from hyperfeat.model.features import FeatureExtractor


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny_cfg, tiny_backbone):
    extractor = FeatureExtractor(tiny_backbone, tiny_cfg.features)
    network = build_network(tiny_cfg, extractor.channels)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    save_checkpoint(
        path, network, CheckpointMeta(tiny_cfg, extractor.channels, extractor.layers, list(extractor.save_steps))
    )
    return path


# ---------------------------------------------------------------------------- checkpoint identity


@pytest.mark.parametrize(
    "override, key",
    [
        ("features.num_steps=7", "features.num_steps"),
        ("features.mode=noise", "features.mode"),
        ("features.latent=sample", "features.latent"),
        ("backbone.tiny_seed=3", "backbone.tiny_seed"),
        ("backbone.model=stabilityai/stable-diffusion-2-1-base", "backbone.model"),
        ("features.output_resolution=8", "features.output_resolution"),
        ("backbone.revision=v2", "backbone.revision"),
    ],
)
def test_an_override_that_changes_what_descriptors_mean_is_refused(ckpt, tiny_backbone, override, key):
    with pytest.raises(CheckpointError, match=rf"{key}: .* in the checkpoint, .* now.*allow_mismatch=\[{key}\]"):
        Hyperfeatures.from_checkpoint(ckpt, backbone=tiny_backbone, overrides=[override])


def test_runtime_overrides_and_deliberate_mismatches_are_accepted(ckpt, tiny_backbone):
    hf = Hyperfeatures.from_checkpoint(
        ckpt,
        device="cpu",
        backbone=tiny_backbone,
        overrides=["features.batch_size=1", "features.streaming=true", "eval.batch_size=3"],
    )
    assert int(hf.cfg.features.batch_size) == 1
    hf = Hyperfeatures.from_checkpoint(
        ckpt,
        backbone=tiny_backbone,
        overrides=["backbone.tiny_seed=3", "checkpoint.allow_mismatch=[backbone.tiny_seed]"],
    )
    assert int(hf.cfg.backbone.tiny_seed) == 3


def test_a_preset_given_with_a_checkpoint_is_not_silently_ignored(ckpt, tiny_backbone):
    with pytest.raises(CheckpointError, match=r"given with backbone=sd21.*backbone.model"):
        Hyperfeatures.from_checkpoint(ckpt, backbone=tiny_backbone, overrides=["backbone=sd21"])
    # a preset that agrees with the checkpoint is fine
    Hyperfeatures.from_checkpoint(ckpt, backbone=tiny_backbone, overrides=["backbone=tiny"])


def test_checkpoint_metadata_missing_a_key_is_one_line(tmp_path, ckpt):
    saved = torch.load(ckpt, weights_only=True)
    del saved["hyperfeat"]["layers"]
    torch.save(saved, tmp_path / "nolayers.ckpt")
    with pytest.raises(CheckpointError, match=r"lacks metadata \['layers'\]"):
        load_checkpoint(tmp_path / "nolayers.ckpt")
    saved = torch.load(ckpt, weights_only=True)
    name = next(iter(saved["state_dict"]))
    saved["state_dict"][name] = torch.full_like(saved["state_dict"][name], float("nan"))
    torch.save(saved, tmp_path / "nan.ckpt")
    with pytest.raises(CheckpointError, match="non-finite"):
        load_checkpoint(tmp_path / "nan.ckpt")


# ---------------------------------------------------------------------------- images


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")
    got = np.asarray(load_image(path))[..., 0].astype(float)
    np.testing.assert_allclose(got, ramp / 65535 * 255, atol=1.0)  # was: everything above 255 → white
    assert got.mean() == pytest.approx(127.5, abs=1.0)
    np.testing.assert_allclose(np.asarray(load_image(ramp))[..., 0], got)  # a uint16 array too


def test_exif_orientation_is_applied(tmp_path):
    array = np.zeros((20, 40, 3), np.uint8)
    array[:, :20] = 255  # left half white, 40 wide × 20 high as stored
    img = Image.fromarray(array)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view"
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif.tobytes(), quality=95)
    shown = load_image(path)
    assert shown.size == (20, 40), "width and height swap as a viewer shows the photo"
    top = np.asarray(shown)[:10].mean()
    bottom = np.asarray(shown)[-10:].mean()
    assert top > 200 and bottom < 50, "the white half is on top after the clockwise turn"


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.full((3, 8, 8), float("nan")), "NaN"),
        (torch.rand(3, 8, 8) * 255, "divide by 255"),
        (torch.rand(3, 8, 8) * 2 - 1, r"\(x \+ 1\) / 2"),
        (torch.rand(5, 8, 9), "must be"),
        (torch.rand(8, 8), "3 dims"),
        (np.random.rand(8, 8, 3) * 255, "divide by 255"),
        (np.full((8, 8, 3), np.nan, np.float32), "NaN"),
        (np.zeros((8, 8, 3), np.int32), "dtype int32"),
    ],
)
def test_bad_tensors_and_arrays_are_rejected(bad, match):
    with pytest.raises(ImageError, match=match):
        load_image(bad)


def test_valid_tensors_still_load():
    image = torch.rand(3, 6, 10)
    back = np.asarray(load_image(image)).astype(float) / 255
    np.testing.assert_allclose(back, image.permute(1, 2, 0).numpy(), atol=1 / 255)
    assert load_image(torch.rand(6, 10, 3)).size == (10, 6)


def test_an_image_over_the_decompression_limit_is_one_line(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (300, 300)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageError, match="too large to decode safely"):
        load_image(path)


# ---------------------------------------------------------------------------- points


@pytest.mark.parametrize(
    "points, match",
    [
        (torch.zeros(2, 3), r"\(N, 2\).*shape \(2, 3\)"),
        (torch.zeros(0, 2), "empty"),
        ([], "shape"),
        ([[1.0, float("nan")]], "finite"),
        ("1,2", "numbers"),
    ],
)
def test_points_of_another_shape_or_empty_are_one_line(points, match):
    with pytest.raises(DataError, match=match):
        as_points(points)
    assert as_points([3, 4]).tolist() == [[3.0, 4.0]]


def test_match_refuses_n_by_3_points_instead_of_reshaping(ckpt, tiny_backbone):
    hf = Hyperfeatures.from_checkpoint(ckpt, device="cpu", backbone=tiny_backbone)
    image = torch.rand(3, 32, 32)
    with pytest.raises(DataError, match="shape \\(2, 3\\)"):  # (2, 3) used to become 3 wrong points
        hf.match(image, image, torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))


def test_non_finite_points_on_the_command_line_are_one_line():
    for text in ("nan,3,4", "0,inf,4"):
        with pytest.raises(HyperfeatError, match="finite"):
            parse_queries(text)
    with pytest.raises(HyperfeatError, match="finite"):
        parse_points("nan,4")


# ---------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "override, match",
    [
        ("train.lr=abc", "train.lr must be a number; got 'abc'"),
        ("train.lr=-1", "train.lr must be > 0"),
        ("train.max_steps=-5", "train.max_steps must be >= 1"),
        ("train.max_steps=2.5", "train.max_steps must be an integer"),
        ("aggregation.num_norm_groups=7", "num_norm_groups must be a positive integer dividing"),
        ("train.pairs_per_step=0", "train.pairs_per_step must be >= 1"),
        ("backbone.device=gpu", "backbone.device must be auto, cpu, cuda"),
        ("checkpoint.allow_mismatch=train.lr", "must be a list"),
        ("video.frame_size=0", "video.frame_size must be >= 1"),
    ],
)
def test_config_values_are_checked_by_type_and_range(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(overrides=[override])


def test_cuda_without_cuda_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="CUDA is not available here"):
        load_config(overrides=["backbone.device=cuda"])
    assert main(["train", "backbone=tiny", "backbone.device=cuda"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: backbone.device=cuda but CUDA is not available") and err.count("\n") == 1


# ---------------------------------------------------------------------------- smaller items


def test_written_files_get_the_umask_mode_not_0600(tmp_path):
    import os

    from hyperfeat.io import atomic_save

    old = os.umask(0o022)
    try:
        atomic_save({"x": torch.zeros(1)}, tmp_path / "a.pt")
    finally:
        os.umask(old)
    assert (tmp_path / "a.pt").stat().st_mode & 0o777 == 0o644


def test_a_full_disk_is_one_line_about_space_and_keeps_the_old_file(tmp_path, monkeypatch, ckpt, capsys):
    import errno
    import shutil

    import hyperfeat.io as hio
    from hyperfeat.errors import StorageError

    target = tmp_path / "a.pt"
    hio.atomic_save({"x": torch.zeros(1)}, target)
    before = target.read_bytes()

    def full(obj, path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"half")  # the write got this far
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(hio.torch, "save", full)
    with pytest.raises(StorageError, match=rf"no space left on the device to write {target} \(.* MiB free\)"):
        hio.atomic_save({"x": torch.ones(1)}, target)
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["a.pt"]

    # torch's stream writer says "basic_ios::clear: iostream error" without an errno: the free space decides
    def iostream(obj, path, *args, **kwargs):
        raise RuntimeError("basic_ios::clear: iostream error")

    monkeypatch.setattr(hio.torch, "save", iostream)
    usage, real_usage = shutil.disk_usage(tmp_path), shutil.disk_usage
    monkeypatch.setattr(hio.shutil, "disk_usage", lambda p: usage._replace(free=4096))
    with pytest.raises(StorageError, match="no space left"):
        hio.atomic_save({}, target)
    monkeypatch.setattr(hio.shutil, "disk_usage", lambda p: usage._replace(free=2**40))
    with pytest.raises(RuntimeError, match="iostream error"):  # space left: not our message
        hio.atomic_save({}, target)

    # through a command: `extract` writes its .pt through atomic_save, `match` its picture directly
    image = tmp_path / "i.png"
    Image.new("RGB", (32, 32), (120, 30, 200)).save(image)
    monkeypatch.setattr(hio.torch, "save", full)
    monkeypatch.setattr(hio.shutil, "disk_usage", real_usage)
    capsys.readouterr()
    assert main(["extract", str(image), "--out", str(tmp_path / "ex"), "--checkpoint", str(ckpt)]) == 2
    err = capsys.readouterr().err.splitlines()[-1]  # after the progress bar
    assert err.startswith(f"error: no space left on the device to write {tmp_path / 'ex' / 'i.pt'}"), err
    import hyperfeat.viz.correspondences as corr

    def no_room(fig, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(corr, "save_figure", no_room)
    assert (
        main(
            [
                "match",
                str(image),
                str(image),
                "--checkpoint",
                str(ckpt),
                "--points",
                "3,4",
                "--out",
                str(tmp_path / "m.png"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert (
        err == f"error: no space left on the device to write {tmp_path / 'm.png'}: free some space or write elsewhere\n"
    )


def test_negative_point_values_and_bad_out_suffix_fail_before_any_work(tmp_path, capsys):
    image = tmp_path / "i.png"
    Image.new("RGB", (16, 16)).save(image)
    missing = tmp_path / "none.ckpt"
    # "--points -5,10" reaches the point parser (argparse used to say "expected one argument")
    assert (
        main(
            [
                "match",
                str(image),
                str(image),
                "--checkpoint",
                str(missing),
                "--points",
                "-5,10",
                "--out",
                str(tmp_path / "m.xyz"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "--out" in err and ".png" in err and err.count("\n") == 1  # before the checkpoint is even read
