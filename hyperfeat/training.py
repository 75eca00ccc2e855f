"""``python train.py``: the Lightning Trainer around HyperfeatModule and PairDataModule."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig

from hyperfeat.checkpoint import atomic_save
from hyperfeat.errors import ConfigError

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
        return WandbLogger(project=str(cfg.logger.project), name=cfg.logger.run_name, save_dir=str(save_dir),
                           offline=mode == "offline", mode=mode)
    if backend == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=str(save_dir), name=str(cfg.logger.project))
    if backend == "none":
        return False
    raise ConfigError(f"logger.backend must be wandb, csv or none; got {backend!r}")


def build_trainer(cfg: DictConfig, **overrides) -> tuple[L.Trainer, ModelCheckpoint]:
    ckpt_dir = Path(cfg.paths.checkpoint_dir)
    checkpoint = ModelCheckpoint(dirpath=str(ckpt_dir), filename="best-{step}", monitor=MONITOR, mode="max",
                                 save_last=True, save_top_k=1, auto_insert_metric_name=False)
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
        callbacks=[checkpoint, TQDMProgressBar(refresh_rate=1)],
        plugins=[AtomicCheckpointIO()],
        num_sanity_val_steps=0,
        enable_model_summary=False,
    )
    kwargs.update(overrides)
    return L.Trainer(**kwargs), checkpoint


def train(cfg: DictConfig, **trainer_overrides) -> Path:
    """Train; returns the path of ``last.ckpt``. Resumes from it when ``train.resume`` and it exists."""
    from hyperfeat.data.datamodule import PairDataModule
    from hyperfeat.module import HyperfeatModule

    L.seed_everything(int(cfg.train.seed), workers=True)
    module = HyperfeatModule(cfg)
    data = PairDataModule(cfg)
    trainer, checkpoint = build_trainer(cfg, **trainer_overrides)
    last = Path(cfg.paths.checkpoint_dir) / "last.ckpt"
    resume = str(last) if bool(cfg.train.resume) and last.is_file() else None
    if resume:
        print(f"resuming from {resume}")
    trainer.fit(module, datamodule=data, ckpt_path=resume)
    if not last.is_file():  # e.g. max_steps reached before a validation
        trainer.save_checkpoint(str(last))
    if checkpoint.best_model_path:
        print(f"best checkpoint: {checkpoint.best_model_path} ({MONITOR} = {float(checkpoint.best_model_score):.4f})")
    print(f"last checkpoint: {last}")
    return last
