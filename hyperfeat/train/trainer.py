"""``python train.py``: the Lightning Trainer around HyperfeatModule and PairDataModule."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig

from hyperfeat.errors import ConfigError
from hyperfeat.io import atomic_save

MONITOR = "val/pck@0.1"




class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints go to a temporary file first and are renamed into place: a kill mid-write
    leaves the previous checkpoint intact."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        atomic_save(checkpoint, path)




def make_logger(cfg: DictConfig):
    backend = str(cfg.logger.backend)
    save_dir = Path(cfg.paths.output_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    if backend == "wandb":
        from lightning.pytorch.loggers import WandbLogger

        mode = str(cfg.logger.wandb_mode)
        if mode not in ("offline", "online", "disabled"):
            raise ConfigError(f"logger.wandb_mode must be offline, online or disabled; got {mode!r}")
        os.environ.setdefault("WANDB_SILENT", "true")
        logger = WandbLogger(project=str(cfg.logger.project), name=cfg.logger.run_name, save_dir=str(save_dir),
                             offline=mode == "offline", mode=mode)
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




def build_trainer(cfg: DictConfig, callbacks: Sequence[Callback] = (),
                  **overrides) -> tuple[L.Trainer, ModelCheckpoint]:
    """The Trainer of ``cfg.train`` with the checkpoint callback (``best-{step}.ckpt`` by
    ``val/pck@0.1``, and ``last.ckpt``); ``callbacks`` are added to it, ``overrides`` replace
    Trainer arguments."""
    ckpt_dir = Path(cfg.paths.checkpoint_dir)
    # no version counter: a fresh run (train.resume=false) overwrites last.ckpt instead of
    # writing last-v1.ckpt beside a stale last.ckpt
    checkpoint = ModelCheckpoint(dirpath=str(ckpt_dir), filename="best-{step}", monitor=MONITOR, mode="max",
                                 save_last=True, save_top_k=1, auto_insert_metric_name=False,
                                 enable_version_counter=False)
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
        logger=make_logger(cfg),
        callbacks=[checkpoint, *bar, *callbacks],
        plugins=[AtomicCheckpointIO()],
        num_sanity_val_steps=0,
        enable_model_summary=False,
    )
    kwargs.update(overrides)
    return L.Trainer(**kwargs), checkpoint




def train(cfg: DictConfig, callbacks: Sequence[Callback] = (), backbone: Any = None, **trainer_overrides) -> Path:
    """Train; returns the path of ``last.ckpt``. Resumes from it when ``train.resume`` and it exists.

    ``last.ckpt`` is written at every validation and at the end (the final step); a run killed
    in between resumes from the last validation. Several devices or nodes
    (``train.devices``, ``train.num_nodes``, ``train.strategy=ddp``): launch as usual (Lightning
    starts the other local processes) or with torchrun/SLURM; see :mod:`hyperfeat.data.datamodule`
    for how the feature cache is shared. ``backbone``: an already loaded
    :class:`hyperfeat.backbone.Backbone` for ``cfg`` (default: loaded from ``cfg.backbone``).
    """
    from hyperfeat.quiet import quiet_third_party
    from hyperfeat.train.datamodule import PairDataModule
    from hyperfeat.train.module import HyperfeatModule

    quiet_third_party()
    L.seed_everything(int(cfg.train.seed), workers=True)
    trainer, checkpoint = build_trainer(cfg, callbacks=callbacks, **trainer_overrides)
    root = trainer.strategy.root_device
    if root.type == "cuda" and str(cfg.backbone.device) in ("auto", "cuda"):
        torch.cuda.set_device(root)  # the backbone loads on this process's GPU, not on GPU 0 in every process
    module = HyperfeatModule(cfg, backbone=backbone)
    data = PairDataModule(cfg)
    last = Path(cfg.paths.checkpoint_dir) / "last.ckpt"
    resume = str(last) if bool(cfg.train.resume) and last.is_file() else None
    if trainer.is_global_zero:
        if resume:
            print(f"resuming from {resume}")
        elif last.is_file():
            print(f"train.resume is false: training from scratch; {last} will be overwritten")
    with warnings.catch_warnings():
        ckpt_dir = Path(cfg.paths.checkpoint_dir)
        if resume or not any(ckpt_dir.glob("*.ckpt")):  # expected when resuming; a fresh clone has only .gitkeep
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        trainer.fit(module, datamodule=data, ckpt_path=resume)
    if not trainer.interrupted:
        # Lightning writes last.ckpt at validations only: make it hold the final step
        trainer.save_checkpoint(str(last), weights_only=False)
    if trainer.is_global_zero:
        if checkpoint.best_model_path:
            score = float(checkpoint.best_model_score)
            print(f"best checkpoint: {checkpoint.best_model_path} ({MONITOR} = {score:.4f})")
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
