"""SIGTERM is Ctrl-C everywhere: every command, evaluation (a partial record), training (last.ckpt,
no validation an uninterrupted run would not have made) and the feature-cache fill (stops now,
not after the whole fill)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from lightning.pytorch.callbacks import Callback

from hyperfeat.cli import main
from hyperfeat.cli.common import COMMANDS
from hyperfeat.errors import TrainingInterrupted
from hyperfeat.train.trainer import train
from tests.train.test_reliability import SendSignal, step_of
from tests.train.test_training import QUIET, small_cfg

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def backbone(tiny_backbone):
    return tiny_backbone


def command_that(monkeypatch, run) -> None:
    monkeypatch.setitem(COMMANDS, "faulty", ("a test command", lambda p: None, run))


def test_sigterm_in_any_command_is_ctrl_c_one_line_and_143(monkeypatch, capsys):
    def sleeps(args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)
        return 0

    command_that(monkeypatch, sleeps)
    before = signal.getsignal(signal.SIGTERM)
    started = time.monotonic()
    assert main(["faulty"]) == 143
    assert time.monotonic() - started < 5
    assert capsys.readouterr().err == "interrupted (SIGTERM)\n"
    assert signal.getsignal(signal.SIGTERM) == before, "the handler is put back"

    def keeps_partial(args):  # a command that handles the interruption itself (eval) and says 130
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)
        except KeyboardInterrupt:
            return 130
        return 0

    command_that(monkeypatch, keeps_partial)
    assert main(["faulty"]) == 143

    def ctrl_c(args):
        raise KeyboardInterrupt

    command_that(monkeypatch, ctrl_c)
    assert main(["faulty"]) == 130 and capsys.readouterr().err == "interrupted (Ctrl-C)\n"


@pytest.mark.parametrize(
    "fault, words",
    [
        (MemoryError(), "error: out of memory"),
        (FileNotFoundError(2, "No such file or directory", "/x/y"), "error: No such file or directory: /x/y"),
    ],
)
def test_machine_faults_outside_writers_are_one_line(monkeypatch, capsys, fault, words):
    def raises(args):
        raise fault

    command_that(monkeypatch, raises)
    assert main(["faulty"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(words) and err.count("\n") == 1


def test_sigterm_during_eval_writes_the_partial_record(tmp_path, make_tiny_checkpoint):
    out = tmp_path / "eval.json"
    cmd = [
        sys.executable,
        "eval.py",
        "--checkpoint",
        str(make_tiny_checkpoint()),
        "data=synthetic",
        "data.root=generated",
        "data.test_split=test",
        "data.generated_images=8",
        "data.pairs_per_image=50",
        "data.generated_size=64",
        "eval.batch_size=1",
        f"paths.output_dir={tmp_path}",
        "--out",
        str(out),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    err = bytearray()

    def read():
        while chunk := proc.stderr.read1(4096):
            err.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while b"evaluating synthetic: " not in err or b"2/" not in err:
        assert time.monotonic() < deadline and proc.poll() is None, err.decode(errors="replace")
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    reader.join(timeout=10)
    lines = [line for line in err.decode().replace("\r", "\n").splitlines() if line and "evaluating" not in line]
    assert proc.returncode == 143, lines
    assert len(lines) == 1 and lines[0].startswith("interrupted after ") and str(out) in lines[0], lines
    saved = json.loads(out.read_text())
    assert saved["partial"] is True and 0 < saved["progress"]["done"] < saved["progress"]["total"] == 100


class Validations(Callback):
    def __init__(self):
        self.steps: list[int] = []

    def on_validation_epoch_start(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.steps.append(trainer.global_step)


@pytest.mark.parametrize("at, validated", [(1, []), (3, [4])])
def test_a_stop_validates_only_on_the_schedule(tmp_path, backbone, at, validated):
    """Signal during step ``at`` + 1 (stop there); validation every 4 steps: the stop step is
    validated only when an uninterrupted run validates it too."""
    cfg = small_cfg(tmp_path, "train.max_steps=8", "train.val_every_n_steps=4", "train.checkpoint_every_n_steps=0")
    seen = Validations()
    with pytest.raises(TrainingInterrupted):
        train(cfg, callbacks=[SendSignal(at=at, signum=signal.SIGTERM), seen], backbone=backbone, **QUIET)
    assert step_of(tmp_path / "ckpt" / "last.ckpt") == at + 1
    assert seen.steps == validated
    resumed = Validations()
    train(cfg, callbacks=[resumed], backbone=backbone, **QUIET)
    assert resumed.steps == [s for s in (4, 8) if s not in validated], "the rest of the schedule, once each"


def test_a_signal_during_the_cache_fill_stops_it_now(tmp_path, backbone, monkeypatch, capsys):
    from hyperfeat.train.cache import FeatureCache

    cfg = small_cfg(tmp_path, "train.max_steps=2", "train.cache_features=true", "features.batch_size=1")
    calls = []
    compute = FeatureCache.compute

    def compute_then_signal(self, images, keys, extractor):
        calls.append(len(keys))
        out = compute(self, images, keys, extractor)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(FeatureCache, "compute", compute_then_signal)
    with pytest.raises(TrainingInterrupted) as stop:
        train(cfg, backbone=backbone, **QUIET)
    # the pair in hand (its two images, one per backbone call) is finished; the other five are not begun
    assert stop.value.exit_code == 130 and calls == [1, 1], "the fill stops after the item in hand"
    err = capsys.readouterr().err
    assert "SIGINT received: stopping the feature-cache fill" in err and "saving" not in err
    assert "stopped by SIGINT while filling the feature cache (1 of 6 items done)" in err
    assert not (tmp_path / "ckpt" / "last.ckpt").exists()
    monkeypatch.setattr(FeatureCache, "compute", compute)
    assert step_of(train(cfg, backbone=backbone, **QUIET)) == 2  # the rerun goes on from the cached image
