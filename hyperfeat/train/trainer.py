"""``python train.py``: the Lightning Trainer around HyperfeatModule and PairDataModule."""

from __future__ import annotations

import os
import signal
import sys
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from hyperfeat.errors import (
    CheckpointError,
    ConfigError,
    NumericsError,
    TrainingInterrupted,
)
from hyperfeat.io import atomic_save, safe_torch_load
from hyperfeat.model.checkpoint import check_identity, non_finite
from hyperfeat.train.cache import FillInterrupted

MONITOR = "val/pck@0.1"


def save_full_checkpoint(trainer, path: Path) -> None:
    """Save everything a resume needs (optimizer, loops, callbacks: Lightning's full checkpoint,
    said explicitly so that it does not log its "weights_only was not set" notice, which reads as
    if something were loaded unsafely). Loading always goes through ``safe_torch_load``."""
    trainer.save_checkpoint(str(path), weights_only=False)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints go to a temporary file first and are renamed into place: a kill mid-write
    leaves the previous checkpoint intact."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        bad = non_finite(checkpoint.get("state_dict", {}))
        if bad:
            raise NumericsError(
                f"step {checkpoint.get('global_step')}: not writing {path}: weights {bad[:3]} hold NaN/inf"
            )
        atomic_save(checkpoint, path)

    def load_checkpoint(self, path, map_location: Any = None, weights_only: Optional[bool] = None) -> dict[str, Any]:
        """Resume reads go through the safe loader too (tensors and plain containers only)."""
        return safe_torch_load(path, "checkpoint", CheckpointError)


class FolderCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that follows its folder: resumed from a checkpoint folder that was moved or
    renamed, it restores the best score and paths rebased into the folder it now writes to (the
    files moved with it), where Lightning keeps the old best path but drops its score."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("dirpath")
        if saved is None or self.dirpath is None or Path(saved) == Path(self.dirpath):
            return super().load_state_dict(state_dict)

        def here(path: Any) -> str:
            moved = Path(self.dirpath) / Path(str(path)).name if path else None
            return str(moved) if moved is not None and moved.is_file() else ""

        best = here(state_dict.get("best_model_path"))
        kept = {here(k): v for k, v in (state_dict.get("best_k_models") or {}).items() if here(k)}
        super().load_state_dict(
            {
                **state_dict,
                "dirpath": self.dirpath,
                "best_model_path": best,
                "best_model_score": state_dict.get("best_model_score") if best else None,
                "kth_best_model_path": here(state_dict.get("kth_best_model_path")),
                "best_k_models": kept,
                "last_model_path": here(state_dict.get("last_model_path")),
            }
        )


