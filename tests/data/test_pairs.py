"""Semantic pair data sets: SPair (both layouts), CUB, PF-WILLOW, synthetic warps, collate, bad data."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.io import loadmat, savemat

from hyperfeat.config import load_config
from hyperfeat.data.pairs import build_pair_dataset
from hyperfeat.data.pairs.base import PAIR_KEYS, DataWarning, collate_pairs
from hyperfeat.data.pairs.cub import CUBPairs
from hyperfeat.data.pairs.pf_willow import PFWillowPairs
from hyperfeat.data.pairs.procedural import GeneratedImage
from hyperfeat.data.pairs.spair import SPairDataset
from hyperfeat.data.pairs.synthetic import (
    SyntheticPairs,
    apply_homography,
    photometric,
    warp_image,
)
from hyperfeat.errors import ConfigError, DataError
from tests.helpers import data_dir

L = 64
TEST6 = "annotations/spair_71k_test-6.json"


# ---------------------------------------------------------------- helpers


def _write_image(path: Path, size: tuple[int, int], mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    rgb = np.random.default_rng(0).integers(0, 255, size=(h, w, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert(mode).save(path)


def _dhf(tmp_path: Path, pairs: list[dict], sizes: dict[str, tuple[int, int]] | None = None, modes=None) -> Path:
    """A pair-list JSON + image folder in tmp_path; returns the JSON path."""
    sizes = sizes or {"a.png": (40, 30), "b.png": (50, 20)}
    for name, size in sizes.items():
        _write_image(tmp_path / "images" / name, size, (modes or {}).get(name, "RGB"))
    ann = tmp_path / "pairs.json"
    ann.write_text(json.dumps(pairs))
    return ann


def _pair(src="a.png", trg="b.png", sp=((1, 2), (10, 20)), tp=((3, 4), (30, 10)), **extra) -> dict:
    entry = {
        "source_path": src,
        "target_path": trg,
        "source_points": [list(p) for p in sp],
        "target_points": [list(p) for p in tp],
        "category": "thing",
        "target_bounding_box": [0, 0, 49, 19],
    }
    entry.update(extra)
    return entry


# ---------------------------------------------------------------- SPair


def test_spair_layouts_give_the_same_pairs():
    dhf = SPairDataset(data_dir("spair_dhf"), TEST6, L)
    native = SPairDataset(data_dir("spair_native"), "test", L, format="native")
    assert len(dhf) == len(native) == 6
    by_id = {native.records[i].pair_id: i for i in range(len(native))}
    assert set(by_id) == {r.pair_id for r in dhf.records}
    for i in range(len(dhf)):
        a = dhf[i]
        b = native[by_id[a["pair_id"]]]
        assert set(a) == set(PAIR_KEYS)
        assert a["source_image"].shape == (3, L, L) and a["source_image"].min() >= -1 and a["source_image"].max() <= 1
        for key in (
            "source_image",
            "target_image",
            "source_points",
            "target_points",
            "target_points_orig",
            "valid",
            "target_bbox",
        ):
            assert torch.equal(a[key], b[key]), key
        assert a["source_size"] == b["source_size"] and a["target_size"] == b["target_size"]
        assert a["category"] == b["category"]
    # points are the annotation values scaled to the L×L frame (x' = x·L/W)
    entry = json.loads((data_dir("spair_dhf") / TEST6).read_text())[0]
    item = dhf[0]
    w, h = item["target_size"]
    expected = torch.tensor(entry["target_points"], dtype=torch.float32) * torch.tensor([L / w, L / h])
    assert torch.allclose(item["target_points"], expected)
    assert torch.equal(item["target_points_orig"], torch.tensor(entry["target_points"], dtype=torch.float32))
    assert item["target_bbox"].tolist() == entry["target_bounding_box"]


def test_spair_skip_warning_names_missing_files():
    root = data_dir("spair_dhf")
    with pytest.warns(DataWarning) as record:
        ds = SPairDataset(root, "annotations/spair_71k_test-360.json", L)
    assert len(ds) == 6  # the test-6 pairs, found by file name in the flat folder
    messages = [str(w.message) for w in record if issubclass(w.category, DataWarning)]
    assert len(messages) == 1
    assert "skipped 354 of 360 pairs" in messages[0] and ".jpg" in messages[0]
    with pytest.raises(DataError, match="val-360.*no pair left"), warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        SPairDataset(root, "annotations/spair_71k_val-360.json", L)


def test_spair_native_empty_split_and_missing_annotation(tmp_path):
    with pytest.raises(DataError, match=r"'trn'.*trn.txt lists no pairs"):
        SPairDataset(data_dir("spair_native"), "trn", L, format="native")
    (tmp_path / "Layout" / "large").mkdir(parents=True)
    (tmp_path / "Layout" / "large" / "test.txt").write_text("000001-x-y:cat\n")
    with pytest.raises(DataError, match=r"pair annotation .*not found: .*000001-x-y:cat.json"):
        SPairDataset(tmp_path, "test", L, format="native")


# ---------------------------------------------------------------- PF-WILLOW


def test_pf_willow_900_pairs_points_match_mat():
    root = data_dir("pf_willow")
    ds = PFWillowPairs(root, 32)
    assert len(ds) == 900
    cats = [r.category for r in ds.records]
    assert len(set(cats)) == 10 and all(cats.count(c) == 90 for c in set(cats))
    assert len({r.pair_id for r in ds.records}) == 900
    for index in (0, 457, 899):
        item = ds[index]
        rec = ds.records[index]
        trg = loadmat(str(rec.target_path.with_suffix(".mat")))["pts_coord"].T  # (10, 2)
        src = loadmat(str(rec.source_path.with_suffix(".mat")))["pts_coord"].T
        (sw, sh), (tw, th) = item["source_size"], item["target_size"]
        assert torch.allclose(item["source_points"], torch.tensor(src * [32 / sw, 32 / sh], dtype=torch.float32))
        assert torch.allclose(item["target_points"], torch.tensor(trg * [32 / tw, 32 / th], dtype=torch.float32))
        assert torch.allclose(item["target_points_orig"], torch.tensor(trg, dtype=torch.float32))
        box = [trg[:, 0].min(), trg[:, 1].min(), trg[:, 0].max(), trg[:, 1].max()]  # the keypoints' box
        assert torch.allclose(item["target_bbox"], torch.tensor(box, dtype=torch.float32))
        assert item["valid"].all() and rec.source_path.parent == rec.target_path.parent


def test_pf_willow_bad_files(tmp_path):
    cls = tmp_path / "PF-dataset-WILLOW" / "duck(S)"
    for name in ("a", "b"):
        _write_image(cls / f"{name}.png", (30, 20))
    savemat(str(cls / "a.mat"), {"pts_coord": np.array([[1.0, 2.0], [3.0, 4.0]])})
    with pytest.raises(DataError, match=r"annotation file not found: .*b\.mat"):
        PFWillowPairs(tmp_path, 32)
    savemat(str(cls / "b.mat"), {"other": np.zeros((2, 2))})
    with pytest.raises(DataError, match=r"b\.mat has no field 'pts_coord'"):
        PFWillowPairs(tmp_path, 32)
    savemat(str(cls / "b.mat"), {"pts_coord": np.array([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]])})
    with pytest.raises(DataError, match=r"pair a-b:duck\(S\) has 2 source points but 3 target points"):
        PFWillowPairs(tmp_path, 32)


# ---------------------------------------------------------------- CUB


def _cub_table(folder: Path, name: str) -> list[list[str]]:
    return [line.split() for line in (folder / name).read_text().splitlines() if line.strip()]


def test_cub_pairs_share_only_visible_parts():
    folder = data_dir("cub") / "CUB_200_2011"
    ds = CUBPairs(data_dir("cub"), 32, "test", num_pairs=200, seed=3)
    assert len(ds) == 200
    locs: dict[str, dict[int, tuple[float, float, int]]] = {}
    names = {i: n for i, n in _cub_table(folder, "images.txt")}
    for img, part, x, y, vis in _cub_table(folder, "parts/part_locs.txt"):
        locs.setdefault(names[img], {})[int(part)] = (float(x), float(y), int(vis))
    labels = {names[i]: c for i, c in _cub_table(folder, "image_class_labels.txt")}
    boxes = {names[i]: [float(v) for v in rest] for i, *rest in _cub_table(folder, "bounding_boxes.txt")}
    for rec in ds.records:
        src = str(rec.source_path.relative_to(folder / "images"))
        trg = str(rec.target_path.relative_to(folder / "images"))
        assert src != trg and labels[src] == labels[trg]
        common = [p for p in range(1, 16) if locs[src][p][2] == 1 and locs[trg][p][2] == 1]
        assert len(common) >= 1
        assert rec.source_points.tolist() == [list(locs[src][p][:2]) for p in common]
        assert rec.target_points.tolist() == [list(locs[trg][p][:2]) for p in common]
        x, y, w, h = boxes[trg]
        assert rec.target_bbox.tolist() == [x, y, x + w, y + h]
    again = CUBPairs(data_dir("cub"), 32, "test", num_pairs=200, seed=3)
    other = CUBPairs(data_dir("cub"), 32, "test", num_pairs=200, seed=4)
    assert [r.pair_id for r in again.records] == [r.pair_id for r in ds.records]
    assert [r.pair_id for r in other.records] != [r.pair_id for r in ds.records]
    item = ds[0]
    assert item["source_image"].shape == (3, 32, 32) and item["valid"].all()


def test_cub_bad_files(tmp_path):
    folder = tmp_path / "CUB_200_2011"
    (folder / "parts").mkdir(parents=True)
    _write_image(folder / "images" / "001.A" / "x.jpg", (30, 20))
    _write_image(folder / "images" / "001.A" / "y.jpg", (30, 20))
    (folder / "images.txt").write_text("1 001.A/x.jpg\n2 001.A/y.jpg\n")
    (folder / "train_test_split.txt").write_text("1 0\n2 0\n")
    (folder / "image_class_labels.txt").write_text("1 1\n2 1\n")
    (folder / "bounding_boxes.txt").write_text("1 0 0 10 10\n2 1 1 10 10\n")
    with pytest.raises(DataError, match=r"CUB annotation file not found: .*part_locs\.txt"):
        CUBPairs(tmp_path, 32)
    (folder / "parts" / "part_locs.txt").write_text("1 1 5.0 5.0 1\n2 1 6.0\n")
    with pytest.raises(DataError, match=r"part_locs\.txt line 2: expected 5 fields"):
        CUBPairs(tmp_path, 32)
    (folder / "parts" / "part_locs.txt").write_text("1 1 5.0 5.0 1\n2 1 99.0 5.0 1\n")
    with pytest.raises(DataError, match=r"target point 0 = \[99.0, 5.0\] lies outside y.jpg"):
        CUBPairs(tmp_path, 32, strict=True)
    with pytest.warns(DataWarning, match="outside"):
        ds = CUBPairs(tmp_path, 32)
    assert len(ds) == 2 and all(not r.valid.any() for r in ds.records)  # image 2's only part is outside


# ---------------------------------------------------------------- synthetic


def _blob_image(path: Path, size: int, centres: np.ndarray, sigma: float = 1.5) -> None:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    img = np.zeros((size, size))
    for x, y in centres:
        img += np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))
    Image.fromarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8)).convert("RGB").save(path)


def test_synthetic_warp_moves_dots_to_mapped_points(tmp_path):
    size = 96
    k = 3
    centres = (np.arange(k) + 0.5) * size / k - 0.5  # the grid the data set uses for num_points=9
    grid = np.stack(np.meshgrid(centres, centres, indexing="xy"), axis=-1).reshape(-1, 2)
    _blob_image(tmp_path / "dots.png", size, grid)
    ds = SyntheticPairs(tmp_path, size, "all", num_points=9, pairs_per_image=6, perspective=0.08, seed=1)
    checked = 0
    for index in range(len(ds)):
        item = ds[index]
        assert torch.allclose(item["source_points"], torch.tensor(grid, dtype=torch.float32), atol=1e-4)
        brightness = (item["target_image"].mean(0) + 1) / 2  # (L, L) in [0, 1]
        for (x, y), ok in zip(item["target_points"].tolist(), item["valid"].tolist()):
            assert ok == (0 <= x <= size - 1 and 0 <= y <= size - 1)
            if not (6 <= x <= size - 7 and 6 <= y <= size - 7):
                continue
            cx, cy = round(x), round(y)
            win = brightness[cy - 5 : cy + 6, cx - 5 : cx + 6]  # (11, 11)
            win = win - win.min()
            yy, xx = torch.meshgrid(torch.arange(cy - 5, cy + 6.0), torch.arange(cx - 5, cx + 6.0), indexing="ij")
            centroid = ((win * xx).sum() / win.sum(), (win * yy).sum() / win.sum())
            assert math.dist(centroid, (x, y)) < 0.15, (index, (x, y), centroid)
            checked += 1
    assert checked > 20


def test_synthetic_single_dot_and_exact_grid_sample():
    size = 33
    image = torch.zeros(1, size, size)
    image[0, 20, 9] = 1.0  # a bright dot at (x, y) = (9, 20)
    h = np.array([[1.0, 0.0, 5.0], [0.0, 1.0, -7.0], [0.0, 0.0, 1.0]])  # pure integer shift
    out = warp_image(image, h)
    assert torch.nonzero(out[0] > 0.99).tolist() == [[13, 14]]  # (row y, col x) = (20 - 7, 9 + 5)
    assert apply_homography(h, np.array([[9.0, 20.0]])).tolist() == [[14.0, 13.0]]


def test_synthetic_is_deterministic_and_splits_are_disjoint():
    images = data_dir("spair_dhf") / "images"
    train = SyntheticPairs(images, 32, "train", pairs_per_image=2, num_points=16, point_mode="random")
    again = SyntheticPairs(images, 32, "train", pairs_per_image=2, num_points=16, point_mode="random")
    val = SyntheticPairs(images, 32, "val", pairs_per_image=2)
    assert len(train) == 9 * 2 and len(val) == 3 * 2
    assert not set(train.images) & set(val.images)
    a, b = train[5], again[5]
    for key in ("target_image", "source_points", "target_points", "valid"):
        assert torch.equal(a[key], b[key])
    assert not torch.equal(train[4]["target_points"], a["target_points"])
    assert a["target_size"] == (32, 32) and torch.isnan(a["target_bbox"]).all()
    assert torch.equal(a["target_points_orig"], a["target_points"])


def _bilinear_at(image: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(C, S, S) image sampled bilinearly at (N, 2) pixel points (x, y) → (N, C)."""
    size = image.shape[-1]
    grid = ((points * 2 + 1) / size - 1).reshape(1, 1, -1, 2).to(image.dtype)
    return F.grid_sample(image[None], grid, mode="bilinear", align_corners=False)[0, :, 0].T


