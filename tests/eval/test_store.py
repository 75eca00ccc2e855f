"""Evaluation at scale: each unique image described once (the descriptor store), stratified
``max_pairs`` subsets, complete JSON records named by the data preset, and Ctrl-C keeping a
partial record. Tiny random backbone and a checkpoint built here; real PF-WILLOW when present."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from hyperfeat.api import Hyperfeatures
from hyperfeat.config import load_config
from hyperfeat.describe.hyperfeatures import HyperfeatureDescriber
from hyperfeat.eval.store import EvalStore, describer_identity
from tests.helpers import DATA_ROOT, data_dir

BASE = ["features.load_size=128", "features.image_size=128"]


@pytest.fixture(scope="module")
def ckpt(make_tiny_checkpoint):
    return make_tiny_checkpoint(seed=0, randomise_mixing=True)


def _overrides(out_dir, *extra: str) -> list[str]:
    return ["data=pf_willow", f"paths.data_root={DATA_ROOT}", f"paths.output_dir={out_dir}", *BASE, *extra]


# ---------------------------------------------------------------------------- the store


def test_store_describes_each_unique_image_once_and_keys_on_the_network(ckpt, tiny_backbone, tmp_path):
    hf = Hyperfeatures.from_checkpoint(ckpt, device="cpu", backbone=tiny_backbone)
    calls = []

    def describe(batch):
        calls.append(len(batch))
        return hf.describe_batch(batch)

    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 128, 128, generator=g) * 2 - 1  # (2, 3, L, L)
    batch = images[[0, 1, 0, 1, 1, 0]]
    store = EvalStore(describe, describer_identity(hf), batch_size=2)
    desc = store.describe_all(batch)  # (6, D, R, R)
    assert store.described == 2 and store.reused == 4 and sum(calls) == 2
    torch.testing.assert_close(desc, hf.describe_batch(batch), rtol=1e-4, atol=1e-4)  # batch composition
    assert torch.equal(desc[0], desc[2]) and torch.equal(desc[0], desc[5])
    store.describe_all(images[:1])
    assert store.described == 2  # already there

    # on disk: a second store reads what the first wrote, and another network is another key
    disk = EvalStore(describe, describer_identity(hf), store_dir=tmp_path)
    disk.describe_all(images)
    again = EvalStore(describe, describer_identity(hf), store_dir=tmp_path)
    assert torch.equal(again.describe_all(images), disk.describe_all(images)) and again.described == 0
    other = Hyperfeatures.from_checkpoint(ckpt, device="cpu", backbone=tiny_backbone)
    with torch.no_grad():
        other.network.mixing_weights.add_(1.0)
    assert describer_identity(other) != describer_identity(hf)
    assert EvalStore(other.describe_batch, describer_identity(other), store_dir=tmp_path).key(images[0]) != again.key(
        images[0]
    )


# ---------------------------------------------------------------------------- PF-WILLOW


def small_willow(tmp_path, classes=("car(G)", "duck(S)"), per_class: int = 2):
    """A PF-WILLOW root of ``per_class`` real images of each class (links): 2·2·1 = 4 pairs, 4 images."""
    source = data_dir("pf_willow") / "PF-dataset-WILLOW"
    root = tmp_path / "willow"
    for name in classes:
        (root / name).mkdir(parents=True)
        for png in sorted((source / name).glob("*.png"))[:per_class]:
            for path in (png, png.with_suffix(".mat")):
                (root / name / path.name).symlink_to(path)
    return root


def test_eval_pck_equals_the_per_pair_computation(ckpt, tiny_backbone, tmp_path, monkeypatch):
    """The store path gives the numbers of describing both images of every pair on their own."""
    from hyperfeat.data.pairs import build_pair_dataset
    from hyperfeat.data.pairs.base import collate_pairs
    from hyperfeat.eval.metrics.pck import PCK
    from hyperfeat.eval.runner import evaluate
    from hyperfeat.eval.semantic import update_pck

    overrides = _overrides(tmp_path, f"data.root={small_willow(tmp_path)}", "eval.batch_size=4")
    described = []
    original = HyperfeatureDescriber.describe_batch  # what the evaluation loads (the API class inherits it)

    def spy(self, batch):
        described.append(len(batch))
        return original(self, batch)

    monkeypatch.setattr(HyperfeatureDescriber, "describe_batch", spy)
    record = evaluate(str(ckpt), overrides, backbone=tiny_backbone)
    monkeypatch.setattr(HyperfeatureDescriber, "describe_batch", original)
    results = record["results"]
    assert results["num_pairs"] == 4 and results["pairs_evaluated"] == 4
    # each unique image once: 4 descriptions instead of the 8 of describing per pair
    assert sum(described) == results["images_described"] == 4 and results["images_reused"] == 4

    # per pair, by the old path: both images of the pair in one describer call
    hf = Hyperfeatures.from_checkpoint(ckpt, device="cpu", backbone=tiny_backbone, overrides=overrides)
    dataset = build_pair_dataset(hf.cfg.data, "test", 128)
    metric = PCK(alphas=(0.05, 0.1, 0.15))
    for i in range(len(dataset)):
        batch = collate_pairs([dataset[i]])
        src, tgt = hf.describe_batch(torch.cat([batch["source_image"], batch["target_image"]])).chunk(2)
        update_pck(metric, batch, src, tgt, 128)
    expected = metric.compute()
    assert len([k for k in expected if k.startswith("cat/")]) > 10  # two categories
    for key, value in expected.items():
        assert results[key] == pytest.approx(float(value), abs=1e-9), key


def test_max_pairs_samples_across_categories_seeded(tmp_path):
    data_dir("pf_willow")
    from hyperfeat.data.pairs import build_pair_dataset

    def subset(seed: int, n: int = 90):
        cfg = load_config(
            overrides=[
                "data=pf_willow",
                f"paths.data_root={DATA_ROOT}",
                f"data.max_pairs={n}",
                f"data.sample_seed={seed}",
            ]
        )
        return build_pair_dataset(cfg.data, "test", 64).records

    first = subset(0)
    counts = Counter(r.category for r in first)
    assert len(first) == 90 and len(counts) == 10 and set(counts.values()) == {9}, counts
    assert [r.pair_id for r in subset(0)] == [r.pair_id for r in first]  # seeded
    assert {r.pair_id for r in subset(1)} != {r.pair_id for r in first}
    odd = Counter(r.category for r in subset(0, 13))
    assert len(odd) == 10 and max(odd.values()) - min(odd.values()) <= 1
    everything = subset(0, 5000)
    assert len(everything) == 900 and [r.pair_id for r in everything] == sorted(
        [r.pair_id for r in everything], key=[r.pair_id for r in everything].index
    )


# ---------------------------------------------------------------------------- records and Ctrl-C


def test_record_is_complete_and_named_by_the_preset(ckpt, tiny_backbone, tmp_path):
    data_dir("pf_willow")
    from hyperfeat.eval.runner import evaluate, output_name

    overrides = _overrides(tmp_path, "data.max_pairs=2", "eval.matcher=nn")
    record = evaluate(str(ckpt), overrides, backbone=tiny_backbone)
    saved = json.loads((tmp_path / "eval_pf_willow.json").read_text())
    assert saved == json.loads(json.dumps(record))
    assert saved["overrides"] == overrides and saved["partial"] is False
    assert len(saved["checkpoint_sha256"]) == 64 and saved["checkpoint"] == str(ckpt)
    assert saved["software"]["torch"] == torch.__version__.split("+")[0] or saved["software"]["torch"]
    assert saved["data_subset"]["num_pairs"] == 2 and len(saved["data_subset"]["pair_ids"]) == 2
    assert saved["config"]["data"]["max_pairs"] == 2 and saved["data_preset"] == "pf_willow"
    cfg = load_config(overrides=["data=spair_native"])
    assert output_name(cfg, ["data=spair_native"]) == "spair_native"
    assert output_name(load_config(overrides=["data=spair"]), ["data=spair"]) == "spair"
    assert output_name(load_config(overrides=["task=davis"]), ["task=davis"]) == "davis"


def test_ctrl_c_writes_a_partial_record_and_one_line(ckpt, tiny_backbone, tmp_path, monkeypatch, capsys):
    data_dir("pf_willow")
    from hyperfeat.cli import main
    from hyperfeat.eval import semantic
    from hyperfeat.model import backbone as backbone_module

    monkeypatch.setattr(backbone_module, "load_backbone", lambda cfg: tiny_backbone)
    import hyperfeat.describe.hyperfeatures as describe_hyperfeatures

    monkeypatch.setattr(describe_hyperfeatures, "load_backbone", lambda cfg: tiny_backbone)
    calls = {"n": 0}
    original = semantic.update_pck

    def interrupt_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(semantic, "update_pck", interrupt_on_third)
    root = small_willow(tmp_path, classes=("car(G)",), per_class=4)  # 12 pairs of 4 images
    code = main(["eval", "--checkpoint", str(ckpt), *_overrides(tmp_path, f"data.root={root}", "eval.batch_size=2")])
    err = capsys.readouterr().err.strip().splitlines()
    messages = [line for line in err if not line.startswith("evaluating ")]  # the progress bar aside
    assert code == 130 and len(messages) == 1 and "after 4 of 12 pairs" in messages[0], err
    assert "Traceback" not in "\n".join(err)
    saved = json.loads((tmp_path / "eval_pf_willow.json").read_text())
    assert saved["partial"] is True and saved["progress"] == {"done": 4, "total": 12}
    assert saved["results"]["num_pairs"] == 4 and saved["results"]["pairs_evaluated"] == 4