class FiniteGuard(Callback):
    """Stops training at the first NaN/inf, naming the step and where it came from: the batch's
    cached raw maps (before the step), the loss or the weights (after it). Listed before the
    checkpoint callbacks, so a non-finite state is never written."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        for side in ("source", "target"):
            raw = batch.get(f"{side}_raw") if isinstance(batch, dict) else None
            if torch.is_tensor(raw) and not bool(torch.isfinite(raw).all()):
                where = getattr(trainer.datamodule, "cfg", None)
                folder = (
                    f" (feature cache {where.train.cache_dir}: delete it to recompute)" if where is not None else ""
                )
                raise NumericsError(
                    f"step {trainer.global_step}: the cached raw maps of the {side} images of batch "
                    f"{batch_idx} hold NaN/inf{folder}; nothing was trained on them"
                )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if torch.is_tensor(loss) and not bool(torch.isfinite(loss).all()):
            raise NumericsError(
                f"step {trainer.global_step}: the training loss is {float(loss)}; stopping "
                f"without writing a checkpoint (lower train.lr, or check the inputs)"
            )
        bad = non_finite(dict(pl_module.aggregation.named_parameters()))
        if bad:
            raise NumericsError(
                f"step {trainer.global_step}: weights {bad[:3]} hold NaN/inf after the optimiser "
                f"step; stopping without writing a checkpoint"
            )


class CheckpointPolicy(Callback):
    """``last.ckpt`` every ``every`` optimiser steps, and at the end of the step during which
    SIGINT or SIGTERM arrived (then training stops; a second signal stops at once)."""

    def __init__(self, last: Path, every: int):
        self.last = last
        self.every = int(every)
        self.signum: Optional[int] = None
        self.saved_step: Optional[int] = None
        self.started = False  # a training step has begun (before: loading, the cache fill)

    @property
    def stop_requested(self) -> bool:
        """A signal came: what runs before the first step (the feature-cache fill) stops too."""
        return self.signum is not None

    def on_train_start(self, trainer, pl_module) -> None:
        self.started = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if trainer.max_steps > 0 and step >= trainer.max_steps:
            return  # the final step: train() writes last.ckpt after fit, as a finished run's state
        if self.signum is not None or (self.every > 0 and step % self.every == 0):
            save_full_checkpoint(trainer, self.last)
            self.saved_step = step
        if self.signum is not None:
            trainer.should_stop = True
            # Lightning validates whenever should_stop is set; an uninterrupted run validates only
            # on its schedule, so the stop step validates only when it is a scheduled one (else the
            # resumed run's best-*.ckpt would differ from an uninterrupted run's)
            interval = trainer.val_check_batch
            scheduled = isinstance(interval, int) and (trainer.fit_loop.epoch_loop.total_batch_idx + 1) % interval == 0
            if not scheduled:
                trainer.limit_val_batches = 0

    @contextmanager
    def signals(self):
        """Install the SIGINT/SIGTERM handlers for the duration of the block (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self.signum is not None:  # second signal: stop now
                signal.signal(signum, signal.SIG_DFL)
                raise KeyboardInterrupt
            self.signum = signum
            doing = f"saving {self.last} after this step" if self.started else "stopping the feature-cache fill"
            print(
                f"\n{signal.Signals(signum).name} received: {doing}, then stopping (send it again to stop at once)",
                file=sys.stderr,
                flush=True,
            )

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


@contextmanager
def folder_lock(folder: Path):
    """An exclusive lock on ``folder/train.lock`` for one training at a time; the OS drops it when
    the process ends, however it ends, so a killed run never leaves a stale lock."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "train.lock"
    try:
        import fcntl
    except ImportError:  # no flock (Windows): no lock
        yield
        return
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        owner = handle.read().strip() or "?"
        handle.close()
        raise CheckpointError(
            f"checkpoint folder {folder} is in use by another training (pid {owner}, lock "
            f"{path}); wait for it to end or give another paths.checkpoint_dir"
        ) from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def make_logger(cfg: DictConfig, resume: bool = False):
    backend = str(cfg.logger.backend)
    save_dir = Path(cfg.paths.output_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    if backend == "wandb":
        from lightning.pytorch.loggers import WandbLogger

        mode = str(cfg.logger.wandb_mode)
        if mode not in ("offline", "online", "disabled"):
            raise ConfigError(f"logger.wandb_mode must be offline, online or disabled; got {mode!r}")
        os.environ.setdefault("WANDB_SILENT", "true")
        # a resumed run logs into the same wandb run: its id is kept beside the checkpoints
        id_file = Path(cfg.paths.checkpoint_dir) / "wandb_run_id"
        run_id = id_file.read_text().strip() if resume and id_file.is_file() else None
        if run_id is None and _launching_process():
            import uuid

            run_id = uuid.uuid4().hex[:12]
            id_file.parent.mkdir(parents=True, exist_ok=True)
            id_file.write_text(run_id)
        logger = WandbLogger(
            project=str(cfg.logger.project),
            name=cfg.logger.run_name,
            save_dir=str(save_dir),
            offline=mode == "offline",
            mode=mode,
            id=run_id,
            resume="allow",
        )
        init = getattr(logger, "_wandb_init", None)
        if isinstance(init, dict) and init.get("anonymous") is None:
            init.pop("anonymous", None)  # WandbLogger passes anonymous=None, which wandb warns about
        return logger
    if backend == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=str(save_dir), name=str(cfg.logger.project))
    if backend == "none":
        return False
    raise ConfigError(f"logger.backend must be wandb, csv or none; got {backend!r}")


def build_trainer(
    cfg: DictConfig, callbacks: Sequence[Callback] = (), resume: bool = False, **overrides
) -> tuple[L.Trainer, ModelCheckpoint]:
    """The Trainer of ``cfg.train`` with the checkpoint callback (``best-{step}.ckpt`` by
    ``val/pck@0.1``, and ``last.ckpt``); ``callbacks`` are added to it, ``overrides`` replace
    Trainer arguments."""
    ckpt_dir = Path(cfg.paths.checkpoint_dir)
    # no version counter: a fresh run (train.resume=false) overwrites last.ckpt instead of
    # writing last-v1.ckpt beside a stale last.ckpt
    monitor = str(cfg.train.get("monitor") or MONITOR)  # a loss is minimised, a score maximised
    checkpoint = FolderCheckpoint(
        dirpath=str(ckpt_dir),
        filename="best-{step}",
        monitor=monitor,
        mode="min" if monitor.endswith("loss") else "max",
        save_last=True,
        save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    bar = [TQDMProgressBar(refresh_rate=1)] if overrides.get("enable_progress_bar", True) else []
    t = cfg.train
    kwargs = dict(
        max_steps=int(t.max_steps),
        val_check_interval=int(t.val_every_n_steps),
        check_val_every_n_epoch=None,
        accelerator=str(t.accelerator),
        devices=t.devices if str(t.devices) == "auto" else t.devices,
        num_nodes=int(t.num_nodes),
        strategy=str(t.strategy),
        precision=str(t.precision),
        log_every_n_steps=int(t.log_every_n_steps),
        logger=make_logger(cfg, resume),
        callbacks=[FiniteGuard(), *callbacks, checkpoint, *bar],
        plugins=[AtomicCheckpointIO()],
        num_sanity_val_steps=0,
        enable_model_summary=False,
    )
    kwargs.update(overrides)
    return L.Trainer(**kwargs), checkpoint


def check_resume(cfg: DictConfig, last: Path) -> None:
    """Refuse to resume ``last`` under a config whose identity differs from the one it was made with."""
    ckpt = safe_torch_load(last, "checkpoint", CheckpointError)
    saved = ckpt.get("hyperfeat", {}).get("config") if isinstance(ckpt.get("hyperfeat"), dict) else None
    if not isinstance(saved, dict):
        raise CheckpointError(
            f"{last} has no hyperfeat config to check a resume against; start a fresh run with "
            f"train.resume=false (overwrites it) or another paths.checkpoint_dir"
        )
    from hyperfeat.config import check_no_interpolation

    check_no_interpolation(saved, str(last))
    hint = (
        f"resuming would mix two runs under one label: start a fresh run with another paths.checkpoint_dir "
        f"(or train.resume=false, which overwrites {last.name}), or restore the old values"
    )
    check_identity(saved, cfg, str(last), hint)


def train(cfg: DictConfig, callbacks: Sequence[Callback] = (), backbone: Any = None, **trainer_overrides) -> Path:
    """Train; returns the path of ``last.ckpt``. Resumes from it when ``train.resume`` and it exists.

    ``last.ckpt`` is written every ``train.checkpoint_every_n_steps`` steps, at every validation,
    at the end, and at the end of the step during which SIGINT/SIGTERM arrived (then
    :class:`TrainingInterrupted` is raised). A resume is refused when the config's identity
    (:func:`hyperfeat.model.checkpoint.check_identity`) differs from the checkpoint's. One training
    at a time per checkpoint folder (a lock file). NaN/inf in cached maps, the loss or the weights
    stop training with a :class:`NumericsError` and are never written. Several devices or nodes
    (``train.devices``, ``train.num_nodes``, ``train.strategy=ddp``): launch as usual (Lightning
    starts the other local processes) or with torchrun/SLURM; see :mod:`hyperfeat.train.datamodule`
    for how the feature cache is shared. ``backbone``: an already loaded
    :class:`hyperfeat.model.backbone.Backbone` for ``cfg`` (default: loaded from ``cfg.backbone``).
    """
    from hyperfeat.quiet import quiet_third_party
    from hyperfeat.train.datamodule import PairDataModule
    from hyperfeat.train.module import module_class

    ckpt_dir = Path(cfg.paths.checkpoint_dir)
    last = ckpt_dir / "last.ckpt"
    with folder_lock(ckpt_dir) if _launching_process() else _nothing():
        if _launching_process():
            for stale in ckpt_dir.glob(".*.tmp"):  # left by a kill during a write: never a checkpoint
                stale.unlink(missing_ok=True)
        resume = str(last) if bool(cfg.train.resume) and last.is_file() else None
        if resume:
            check_resume(cfg, last)  # before anything is built or written
        quiet_third_party()
        L.seed_everything(int(cfg.train.seed), workers=True)
        policy = CheckpointPolicy(last, int(cfg.train.checkpoint_every_n_steps or 0))
        trainer, checkpoint = build_trainer(
            cfg, callbacks=[*callbacks, policy], resume=bool(resume), **trainer_overrides
        )
        root = trainer.strategy.root_device
        if root.type == "cuda" and str(cfg.backbone.device) in ("auto", "cuda"):
            torch.cuda.set_device(root)  # the backbone loads on this process's GPU, not on GPU 0 in every process
        module = module_class(cfg).from_config(cfg, backbone=backbone)
        data = PairDataModule(cfg)
        if trainer.is_global_zero:
            if resume:
                print(f"resuming from {resume}")
            elif last.is_file():
                print(f"train.resume is false: training from scratch; {last} will be overwritten")
        with warnings.catch_warnings(), policy.signals():
            # expected: the folder holds the lock (and last.ckpt when resuming)
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
            try:
                trainer.fit(module, datamodule=data, ckpt_path=resume)
            except SIGTERMException:  # Lightning's own SIGTERM stop, after our handler saw the signal
                if policy.signum is None:
                    raise
            except FillInterrupted as stop:  # before any step: nothing to save but the cached images
                name = signal.Signals(policy.signum or signal.SIGINT).name
                message = (
                    f"stopped by {name} while filling the feature cache ({stop}); the images cached so far "
                    f"are kept: run the same command again to go on"
                )
                if trainer.is_global_zero:
                    print(message, file=sys.stderr)
                raise TrainingInterrupted(message, policy.signum or signal.SIGINT) from None
            if policy.signum is not None and policy.saved_step != trainer.global_step:
                save_full_checkpoint(trainer, last)  # the signal came after the step's save point
                policy.saved_step = trainer.global_step
            if not trainer.interrupted and (policy.signum is None or policy.saved_step != trainer.global_step):
                # make last.ckpt hold the final step, saved after fit: a rerun finds the run finished
                save_full_checkpoint(trainer, last)
        finished = trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps
        if policy.signum is not None and finished:  # the signal came during the last step: nothing is left to do
            if trainer.is_global_zero:
                print(
                    f"{signal.Signals(policy.signum).name} came during the last step: the run finished; "
                    f"{last} holds step {trainer.global_step}",
                    file=sys.stderr,
                )
        elif policy.signum is not None:
            name = signal.Signals(policy.signum).name
            message = (
                f"stopped by {name} at step {trainer.global_step}; {last} holds that step: run the same "
                f"command again to resume"
            )
            if trainer.is_global_zero:
                print(message, file=sys.stderr)
            raise TrainingInterrupted(message, policy.signum)
        if trainer.is_global_zero:
            if checkpoint.best_model_path:
                score = float(checkpoint.best_model_score)
                print(f"best checkpoint: {checkpoint.best_model_path} ({checkpoint.monitor} = {score:.4f})")
            print(f"last checkpoint: {last}")
            folder = logger_folder(trainer.logger)
            if folder is not None:
                print(folder)
        _finish_wandb(trainer.logger)
    return last


def _finish_wandb(logger) -> None:
    """Close the wandb run, so that a second ``train`` in the same process starts its own."""
    try:
        from lightning.pytorch.loggers import WandbLogger
    except ImportError:
        return
    if isinstance(logger, WandbLogger):
        import wandb

        if wandb.run is not None:
            wandb.finish()


def logger_folder(logger) -> Optional[str]:
    """A line naming where the run's logs are (the wandb run folder and how to upload it)."""
    if logger is None or logger is False:
        return None
    try:
        from lightning.pytorch.loggers import CSVLogger, WandbLogger

        if isinstance(logger, WandbLogger):
            run = logger.experiment
            folder = Path(run.dir).parent if getattr(run, "dir", None) else None
            if folder is None:
                return None
            offline = getattr(getattr(run, "settings", None), "mode", "") == "offline" or "offline-run" in folder.name
            return f"wandb run: {folder}" + (f" (upload with `wandb sync {folder}`)" if offline else "")
        if isinstance(logger, CSVLogger):
            return f"csv log: {logger.log_dir}"
    except Exception:  # a log folder is worth a line, never a crash at the end of training
        return None
    return None


def _launching_process() -> bool:
    """True in the process that owns the run (not in the other DDP ranks Lightning or torchrun start)."""
    return all(int(os.environ.get(k, "0") or 0) == 0 for k in ("LOCAL_RANK", "NODE_RANK", "RANK"))


@contextmanager
def _nothing():
    yield
