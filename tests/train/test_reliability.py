"""Training never loses or mislabels work: identity checked on resume, last.ckpt every N steps and
on SIGINT/SIGTERM, one training per folder, NaN/inf stop training before anything is written,
and a resumed run sees exactly the batches the killed one had not."""

from __future__ import annotations

import hashlib
import os
import signal

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from hyperfeat.cli import main
from hyperfeat.errors import CheckpointError, NumericsError, TrainingInterrupted
from hyperfeat.io import safe_torch_load
from hyperfeat.train.trainer import AtomicCheckpointIO, folder_lock, make_logger, train
from tests.train.test_training import QUIET, SMALL, SYNTHETIC, Killer, small_cfg


@pytest.fixture(scope="module")
def backbone(tiny_backbone):
    return tiny_backbone


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def step_of(path) -> int:
    return int(safe_torch_load(path)["global_step"])


class Batches(Callback):
    """(step, a fingerprint of the batch) for every training batch."""

    def __init__(self):
        self.seen: list[tuple[int, float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.append((trainer.global_step, round(float(batch["source_raw"].double().sum()), 3)))


class SendSignal(Callback):
    def __init__(self, at: int, signum: int):
        self.at, self.signum = at, signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.at:
            os.kill(os.getpid(), self.signum)


def test_rerun_of_a_finished_run_with_another_plan_fails_and_keeps_last_ckpt(tmp_path, capsys):
    """The must-show case, through the command line: exit non-zero naming the key, last.ckpt unchanged."""
    args = [
        "train",
        *SMALL,
        *SYNTHETIC,
        f"paths.output_dir={tmp_path}/out",
        f"paths.checkpoint_dir={tmp_path}/ckpt",
        "train.max_steps=2",
        "train.cache_features=true",
    ]
    assert main(args) == 0
    last = tmp_path / "ckpt" / "last.ckpt"
    before = sha(last)
    capsys.readouterr()
    assert main(args + ["features.save_steps=[4,3,1]"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "features.save_steps: [4, 2, 0] in the checkpoint, [4, 3, 1] now" in err
    assert "paths.checkpoint_dir" in err and "checkpoint.allow_mismatch=[features.save_steps]" in err
    assert sha(last) == before, "a refused resume writes nothing"
    assert (
        main(args + ["train.lr=0.5"]) == 2 and "train.lr: 0.001 in the checkpoint, 0.5 now" in capsys.readouterr().err
    )
    assert sha(last) == before
    # a deliberate override is accepted (and runtime keys never block a resume)
    assert main(args + ["train.lr=0.5", "checkpoint.allow_mismatch=[train.lr]", "train.num_workers=0"]) == 0


def test_last_ckpt_every_n_steps_and_resume_sees_the_remaining_batches(tmp_path, backbone):
    extra = (
        "train.max_steps=7",
        "train.checkpoint_every_n_steps=2",
        "train.val_every_n_steps=100",
        "train.cache_features=true",
    )
    full = Batches()
    train(small_cfg(tmp_path / "full", *extra), callbacks=[full], backbone=backbone, **QUIET)

    cfg = small_cfg(tmp_path / "killed", *extra)
    last = tmp_path / "killed" / "ckpt" / "last.ckpt"
    first = Batches()
    with pytest.raises(RuntimeError, match="simulated kill at step 5"):
        train(cfg, callbacks=[first, Killer(at=5)], backbone=backbone, **QUIET)
    assert step_of(last) == 4, "no validation ran: last.ckpt comes from the every-2-steps policy"
    second = Batches()
    train(cfg, callbacks=[second], backbone=backbone, **QUIET)
    assert second.seen[0][0] == 4
    # the killed run trained steps 0-4 and saved after step 3 (global step 4); the resumed run
    # redoes step 4 and sees what the uninterrupted run saw from there on (mid-epoch: 3 batches an epoch)
    assert len(first.seen) == 5 and first.seen[:4] + second.seen == full.seen
    assert step_of(last) == 7


def test_resumes_that_stop_at_an_epoch_end_keep_the_reference_batch_order(tmp_path, backbone):
    """A run resumed mid-epoch and stopped at that epoch's last batch, resumed again: Lightning restored
    it as a finished epoch plus one batch and the loader skipped the next epoch's remaining batches."""
    extra = (
        "train.max_steps=8",
        "train.checkpoint_every_n_steps=0",
        "train.val_every_n_steps=100",
        "train.cache_features=true",
    )
    full = Batches()
    train(small_cfg(tmp_path / "full", *extra), callbacks=[full], backbone=backbone, **QUIET)
    assert len({f for _, f in full.seen[3:6]}) > 1, "3 batches an epoch, each another pair of items"

    cfg = small_cfg(tmp_path / "stopped", *extra)
    last = tmp_path / "stopped" / "ckpt" / "last.ckpt"
    runs = []
    for at in (1, 2):  # SIGINT during step 1 (mid-epoch), then, resumed, during step 2 (the epoch's last)
        seen = Batches()
        with pytest.raises(TrainingInterrupted):
            train(cfg, callbacks=[seen, SendSignal(at=at, signum=signal.SIGINT)], backbone=backbone, **QUIET)
        assert step_of(last) == at + 1
        runs.append(seen.seen)
    rest = Batches()
    train(cfg, callbacks=[rest], backbone=backbone, **QUIET)
    assert [s for s, _ in runs[1]] == [2] and rest.seen[0][0] == 3
    assert runs[0] + runs[1] + rest.seen == full.seen, "no batch repeated, skipped or reordered"


def test_a_moved_checkpoint_folder_resumes_with_its_best_checkpoint(tmp_path, backbone, capsys):
    import shutil

    extra = ("train.val_every_n_steps=2", "train.checkpoint_every_n_steps=0")
    train(small_cfg(tmp_path / "a", "train.max_steps=2", *extra), backbone=backbone, **QUIET)
    shutil.move(tmp_path / "a" / "ckpt", tmp_path / "moved")
    cfg = small_cfg(tmp_path / "b", "train.max_steps=3", *extra, f"paths.checkpoint_dir={tmp_path}/moved")
    capsys.readouterr()
    last = train(cfg, backbone=backbone, **QUIET)  # used to end in a TypeError after training
    assert step_of(last) == 3  # no validation since the move: the best is still the moved step-2 file
    out = capsys.readouterr().out
    best = [line for line in out.splitlines() if line.startswith("best checkpoint: ")]
    assert best and str(tmp_path / "moved") in best[0], out
    path = best[0].split(": ", 1)[1].split(" (")[0]
    assert os.path.isfile(path) and not (tmp_path / "a" / "ckpt").exists()


def test_a_signal_during_the_last_step_reports_a_finished_run(tmp_path, backbone, capsys):
    cfg = small_cfg(tmp_path, "train.max_steps=3", "train.val_every_n_steps=100", "train.checkpoint_every_n_steps=0")
    last = train(cfg, callbacks=[SendSignal(at=2, signum=signal.SIGINT)], backbone=backbone, **QUIET)  # no raise
    assert step_of(last) == 3
    err = capsys.readouterr().err
    assert "SIGINT came during the last step: the run finished" in err and "holds step 3" in err
    assert "stopped by" not in err


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_last_ckpt_and_exits_with_its_status(tmp_path, backbone, signum, capsys):
    cfg = small_cfg(tmp_path, "train.max_steps=6", "train.val_every_n_steps=100", "train.checkpoint_every_n_steps=0")
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}  # what the shell gave us
    with pytest.raises(TrainingInterrupted) as stop:
        train(cfg, callbacks=[SendSignal(at=3, signum=signum)], backbone=backbone, **QUIET)
    assert stop.value.exit_code == 128 + signum
    assert step_of(tmp_path / "ckpt" / "last.ckpt") == 4, "the step running when the signal came is saved"
    err = capsys.readouterr().err
    assert f"{signal.Signals(signum).name} received" in err and "run the same command again to resume" in err
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers, "handlers are restored"


def test_a_second_training_into_a_folder_in_use_fails_clearly(tmp_path, backbone):
    cfg = small_cfg(tmp_path, "train.max_steps=1")
    with folder_lock(tmp_path / "ckpt"):
        with pytest.raises(CheckpointError, match=rf"in use by another training \(pid {os.getpid()}"):
            train(cfg, backbone=backbone, **QUIET)
    assert not (tmp_path / "ckpt" / "last.ckpt").exists()
    (tmp_path / "ckpt" / ".last.ckpt.x1.tmp").write_bytes(b"half")  # a kill during a write
    train(cfg, backbone=backbone, **QUIET)  # the lock is free again
    assert not list((tmp_path / "ckpt").glob("*.tmp"))


def test_nan_in_cached_maps_is_recomputed_and_nan_in_a_batch_stops_training(tmp_path, backbone):
    from hyperfeat.train.cache import CacheWarning
    from hyperfeat.train.trainer import FiniteGuard

    cfg = small_cfg(tmp_path, "train.max_steps=1", "train.cache_features=true")
    train(cfg, backbone=backbone, **QUIET)
    for entry in (tmp_path / "out" / "feature_cache").rglob("*.pt"):
        saved = torch.load(entry, weights_only=True)
        saved["layers"] = [torch.full_like(layer, float("nan")) for layer in saved["layers"]]
        torch.save(saved, entry)
    fresh = small_cfg(
        tmp_path, "train.max_steps=3", "train.cache_features=true", f"paths.checkpoint_dir={tmp_path}/ckpt2"
    )
    with pytest.warns(CacheWarning, match=r"feature cache file .* is corrupt or stale .*NaN/inf"):
        last = train(fresh, backbone=backbone, **QUIET)  # the entries are computed again
    assert step_of(last) == 3
    # maps that come out non-finite all the same (a backbone overflowing) stop training before the step
    stub = type("T", (), {"global_step": 0, "datamodule": None})()
    with pytest.raises(NumericsError, match=r"step 0: the cached raw maps of the source images .* hold NaN/inf"):
        FiniteGuard().on_train_batch_start(stub, None, {"source_raw": torch.tensor([float("nan")])}, 0)


class Poison(Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 1:
            with torch.no_grad():
                pl_module.aggregation.mixing_weights.fill_(float("nan"))


def test_nan_loss_stops_training_and_non_finite_weights_are_never_written(tmp_path, backbone):
    cfg = small_cfg(tmp_path, "train.max_steps=4", "train.checkpoint_every_n_steps=1", "train.val_every_n_steps=100")
    with pytest.raises(NumericsError, match="step 2: the training loss is nan"):
        train(cfg, callbacks=[Poison()], backbone=backbone, **QUIET)
    last = tmp_path / "ckpt" / "last.ckpt"
    assert step_of(last) == 1, "the last finite state is kept"
    path = tmp_path / "bad.ckpt"
    with pytest.raises(NumericsError, match="hold NaN/inf"):
        AtomicCheckpointIO().save_checkpoint(
            {"global_step": 3, "state_dict": {"w": torch.tensor([float("inf")])}}, path
        )
    assert not path.exists()


def test_a_resumed_run_logs_into_the_same_wandb_run(tmp_path, monkeypatch):
    from hyperfeat.config import load_config

    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = load_config(overrides=[f"paths.output_dir={tmp_path}/out", f"paths.checkpoint_dir={tmp_path}/ckpt"])
    first = make_logger(cfg, resume=False)._wandb_init["id"]
    assert make_logger(cfg, resume=True)._wandb_init["id"] == first
    assert make_logger(cfg, resume=False)._wandb_init["id"] != first, "a fresh run is a new wandb run"
