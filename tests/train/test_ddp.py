"""Two-process DDP training on the CPU (gloo), launched the way users launch it.

The test runs this file as a script; ``train(cfg)`` with ``train.devices=2 train.strategy=ddp``
makes Lightning start the second process (it re-runs the script with ``LOCAL_RANK=1``), exactly
as ``python train.py train.devices=2 train.strategy=ddp`` does. Each rank writes what it saw to
``<out>/rank<r>.pt``: the training pairs it read, the cache entries it computed, its
aggregation weights at the start and the end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve()
REPO = HERE.parents[2]
WORLD = 2

# 8 procedural images: 6 train, 2 val (even counts, so no image is shared by the ranks'
# precompute shares), 2 warps each: 12 train pairs = one epoch of 3 steps × 2 pairs × 2 ranks
OVERRIDES = [
    "backbone=tiny",
    "features.num_steps=5",
    "features.save_steps=[4,2,0]",
    "features.load_size=64",
    "features.image_size=64",
    "features.output_resolution=16",
    "features.batch_size=8",
    "aggregation.projection_dim=32",
    "aggregation.num_norm_groups=8",
    "data=synthetic",
    "data.root=generated",
    "data.generated_images=8",
    "data.generated_size=64",
    "data.val_fraction=0.25",
    "data.pairs_per_image=2",
    "data.num_points=16",
    "train.pairs_per_step=2",
    "train.max_steps=3",
    "train.val_every_n_steps=3",
    "train.val_max_pairs=4",
    "eval.batch_size=2",
    "train.lr=0.01",
    "train.accelerator=cpu",
    f"train.devices={WORLD}",
    "train.strategy=ddp",
    "train.num_workers=0",
    "train.cache_features=true",
    "logger.backend=none",
]
TRAIN_PAIRS = 12


def worker(out: Path) -> None:
    """One rank (both run this): train with recording callbacks."""
    from lightning.pytorch.callbacks import Callback

    import hyperfeat.train.cache as cache_module
    from hyperfeat.config import load_config
    from hyperfeat.train.trainer import train

    computed: list[str] = []
    compute = cache_module.FeatureCache.compute

    def recording_compute(self, images, keys, extractor):
        computed.extend(keys)
        return compute(self, images, keys, extractor)

    cache_module.FeatureCache.compute = recording_compute

    class Record(Callback):
        def __init__(self):
            self.pair_ids: list[str] = []
            self.start = None

        def on_train_start(self, trainer, pl_module):
            self.start = {k: v.detach().clone() for k, v in pl_module.aggregation.state_dict().items()}

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            assert "source_raw" in batch and "source_image" not in batch
            self.pair_ids.extend(batch["pair_id"])

        def on_train_end(self, trainer, pl_module):
            end = {k: v.detach().clone() for k, v in pl_module.aggregation.state_dict().items()}
            torch.save(
                {
                    "rank": trainer.global_rank,
                    "world_size": trainer.world_size,
                    "pair_ids": self.pair_ids,
                    "computed": list(computed),
                    "start": self.start,
                    "end": end,
                    "global_step": trainer.global_step,
                },
                out / f"rank{trainer.global_rank}.pt",
            )

    cfg = load_config(overrides=OVERRIDES + [f"paths.output_dir={out}/out", f"paths.checkpoint_dir={out}/ckpt"])
    train(cfg, callbacks=[Record()], enable_progress_bar=False)


def _ddp_unavailable() -> str:
    if not torch.distributed.is_available():
        return "torch.distributed is not available in this torch build"
    if not torch.distributed.is_gloo_available():
        return "the gloo backend of torch.distributed is not available in this torch build"
    return ""


@pytest.mark.skipif(bool(_ddp_unavailable()), reason=_ddp_unavailable() or "ddp available")
def test_two_process_ddp_shards_data_and_cache_and_syncs_gradients(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "LOCAL_RANK",
            "RANK",
            "WORLD_SIZE",
            "NODE_RANK",
            "GROUP_RANK",
            "MASTER_ADDR",
            "MASTER_PORT",
            "TORCHELASTIC_RUN_ID",
            "SLURM_JOB_ID",
            "SLURM_NTASKS",
        )
    }
    env.update(
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        OMP_NUM_THREADS="1",
        WANDB_MODE="offline",
        HF_HUB_OFFLINE="1",
        MASTER_ADDR="127.0.0.1",
    )
    began = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(HERE), str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=240
    )
    took = time.monotonic() - began
    log = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, log
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    assert [r["world_size"] for r in ranks] == [WORLD] * WORLD and [r["global_step"] for r in ranks] == [3, 3]

    # (i) sharding: each rank trained on its own half of the pairs
    seen = [set(r["pair_ids"]) for r in ranks]
    assert all(len(r["pair_ids"]) == TRAIN_PAIRS // WORLD for r in ranks), [r["pair_ids"] for r in ranks]
    assert not seen[0] & seen[1], "the ranks read the same pairs"
    assert len(seen[0] | seen[1]) == TRAIN_PAIRS

    # ... and each computed its own share of the cache, which together is the whole cache
    computed = [set(r["computed"]) for r in ranks]
    assert computed[0] and computed[1] and not computed[0] & computed[1], "precompute was not split between ranks"
    entries = {p.stem for p in (tmp_path / "out" / "feature_cache").rglob("*.pt")}
    assert computed[0] | computed[1] == entries
    assert len(entries) == 6 + TRAIN_PAIRS + 2 + 4, "train images + warps, val images + warps"

    # (ii) gradient sync: identical weights on both ranks, moved away from the (shared) start
    for name, start in ranks[0]["start"].items():
        torch.testing.assert_close(ranks[1]["start"][name], start, rtol=0, atol=0)
        torch.testing.assert_close(ranks[1]["end"][name], ranks[0]["end"][name], rtol=0, atol=0)
    moved = [n for n in ranks[0]["start"] if not torch.equal(ranks[0]["start"][n], ranks[0]["end"][n])]
    assert moved, "training did not change the weights"
    assert (tmp_path / "ckpt" / "last.ckpt").is_file() and list((tmp_path / "ckpt").glob("best-*.ckpt"))
    print(f"2-process DDP run: {took:.1f} s")


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
