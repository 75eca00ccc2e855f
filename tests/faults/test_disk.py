"""Faults of the machine while writing: a full disk, a read-only or forbidden folder, a file where
a folder is needed. Every writer ends in one line naming the file (``io.write_error``), a
non-zero exit from the command line, no half-written file and the old file unchanged.

A full disk is simulated by writers that fail with ENOSPC (monkeypatch), and read-only folders by
EROFS/EACCES the same way: CI runs as root, for whom ``chmod`` does not stop a write (the test
with a real read-only folder runs only as another user)."""

from __future__ import annotations

import errno
import os

import pytest
import torch
from PIL import Image

import hyperfeat.io as hio
from hyperfeat.cli import main
from hyperfeat.errors import StorageError
from tests.helpers import translated_video, write_frames

FAULTS = [
    (errno.ENOSPC, "no space left on the device to write {path}"),
    (errno.EDQUOT, "no space left on the device to write {path}"),
    (errno.EROFS, "cannot write {path}: the file system is read-only; write elsewhere"),
    (errno.EACCES, "cannot write {path}: permission denied"),
    (errno.EIO, "cannot write {path}: input/output error"),
]


def failing_with(code: int, partial: bool = True):
    def write(obj, path, *args, **kwargs):
        if partial:
            with open(path, "wb") as handle:
                handle.write(b"half")  # the write got this far
        raise OSError(code, os.strerror(code), str(path))

    return write


@pytest.mark.parametrize("code, words", FAULTS)
def test_every_os_fault_of_a_write_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch, code, words):
    target = tmp_path / "a.pt"
    hio.atomic_save({"x": torch.zeros(1)}, target)
    before = target.read_bytes()
    monkeypatch.setattr(hio.torch, "save", failing_with(code))
    with pytest.raises(StorageError) as refused:
        hio.atomic_save({"x": torch.ones(1)}, target)
    assert str(refused.value).startswith(words.format(path=target)) and "\n" not in str(refused.value)
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["a.pt"]


def test_a_read_only_folder_fails_when_the_temporary_file_is_made(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path))

    monkeypatch.setattr(hio.tempfile, "mkstemp", read_only)
    with pytest.raises(StorageError, match=rf"cannot write {tmp_path / 'x.json'}: the file system is read-only"):
        hio.atomic_write(tmp_path / "x.json", lambda tmp: None)


def test_other_errors_of_a_writer_are_not_disguised(tmp_path):
    def bug(tmp):
        raise ValueError("a bug in the writer")

    with pytest.raises(ValueError, match="a bug in the writer"):
        hio.atomic_write(tmp_path / "x", bug)
    assert not list(tmp_path.iterdir())