def test_synthetic_missing_root_falls_back_to_generated_images(tmp_path):
    missing = tmp_path / "not_there" / "images"
    with pytest.warns(DataWarning) as record:
        train = SyntheticPairs(missing, 32, "train", pairs_per_image=2, generated_images=8, seed=3)
    messages = [str(w.message) for w in record if issubclass(w.category, DataWarning)]
    assert len(messages) == 1
    assert str(missing) in messages[0] and "not found" in messages[0] and "8 generated" in messages[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "generated" asks for them: no warning
        again = SyntheticPairs("generated", 32, "train", pairs_per_image=2, generated_images=8, seed=3)
        val = SyntheticPairs("generated", 32, "val", pairs_per_image=2, generated_images=8, seed=3)
        other = SyntheticPairs("generated", 32, "train", pairs_per_image=2, generated_images=8, seed=4)
    assert len(train) == 6 * 2 and len(val) == 2 * 2  # val_fraction 0.25 of 8 images held out
    assert all(isinstance(p, GeneratedImage) for p in train.images)
    assert not set(train.images) & set(val.images) and len(set(train.images) | set(val.images)) == 8
    for index in (0, 7):
        a, b = train[index], again[index]
        for key in ("source_image", "target_image", "source_points", "target_points", "valid"):
            assert torch.equal(a[key], b[key]), key
        assert a["pair_id"] == b["pair_id"] and a["source_size"] == (256, 256)
        assert not torch.equal(a["source_image"], other[index]["source_image"])  # another seed
    pixels = [np.asarray(p.load(), dtype=np.float32) for p in train.images + val.images]
    assert all(p.shape == (256, 256, 3) and p.std() > 20 for p in pixels)  # not flat
    assert all(np.abs(pixels[i] - pixels[j]).mean() > 20 for i in range(8) for j in range(i))
    with pytest.raises(DataError, match="generated_images"):
        SyntheticPairs("generated", 32, generated_images=0)
    with pytest.raises(DataError, match="no images"):  # an existing empty folder is still an error
        SyntheticPairs(tmp_path, 32)


def test_synthetic_preset_missing_root_builds_through_the_factory(tmp_path):
    missing = tmp_path / "fresh_clone" / "spair_dhf" / "images"
    cfg = load_config(overrides=["data=synthetic", f"data.root={missing}", "data.generated_images=8"])
    with pytest.warns(DataWarning, match=r"image folder not found: .*fresh_clone"):
        train = build_pair_dataset(cfg.data, "train", 32)
    assert len(train) == 6 * 20 and train[0]["source_image"].shape == (3, 32, 32)
    cfg = load_config(overrides=["data=synthetic", "data.root=generated"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the keyword: no warning (the config made it absolute)
        val = build_pair_dataset(cfg.data, "val", 32)
    assert len(val) == 6 * 20  # 24 images by default, 6 held out


def test_synthetic_warp_is_consistent_on_a_generated_image():
    # the target's pixels at the target points are the (jittered) source's at the source points
    size = 96
    ds = SyntheticPairs(
        "generated", size, "all", generated_images=1, num_points=64, pairs_per_image=6, perspective=0.08, seed=1
    )
    checked = 0
    for index in range(len(ds)):
        item = ds[index]
        warp = ds.sample_warp(ds.rng(index))  # the warp the item drew
        assert np.allclose(
            item["target_points"].numpy(),
            apply_homography(warp.homography, item["source_points"].double().numpy()),
            atol=1e-4,
        )
        source = photometric((item["source_image"] + 1) / 2, warp)
        target = (item["target_image"] + 1) / 2
        src, trg = item["source_points"], item["target_points"]
        for (x, y), ok in zip(trg.tolist(), item["valid"].tolist()):
            assert ok == (0 <= x <= size - 1 and 0 <= y <= size - 1)
        inside = item["valid"] & (trg >= 1).all(1) & (trg <= size - 2).all(1)
        expected = _bilinear_at(source, src[inside])
        error = (_bilinear_at(target, trg[inside]) - expected).abs().mean()
        off_by_one = (_bilinear_at(target, trg[inside] + torch.tensor([0.7, 0.7])) - expected).abs().mean()
        assert error < 0.01 and error < off_by_one / 4, (index, error, off_by_one)
        checked += int(inside.sum())
    assert checked > 150


# ---------------------------------------------------------------- collate and max_points


def test_collate_pads_points_with_invalid(tmp_path):
    ann = _dhf(tmp_path, [_pair(), _pair(sp=[(1, 1), (2, 2), (3, 3)], tp=[(4, 4), (5, 5), (6, 6)])])
    ds = SPairDataset(tmp_path, str(ann), 16)
    batch = collate_pairs([ds[0], ds[1]])
    assert batch["source_image"].shape == (2, 3, 16, 16)
    assert batch["source_points"].shape == (2, 3, 2) and batch["target_points_orig"].shape == (2, 3, 2)
    assert batch["valid"].tolist() == [[True, True, False], [True, True, True]]
    assert batch["source_size"].tolist() == [[40, 30], [40, 30]] and batch["target_bbox"].shape == (2, 4)
    assert batch["pair_id"] == ["a-b:thing", "a-b:thing"] and batch["category"] == ["thing", "thing"]
    fixed = SPairDataset(tmp_path, str(ann), 16, max_points=2)
    assert fixed[0]["valid"].tolist() == [True, True] and fixed[1]["source_points"].shape == (2, 2)
    padded = SPairDataset(tmp_path, str(ann), 16, max_points=5)[0]
    assert padded["valid"].tolist() == [True, True, False, False, False]


# ---------------------------------------------------------------- bad data


def test_missing_annotation_and_malformed_entries(tmp_path):
    with pytest.raises(DataError, match=r"file not found: .*nope\.json"):
        SPairDataset(tmp_path, "nope.json", L)
    ann = _dhf(tmp_path, [{"source_path": "a.png"}])
    with pytest.raises(DataError, match=r"entry 0: missing field\(s\) target_path"):
        SPairDataset(tmp_path, str(ann), L)


def test_point_count_mismatch_names_the_pair(tmp_path):
    ann = _dhf(tmp_path, [_pair(tp=[(3, 4)])])
    with pytest.raises(DataError, match=r"pair a-b:thing has 2 source points but 1 target points"):
        SPairDataset(tmp_path, str(ann), L)


def test_keypoint_outside_image_strict_error_or_warn_invalid(tmp_path):
    ann = _dhf(tmp_path, [_pair(tp=[(3, 4), (55, 10)])])  # b.png is 50 wide
    with pytest.raises(DataError, match=r"pair a-b:thing .*target point 1 = \[55.0, 10.0\] lies outside b.png"):
        SPairDataset(tmp_path, str(ann), L, strict=True)
    with pytest.warns(DataWarning, match=r"marked 1 point\(s\) outside"):
        ds = SPairDataset(tmp_path, str(ann), L)
    assert ds[0]["valid"].tolist() == [True, False]
    ann = _dhf(tmp_path, [_pair(tp=[(3, 4), (50, 20)])])  # the edge, 1-based style: inside
    assert SPairDataset(tmp_path, str(ann), L, strict=True)[0]["valid"].all()
    # the reference says what the behaviour is
    readme = " ".join((Path(__file__).resolve().parents[2] / "docs" / "REFERENCE.md").read_text().split())
    assert (
        "a keypoint outside its image is marked invalid with one warning per data set (an error naming "
        "the pair with `data.strict=true`)"
    ) in readme


def test_empty_split_and_all_images_missing(tmp_path):
    ann = _dhf(tmp_path, [])
    with pytest.raises(DataError, match=r"split '.*pairs.json' under .* lists no pairs"):
        SPairDataset(tmp_path, str(ann), L)
    ann = _dhf(tmp_path, [_pair(src="gone.png")])
    with pytest.warns(DataWarning, match=r"gone\.png"), pytest.raises(DataError, match="no pair left"):
        SPairDataset(tmp_path, str(ann), L)


def test_grayscale_and_rgba_images_are_converted(tmp_path):
    ann = _dhf(tmp_path, [_pair()], modes={"a.png": "L", "b.png": "RGBA"})
    assert Image.open(tmp_path / "images" / "a.png").mode == "L"
    item = SPairDataset(tmp_path, str(ann), 16)[0]
    assert item["source_image"].shape == item["target_image"].shape == (3, 16, 16)
    assert torch.equal(item["source_image"][0], item["source_image"][1])  # gray → equal channels


def test_synthetic_bad_inputs(tmp_path):
    with pytest.raises(DataError, match="no images"):
        SyntheticPairs(tmp_path, 32)
    with pytest.raises(DataError, match="not found"):
        SyntheticPairs([tmp_path / "x.png"], 32)


# ---------------------------------------------------------------- factory and presets


def test_presets_build_through_the_factory():
    data_dir("spair_dhf")
    sizes = {}
    for name, role in (
        ("spair", "test"),
        ("spair_native", "test"),
        ("cub", "test"),
        ("pf_willow", "test"),
        ("synthetic", "train"),
    ):
        cfg = load_config(overrides=[f"data={name}"])
        for key in ("name", "root", "train_split", "val_split", "test_split", "max_pairs"):
            assert key in cfg.data, (name, key)
        sizes[name] = len(build_pair_dataset(cfg.data, role, 32))
    assert sizes == {"spair": 6, "spair_native": 6, "cub": 1000, "pf_willow": 900, "synthetic": 180}
    assert len(build_pair_dataset(load_config().data, "val", 32)) == 6  # default.yaml's block
    cfg = load_config(overrides=["data=cub"])
    with pytest.raises(ConfigError, match=r"data.train_split is null for data set 'cub'"):
        build_pair_dataset(cfg.data, "train", 32)
    with pytest.raises(ConfigError, match="data.name must be one of"):
        build_pair_dataset({"name": "nope", "root": "x", "test_split": "test"}, "test", 32)
