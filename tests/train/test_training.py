"""Training end to end on the tiny backbone: checkpoints, resume, kills, atomic saves, the cache."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from hyperfeat.config import load_config
from hyperfeat.errors import DataError
from hyperfeat.train.trainer import AtomicCheckpointIO, train
from tests.helpers import TINY_OVERRIDES

# 64-pixel images, 16×16 maps, 4 procedural images (3 train, 1 val) × 2 warps
SMALL = TINY_OVERRIDES + [
    "features.load_size=64",
    "features.image_size=64",
    "features.output_resolution=16",
    "features.batch_size=8",
    "aggregation.projection_dim=32",
    "aggregation.num_norm_groups=8",
    "train.pairs_per_step=2",
    "train.val_every_n_steps=2",
    "train.val_max_pairs=2",
    "eval.batch_size=2",
    "train.accelerator=cpu",
    "train.devices=1",
    "train.num_workers=0",
    "train.log_every_n_steps=1",
    "logger.backend=none",
]
SYNTHETIC = [
    "data=synthetic",
    "data.root=generated",
    "data.generated_images=4",
    "data.generated_size=64",
    "data.pairs_per_image=2",
    "data.num_points=16",
]
QUIET = dict(enable_progress_bar=False)


@pytest.fixture(scope="module")
def backbone(tiny_backbone):
    return tiny_backbone  # the random tiny model does not depend on the feature sizes


def small_cfg(tmp_path: Path, *extra: str, data: tuple[str, ...] = tuple(SYNTHETIC)):
    return load_config(
        overrides=SMALL
        + list(data)
        + [f"paths.output_dir={tmp_path}/out", f"paths.checkpoint_dir={tmp_path}/ckpt", *extra]
    )


def aggregation_state(ckpt: dict) -> dict[str, torch.Tensor]:
    return {k: v for k, v in ckpt["state_dict"].items() if k.startswith("aggregation.")}


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


class Recorder(Callback):
    """What training saw: the step and weights at its start, the keys of each batch."""

    def __init__(self):
        self.start_step = None
        self.start_weights = None
        self.start_optimizer = None
        self.batch_keys: list[set[str]] = []
        self.cache_stats = {}

    def on_train_start(self, trainer, pl_module):
        self.start_step = trainer.global_step
        weights = pl_module.aggregation.state_dict()
        self.start_weights = {f"aggregation.{k}": v.detach().clone() for k, v in weights.items()}
        self.start_optimizer = copy.deepcopy(trainer.optimizers[0].state_dict())  # its tensors change in place

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batch_keys.append(set(batch))

    def on_train_end(self, trainer, pl_module):
        cached = trainer.datamodule.loader_datasets
        self.cache_stats = {split: copy.copy(d.cache.stats) for split, d in cached.items() if hasattr(d, "cache")}


class Killer(Callback):
    """Dies after optimiser step ``at``, as a crash or kill in the middle of training would."""

    def __init__(self, at: int):
        self.at = at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.at:
            raise RuntimeError(f"simulated kill at step {self.at}")


def test_cached_training_writes_loadable_checkpoints(tmp_path, backbone):
    from hyperfeat.api import Hyperfeatures
    from hyperfeat.train.cache import FeatureCache

    cfg = small_cfg(tmp_path, "train.max_steps=3", "train.cache_features=true")
    rec = Recorder()
    last = train(cfg, callbacks=[rec], backbone=backbone, **QUIET)

    assert last == tmp_path / "ckpt" / "last.ckpt" and last.is_file()
    best = sorted((tmp_path / "ckpt").glob("best-*.ckpt"))
    assert [p.name for p in best] == ["best-2.ckpt"], "one validation (step 2): one best checkpoint"
    assert load(last)["global_step"] == 3, "last.ckpt holds the final step, not only the last validation"

    # every training batch came from the cache
    assert rec.batch_keys and all({"source_raw", "target_raw"} <= k for k in rec.batch_keys)
    assert not any("source_image" in k for k in rec.batch_keys)
    cache = FeatureCache(cfg.train.cache_dir, cfg)
    entries = list(cache.dir.rglob("*.pt"))
    # train: 3 images + 6 warped targets; val: 1 image + 2 warped targets (val_max_pairs=2)
    assert len(entries) == 3 + 6 + 1 + 2, sorted(p.name for p in entries)
    assert (cache.dir / "config.json").is_file()
    # item i is the same pair on every read: training only hits what precompute stored
    train_stats = rec.cache_stats["train"]
    assert (train_stats.misses, train_stats.recomputed) == (3 + 6, 0) and train_stats.hits >= 2 * 2 * 3

    hf = Hyperfeatures.from_checkpoint(last, backbone=backbone)
    torch.testing.assert_close(
        {f"aggregation.{k}": v for k, v in hf.network.state_dict().items()}, aggregation_state(load(last))
    )
    desc = hf.describe(torch.rand(1, 3, 64, 64))
    assert desc.shape == (1, 32, 16, 16) and torch.isfinite(desc).all()
    assert Hyperfeatures.from_checkpoint(best[0], backbone=backbone).network is not None


def test_kill_then_resume_then_extend(tmp_path, backbone):
    """A run killed at step 3 leaves last.ckpt of step 2 (its last validation); resuming starts
    there with the saved weights and optimiser state; a finished run extends with more steps."""
    killed = small_cfg(tmp_path, "train.max_steps=4")
    with pytest.raises(RuntimeError, match="simulated kill at step 3"):
        train(killed, callbacks=[Killer(at=3)], backbone=backbone, **QUIET)
    last = tmp_path / "ckpt" / "last.ckpt"
    saved = load(last)  # a whole, readable checkpoint
    assert saved["global_step"] == 2
    assert not list((tmp_path / "ckpt").glob("*.tmp")), "no half-written temporary file is left"

    rec = Recorder()
    train(killed, callbacks=[rec], backbone=backbone, **QUIET)
    assert rec.start_step == 2, "resumed from the last checkpoint"
    torch.testing.assert_close(rec.start_weights, aggregation_state(saved))
    restored = rec.start_optimizer["state"]
    assert restored and restored.keys() == saved["optimizer_states"][0]["state"].keys()
    for key, state in restored.items():
        assert int(state["step"]) == 2
        torch.testing.assert_close(state["exp_avg"], saved["optimizer_states"][0]["state"][key]["exp_avg"])
    finished = load(last)
    assert finished["global_step"] == 4

    rec = Recorder()
    train(small_cfg(tmp_path, "train.max_steps=6"), callbacks=[rec], backbone=backbone, **QUIET)
    assert rec.start_step == 4, "a finished run resumes at its last step when max_steps grows"
    torch.testing.assert_close(rec.start_weights, aggregation_state(finished))
    assert load(last)["global_step"] == 6

    fresh = Recorder()
    train(small_cfg(tmp_path, "train.max_steps=1", "train.resume=false"), callbacks=[fresh], backbone=backbone, **QUIET)
    assert fresh.start_step == 0 and load(last)["global_step"] == 1, "resume=false starts over"
    assert not list((tmp_path / "ckpt").glob("last-v*.ckpt"))


def test_failed_checkpoint_write_keeps_the_old_file(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "state_dict": {"w": torch.ones(3)}}, path)
    before = path.read_bytes()

    def dies_halfway(obj, f, *args, **kwargs):
        with open(f, "wb") as handle:
            handle.write(before[: len(before) // 2])
        raise OSError("disk full")

    monkeypatch.setattr("hyperfeat.io.torch.save", dies_halfway)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"global_step": 2, "state_dict": {"w": torch.zeros(3)}}, path)
    assert path.read_bytes() == before
    assert load(path)["global_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"], "no temporary file is left"


def test_empty_train_split_is_a_clear_data_error(tmp_path, backbone):
    root = tmp_path / "spair"
    (root / "annotations").mkdir(parents=True)
    (root / "images").mkdir()
    (root / "annotations" / "empty.json").write_text(json.dumps([]))
    cfg = small_cfg(
        tmp_path,
        "train.max_steps=1",
        data=(
            "data=spair",
            f"data.root={root}",
            "data.train_split=annotations/empty.json",
            "data.val_split=annotations/empty.json",
        ),
    )
    with pytest.raises(DataError) as err:
        train(cfg, backbone=backbone, **QUIET)
    message = str(err.value)
    assert message.startswith("train split (data.train_split='annotations/empty.json') of data set 'spair'"), message
    assert "lists no pairs" in message and str(root) in message
    assert not (tmp_path / "ckpt" / "last.ckpt").exists()


def test_wandb_offline_logger(tmp_path, backbone, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = small_cfg(
        tmp_path, "train.max_steps=2", "logger.backend=wandb", "logger.wandb_mode=offline", "train.cache_features=true"
    )
    train(cfg, backbone=backbone, **QUIET)
    runs = list((tmp_path / "out" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb")), "an offline run to sync later"
    assert (tmp_path / "ckpt" / "last.ckpt").is_file()


def test_datamodule_without_a_trainer(tmp_path, backbone):
    """setup() may run with no trainer module attached: the cache waits for the loaders, which use
    the extractor given to the data module, or read images (with a warning) when there is none."""
    from hyperfeat.model.features import FeatureExtractor
    from hyperfeat.train.datamodule import PairDataModule

    cfg = small_cfg(tmp_path, "train.cache_features=true")
    plain = PairDataModule(cfg)
    plain.setup("fit")
    assert not plain.cache_stats
    with pytest.warns(UserWarning, match="read uncached"):
        batch = next(iter(plain.train_dataloader()))
    assert "source_image" in batch and "source_raw" not in batch

    data = PairDataModule(cfg, extractor=FeatureExtractor(backbone, cfg.features))
    data.setup("fit")
    assert data.cache_stats["train"].misses == 3 + 6 and data.cache_stats["val"].misses == 1 + 2
    batch = next(iter(data.val_dataloader()))
    assert batch["source_raw"].shape == (2, 3, sum(data.loader_dataset("val").extractor.channels), 16, 16)