def test_safetensors_reports_a_full_disk_in_its_own_words(tmp_path, monkeypatch, make_tiny_checkpoint, capsys):
    """`export` of a checkpoint onto a full disk: safetensors raises its own error type."""
    import safetensors.torch
    from safetensors import SafetensorError

    import hyperfeat.model.pretrained  # noqa: F401

    def full(*args, **kwargs):
        raise SafetensorError(
            'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
        )

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    out = tmp_path / "exported"
    assert main(["export", str(make_tiny_checkpoint()), str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: no space left on the device to write {out / 'model.safetensors'}")
    assert err.count("\n") == 1 and not list(out.glob("*.tmp")) and not list(out.glob(".*"))


@pytest.mark.parametrize(
    "code, words", [(errno.EROFS, "read-only"), (errno.EACCES, "permission denied"), (errno.ENOSPC, "no space left")]
)
def test_commands_writing_outputs_to_a_faulty_folder_say_one_line(
    tmp_path, monkeypatch, make_tiny_checkpoint, capsys, code, words
):
    ckpt = make_tiny_checkpoint()
    image = tmp_path / "i.png"
    Image.new("RGB", (32, 32), (120, 30, 200)).save(image)
    monkeypatch.setattr(hio.torch, "save", failing_with(code))
    assert main(["extract", str(image), "--out", str(tmp_path / "ex"), "--checkpoint", str(ckpt)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert err.startswith("error: ") and words in err and str(tmp_path / "ex" / "i.pt") in err, err
    import hyperfeat.viz.correspondences as corr

    def faulty(fig, path):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(corr, "save_figure", faulty)
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
    assert err.count("\n") == 1 and words in err and str(tmp_path / "m.png") in err, err


def test_an_output_folder_that_is_a_file_is_one_line(tmp_path, make_tiny_checkpoint, capsys):
    """Real faults, no simulation: they stop root too."""
    image = tmp_path / "i.png"
    Image.new("RGB", (16, 16)).save(image)
    taken = tmp_path / "taken"
    taken.write_text("an existing file")
    assert main(["extract", str(image), "--out", str(taken), "--checkpoint", str(make_tiny_checkpoint())]) == 2
    err = capsys.readouterr().err
    assert (
        err == f"error: cannot write {taken}: {taken} exists and is a file, where a folder is needed; "
        f"name another folder\n"
    )
    assert taken.read_text() == "an existing file"
    with pytest.raises(StorageError, match="a part of its folder path is a file"):
        hio.atomic_write(taken / "inside" / "x.json", lambda tmp: None)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders: simulated above with EROFS/EACCES")
def test_a_real_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(StorageError, match="permission denied"):
            hio.atomic_save({}, folder / "x.pt")
    finally:
        folder.chmod(0o700)


# ---------------------------------------------------------------------------- memory-mapped stores


def test_a_memory_mapped_store_takes_its_space_first_or_fails_in_one_line(tmp_path, monkeypatch):
    from hyperfeat.video.stream import DescriptorStore

    store = DescriptorStore((3, 4, 5, 5), "float32", tmp_path / "ok.npy")
    assert os.stat(store._partial).st_blocks * 512 >= 3 * 4 * 5 * 5 * 4, "blocks allocated, not a sparse file"
    store.discard()

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(hio.os, "posix_fallocate", full)
    with pytest.raises(StorageError, match=r"no space left on the device to write .*full\.npy\.\d+\.partial"):
        DescriptorStore((30, 64, 32, 32), "float16", tmp_path / "full.npy")
    assert not list(tmp_path.iterdir()), "no .partial file is left"

    def unsupported(fd, offset, length):  # a file system that cannot allocate ahead: the free space decides
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(hio.os, "posix_fallocate", unsupported)
    usage = hio.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(hio.shutil, "disk_usage", lambda p: usage._replace(free=1000))
    with pytest.raises(StorageError, match=r"MiB needed, 0\.0 MiB free"):
        DescriptorStore((30, 64, 32, 32), "float16", tmp_path / "small.npy")
    assert not list(tmp_path.iterdir())


def test_track_onto_a_full_disk_exits_with_one_line_and_no_partial_file(tmp_path, monkeypatch, checkpoint, capsys):
    write_frames(translated_video(steps=4), tmp_path / "frames")

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(hio.os, "posix_fallocate", full)
    cache = tmp_path / "cache"
    code = main(
        [
            "track",
            str(tmp_path / "frames"),
            "--checkpoint",
            str(checkpoint),
            "--points",
            "0,10,10",
            "--out",
            str(tmp_path / "t.gif"),
            f"video.cache_dir={cache}",
            "video.frame_size=64",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith(f"error: no space left on the device to write {cache}"), err
    assert not list(cache.glob("*")) and not (tmp_path / "t.gif").exists()


# ---------------------------------------------------------------------------- long runs: eval and training

SYNTHETIC_EVAL = [
    "data=synthetic",
    "data.root=generated",
    "data.test_split=test",
    "data.generated_images=4",
    "data.pairs_per_image=2",
    "data.generated_size=64",
    "eval.batch_size=2",
]


def test_eval_into_an_unwritable_place_fails_before_evaluating(tmp_path, make_tiny_checkpoint, monkeypatch, capsys):
    taken = tmp_path / "taken"
    taken.write_text("a file")
    ckpt = str(make_tiny_checkpoint())
    out = taken / "eval.json"
    argv = ["eval", "--checkpoint", ckpt, *SYNTHETIC_EVAL, f"paths.output_dir={tmp_path}"]
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert (
        err == f"error: cannot write {out}: {taken} exists and is a file, where a folder is needed; "
        f"name another folder\n"
    ), err  # no progress bar: nothing was evaluated

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(hio.tempfile, "mkstemp", read_only)
    assert main([*argv, "--out", str(tmp_path / "r" / "eval.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write {tmp_path / 'r' / 'eval.json'}: the file system is read-only")
    assert err.count("\n") == 1


def test_training_into_an_unwritable_folder_or_cache_is_one_line(tmp_path, monkeypatch, capsys):
    from tests.train.test_training import SMALL, SYNTHETIC

    taken = tmp_path / "taken"
    taken.write_text("a file")
    base = [*SMALL, *SYNTHETIC, "train.max_steps=1", f"paths.output_dir={tmp_path}/out"]
    assert main(["train", *base, f"paths.checkpoint_dir={taken}/ckpt"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: cannot write {taken}/ckpt: a part of its folder path is a file"), err
    assert taken.read_text() == "a file"

    monkeypatch.setattr(hio.torch, "save", failing_with(errno.EROFS))  # the feature cache's first entry
    code = main(["train", *base, f"paths.checkpoint_dir={tmp_path}/ckpt", "train.cache_features=true"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith(f"error: cannot write {tmp_path}/out/feature_cache/"), err
    assert "the file system is read-only" in err[-1] and not list((tmp_path / "out").rglob("*.tmp"))
