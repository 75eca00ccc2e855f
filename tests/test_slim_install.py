"""The slim install: ``pip install hyperfeat`` (no extras) describes, extracts and matches.

A fresh process where the training extras (lightning, torchmetrics, wandb, scipy) cannot be
imported runs ``hyperfeat extract`` and ``hyperfeat match`` on the tiny backbone, and
``hyperfeat train`` there says which extra to install. The declared core dependencies are
checked against what those commands import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import TINY_OVERRIDES

ROOT = Path(__file__).resolve().parents[1]
TRAIN_EXTRA = (
    "lightning",
    "pytorch_lightning",
    "lightning_fabric",
    "lightning_utilities",
    "torchmetrics",
    "wandb",
    "scipy",
)

RUNNER = '''
import json, sys
BLOCKED = set(sys.argv[1].split(","))


class Hide:
    """Wraps a meta-path finder: blocked packages are not found, as if not installed."""

    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return None
        find = getattr(self.finder, "find_spec", None)
        return find(name, path, target) if find else None

    def __getattr__(self, attr):
        return getattr(self.finder, attr)


sys.meta_path[:] = [Hide(f) for f in sys.meta_path]
import hyperfeat  # the package imports on its own
from hyperfeat.cli import main
codes = [main(argv) for argv in json.loads(sys.argv[3])]
imported = sorted({m.split(".")[0] for m in sys.modules})
open(sys.argv[2], "w").write(json.dumps({"codes": codes, "imported": imported}))
'''


def run_slim(tmp_path: Path, *commands: list[str]) -> tuple[subprocess.CompletedProcess, dict]:
    """Run each command line in ONE fresh process without the training extras."""
    import json
    import os

    script = tmp_path / "slim_runner.py"
    script.write_text(RUNNER)
    record = tmp_path / "record.json"
    done = subprocess.run(
        [sys.executable, str(script), ",".join(TRAIN_EXTRA), str(record), json.dumps(commands)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)},
    )
    assert record.exists(), done.stderr[-3000:]
    return done, json.loads(record.read_text())


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory, tiny_cfg, tiny_backbone):
    from hyperfeat.model.checkpoint import CheckpointMeta, build_network
    from hyperfeat.model.features import FeatureExtractor
    from hyperfeat.model.pretrained import save_pretrained

    extractor = FeatureExtractor(tiny_backbone, tiny_cfg.features)
    torch.manual_seed(0)
    network = build_network(tiny_cfg, extractor.channels)
    folder = tmp_path_factory.mktemp("weights") / "tiny"
    save_pretrained(
        folder,
        network,
        CheckpointMeta(tiny_cfg, extractor.channels, extractor.layers, list(extractor.save_steps)),
        card=False,
    )
    return folder


def test_extract_match_and_train_without_the_training_extras(tmp_path, tiny_weights):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(tmp_path / f"{name}.png")
    done, record = run_slim(
        tmp_path,
        ["extract", str(tmp_path / "a.png"), "--out", str(tmp_path / "feats"), "--checkpoint", str(tiny_weights)],
        [
            "match",
            str(tmp_path / "a.png"),
            str(tmp_path / "b.png"),
            "--checkpoint",
            str(tiny_weights),
            "--points",
            "10,20;30,5",
            "--out",
            str(tmp_path / "m.png"),
        ],
        ["train", *TINY_OVERRIDES],
    )
    assert record["codes"] == [0, 0, 2], done.stderr[-3000:]
    saved = torch.load(tmp_path / "feats" / "a.pt", weights_only=True)
    assert saved["hyperfeatures"].shape == (128, 32, 32)
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG" and done.stdout.count("->") == 2
    assert "error: training needs lightning, torchmetrics" in done.stderr
    assert "pip install 'hyperfeat[train]'" in done.stderr
    assert not set(TRAIN_EXTRA) & set(record["imported"])
    # every package these commands import is a declared core dependency, none of the training extra
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {d.split(">")[0].split("=")[0].split("[")[0].strip().lower().replace("-", "_") for d in declared}
    assert not {"lightning", "torchmetrics", "wandb", "scipy"} & names
    for module, dist in (
        ("torch", "torch"),
        ("diffusers", "diffusers"),
        ("transformers", "transformers"),
        ("huggingface_hub", "huggingface_hub"),
        ("safetensors", "safetensors"),
        ("PIL", "pillow"),
        ("numpy", "numpy"),
        ("omegaconf", "omegaconf"),
        ("tqdm", "tqdm"),
        ("matplotlib", "matplotlib"),
    ):
        if module in record["imported"]:
            assert dist in names, module
