"""``evaluate`` (what ``eval.py`` / ``hyperfeat eval`` run) on real PF-WILLOW and CUB pairs with
the tiny random backbone: the table, the JSON, the pictures, and the PCK recomputed from the
same descriptors with the independent matcher of tests/reference.py."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from hyperfeat.api import Hyperfeatures
from hyperfeat.config import load_config
from tests.helpers import DATA_ROOT, PNG, data_dir
from tests.reference import argmax_xy, load_frame_similarities, to_target


@pytest.fixture(scope="module")
def ckpt(make_tiny_checkpoint):
    return make_tiny_checkpoint(randomise_mixing=True)  # not uniform: the heat map has a largest cell


def _eval(ckpt, backbone, data: str, out_dir, max_pairs: int, save_vis: int) -> dict:
    from hyperfeat.eval.runner import evaluate

    overrides = [
        f"data={data}",
        f"paths.data_root={DATA_ROOT}",
        f"paths.output_dir={out_dir}",
        f"data.max_pairs={max_pairs}",
        f"eval.save_vis={save_vis}",
        "features.load_size=128",
        "features.image_size=128",
    ]
    return evaluate(str(ckpt), overrides, backbone=backbone)


def independent_pck(dataset, src_desc, tgt_desc, load: int, alpha: float) -> tuple[float, dict]:
    """Pooled PCK@alpha of the bounding box (max side), overall and per category, from scratch."""
    correct, total = {}, {}
    for i in range(len(dataset)):
        item = dataset[i]
        valid = item["valid"]
        points = item["source_points"][valid].tolist()  # load frame already
        sim, _, _ = load_frame_similarities(src_desc[i], tgt_desc[i], points, (load, load), load)
        pred = to_target(argmax_xy(sim), load, item["target_size"])
        dist = (pred - item["target_points_orig"][valid]).norm(dim=1)
        x1, y1, x2, y2 = item["target_bbox"].tolist()
        hits = int((dist <= alpha * max(x2 - x1, y2 - y1)).sum())
        cat = item["category"]
        correct[cat] = correct.get(cat, 0) + hits
        total[cat] = total.get(cat, 0) + int(valid.sum())
    overall = sum(correct.values()) / sum(total.values())
    return overall, {c: correct[c] / total[c] for c in total}


def test_eval_pf_willow_table_json_pictures_and_numbers(ckpt, tiny_backbone, tmp_path, capsys):
    data_dir("pf_willow")
    from hyperfeat.data.pairs import build_pair_dataset

    record = _eval(ckpt, tiny_backbone, "pf_willow", tmp_path, max_pairs=3, save_vis=2)
    printed = capsys.readouterr().out
    cfg = load_config(overrides=["data=pf_willow", f"paths.data_root={DATA_ROOT}", "data.max_pairs=3"])
    dataset = build_pair_dataset(cfg.data, "test", 128)
    categories = {r.category for r in dataset.records}
    assert len(categories) == 3  # sampled across the classes, not the first three pairs of one

    # table: an overall row and one per category, and the random-backbone warning
    lines = printed.splitlines()
    assert any(line.startswith("all ") for line in lines)
    assert all(any(line.startswith(f"{c} ") for line in lines) for c in categories)
    assert "RANDOM" in printed and "tiny" in printed
    # JSON on disk = the returned record
    saved = json.loads((tmp_path / "eval_pf_willow.json").read_text())
    assert saved == json.loads(json.dumps(record)) and saved["random_backbone"] is True
    results = saved["results"]
    for key in ("pck_bbox@0.1", "pck_img@0.1", *(f"cat/{c}/pck_bbox@0.1" for c in categories)):
        assert 0.0 <= results[key] <= 1.0, key
    assert results["num_pairs"] == 3 and results["num_points"] == 30
    # pictures: two PNGs with portable names
    pictures = sorted((tmp_path / "vis_pf_willow").iterdir())
    assert len(pictures) == 2 and all(p.read_bytes()[:8] == PNG for p in pictures)
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+\.png", p.name) for p in pictures)

    # the numbers, recomputed with the independent matcher from each pair's own descriptors
    hf = Hyperfeatures.from_checkpoint(
        ckpt, device="cpu", backbone=tiny_backbone, overrides=["features.load_size=128", "features.image_size=128"]
    )
    src, tgt = zip(
        *(
            hf.describe_batch(torch.stack([it["source_image"], it["target_image"]])).unbind(0)
            for it in (dataset[i] for i in range(len(dataset)))
        )
    )
    overall, per_cat = independent_pck(dataset, torch.stack(src), torch.stack(tgt), load=128, alpha=0.1)
    assert math.isclose(results["pck_bbox@0.1"], overall, abs_tol=1e-6)
    for cat, value in per_cat.items():
        assert math.isclose(results[f"cat/{cat}/pck_bbox@0.1"], value, abs_tol=1e-6)


def test_eval_cub_per_category_rows(ckpt, tiny_backbone, tmp_path, capsys):
    data_dir("cub")
    record = _eval(ckpt, tiny_backbone, "cub", tmp_path, max_pairs=2, save_vis=0)
    printed = capsys.readouterr().out
    results = record["results"]
    cats = sorted({k.split("/")[1] for k in results if k.startswith("cat/")})
    assert len(cats) == 2 and results["num_pairs"] == 2
    for key in ("pck_bbox@0.1", "pck_img@0.1", *(f"cat/{c}/pck_img@0.1" for c in cats)):
        assert 0.0 <= results[key] <= 1.0, key
    rows = [line.split()[0] for line in printed.splitlines() if line.strip()]
    assert "all" in rows and all(c in rows for c in cats)
    assert json.loads((tmp_path / "eval_cub.json").read_text())["data"] == "cub"
    assert not (tmp_path / "vis_cub").exists()
