"""The public inference object, the ``match`` / ``plot-mixing`` commands and ``eval.py`` on real
data, all with a tiny random backbone and a checkpoint built here.

Matching is checked against an independent computation written from the documented
convention (hyperfeat/matching.py): points are (x, y) pixels with centres at integers, frames
are rescaled by plain scaling (x·W'/W), descriptors are bilinearly upsampled
(align_corners=False) to the square load frame, and a point takes the cosine nearest neighbour
there. Source and target differ in size and aspect ratio, so a swapped x/y or a wrong scale fails.
"""

from __future__ import annotations

import inspect
import json
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import DATA_ROOT, TINY_OVERRIDES, data_dir
from PIL import Image

from hyperfeat.api import Hyperfeatures
from hyperfeat.cli import main
from hyperfeat.config import load_config
from hyperfeat.errors import CheckpointError, HyperfeatError
from hyperfeat.model.checkpoint import CheckpointMeta, build_network, save_checkpoint
from hyperfeat.model.features import FeatureExtractor

PNG = b"\x89PNG\r\n\x1a\n"
SRC_WH, TGT_WH = (160, 96), (72, 120)  # landscape source, portrait target
POINTS = [[0.0, 0.0], [159.0, 95.0], [37.0, 80.0], [120.0, 12.0], [80.0, 48.0]]  # (x, y), corners included


def picture(size_wh: tuple[int, int], seed: int) -> Image.Image:
    """A structured RGB test image: smooth colour waves plus a few flat rectangles."""
    w, h = size_wh
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    channels = [127 + 100 * np.sin(xx / rng.uniform(5, 15) + yy / rng.uniform(5, 15) + rng.uniform(0, 6))
                for _ in range(3)]
    array = np.stack(channels, axis=-1)
    for _ in range(4):
        x0, y0 = rng.integers(0, w - 10), rng.integers(0, h - 10)
        array[y0:y0 + rng.integers(5, h // 2), x0:x0 + rng.integers(5, w // 2)] = rng.integers(0, 256, 3)
    return Image.fromarray(array.clip(0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny_cfg, tiny_backbone):
    extractor = FeatureExtractor(tiny_backbone, tiny_cfg.features)
    torch.manual_seed(0)
    network = build_network(tiny_cfg, extractor.channels)
    with torch.no_grad():
        network.mixing_weights.normal_()  # not uniform: the heat map has a largest cell
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    meta = CheckpointMeta(tiny_cfg, extractor.channels, extractor.layers, list(extractor.save_steps))
    save_checkpoint(path, network, meta)
    return path


@pytest.fixture(scope="module")
def hf(ckpt, tiny_backbone):
    return Hyperfeatures.from_checkpoint(ckpt, device="cpu", backbone=tiny_backbone)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pair")
    src, tgt = picture(SRC_WH, 1), picture(TGT_WH, 2)
    src.save(folder / "src.png")
    tgt.save(folder / "tgt.png")
    return src, tgt, folder / "src.png", folder / "tgt.png"


# ---------------------------------------------------------------------------- the independent reference


def by_hand_descriptors(hf: Hyperfeatures, images: list[Image.Image]) -> torch.Tensor:
    """(B, D, R, R): PIL bilinear resize to the load size, [0, 255] → [-1, 1], raw maps, network."""
    size = hf.load_size
    batch = torch.stack([
        torch.from_numpy(np.asarray(im.resize((size, size), Image.BILINEAR), dtype=np.float32)).permute(2, 0, 1)
        / 127.5 - 1.0 for im in images])
    with torch.no_grad():
        return hf.network(hf.extractor.run(batch)).float()


def load_frame_similarities(src_desc, tgt_desc, points_xy, src_wh, load: int):
    """Cosine maps (N, L, L) of each query against the target, both maps upsampled to L × L."""
    up = lambda d: F.interpolate(d[None].float(), size=(load, load), mode="bilinear", align_corners=False)[0]
    src, tgt = F.normalize(up(src_desc), dim=0), F.normalize(up(tgt_desc), dim=0)  # (D, L, L)
    maps = []
    for x, y in points_xy:
        qx = min(max(int(np.round(x * load / src_wh[0])), 0), load - 1)  # plain scaling, then round
        qy = min(max(int(np.round(y * load / src_wh[1])), 0), load - 1)
        maps.append(torch.einsum("d,dhw->hw", src[:, qy, qx], tgt))
    return torch.stack(maps), src, tgt


def argmax_xy(sim: torch.Tensor) -> torch.Tensor:
    """(N, L, L) → (N, 2) (x, y) of each maximum: flat index = y·L + x."""
    load = sim.shape[-1]
    flat = sim.reshape(len(sim), -1).argmax(dim=1)
    return torch.stack([flat % load, flat // load], dim=1).float()


def to_target(points_load: torch.Tensor, load: int, tgt_wh) -> torch.Tensor:
    return points_load * torch.tensor([tgt_wh[0] / load, tgt_wh[1] / load])


# ---------------------------------------------------------------------------- describe


def test_describe_accepts_paths_pil_and_tensors_alike(hf, pair, tmp_path):
    src, _, src_path, _ = pair
    tensor = torch.from_numpy(np.asarray(src, dtype=np.float32) / 255).permute(2, 0, 1)  # (3, H, W) in [0, 1]
    rgba = src.copy()
    rgba.putalpha(90)  # alpha is dropped
    gray = src.convert("L")
    desc = hf.describe([src_path, src, tensor, rgba, gray, gray.convert("RGB")], batch_size=3)
    res, dim = int(hf.cfg.features.output_resolution), int(hf.cfg.aggregation.projection_dim)
    assert desc.shape == (6, dim, res, res) and desc.dtype == torch.float32 and desc.device.type == "cpu"
    for i in (1, 2, 3):
        torch.testing.assert_close(desc[i], desc[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(desc[4], desc[5], rtol=1e-4, atol=1e-4)  # grayscale → RGB
    assert (desc[4] - desc[0]).abs().max() > 1e-2  # and that is another image
    # one image per batch, and a (B, 3, H, W) tensor: the same descriptors
    single = hf.describe([src, gray], batch_size=1)
    torch.testing.assert_close(single, desc[[0, 4]], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(hf.describe(tensor[None]), desc[:1], rtol=1e-4, atol=1e-4)
    # and the descriptors of the documented preprocessing, by hand
    torch.testing.assert_close(by_hand_descriptors(hf, [src])[0], desc[0], rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------- match


def test_match_returns_target_pixels_of_the_documented_protocol(hf, pair):
    src, tgt, src_path, tgt_path = pair
    load = hf.load_size
    desc = by_hand_descriptors(hf, [src, tgt])
    sim, _, _ = load_frame_similarities(desc[0], desc[1], POINTS, SRC_WH, load)  # (N, L, L)
    expected = to_target(argmax_xy(sim), load, TGT_WH)

    got = hf.match(src_path, tgt_path, POINTS)
    assert got.shape == (len(POINTS), 2) and got.dtype == torch.float32
    # on the lattice of load-frame pixels scaled to the target (x by 72/L, y by 120/L) ...
    lattice = got / torch.tensor([TGT_WH[0] / load, TGT_WH[1] / load])
    torch.testing.assert_close(lattice, lattice.round(), rtol=0, atol=1e-3)
    # ... at a maximum of the independent similarity map (ties: any of them) ...
    picked = sim[torch.arange(len(POINTS)), lattice[:, 1].round().long(), lattice[:, 0].round().long()]
    torch.testing.assert_close(picked, sim.flatten(1).max(dim=1).values, rtol=0, atol=1e-5)
    # ... and the same point as the independent argmax
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-3)
    assert (got[:, 0] <= TGT_WH[0] - 1).all() and (got[:, 1] <= TGT_WH[1] - 1).all() and (got >= 0).all()


def test_match_image_to_itself_gives_the_points_back(hf, pair):
    src, _, _, _ = pair
    got = hf.match(src, src, POINTS)
    cell = torch.tensor([SRC_WH[0], SRC_WH[1]]) / int(hf.cfg.features.output_resolution)  # one cell, in pixels
    assert ((got - torch.tensor(POINTS)).abs() <= cell).all(), got


def test_soft_argmax_and_mutual_nn_options(hf, pair):
    src, tgt, _, _ = pair
    load = hf.load_size
    desc = by_hand_descriptors(hf, [src, tgt])
    sim, src_up, tgt_up = load_frame_similarities(desc[0], desc[1], POINTS, SRC_WH, load)
    n = len(POINTS)

    soft, flags = hf.match_mutual(src, tgt, POINTS, method="soft_argmax")
    assert soft.shape == (n, 2) and flags.shape == (n,) and flags.dtype == torch.bool
    temperature = float(hf.cfg.eval.softmax_temperature)  # the config value is the default
    weights = torch.softmax(sim.flatten(1) / temperature, dim=1)  # (N, L·L)
    lattice = torch.stack([torch.arange(load * load) % load, torch.arange(load * load) // load], 1).float()
    torch.testing.assert_close(soft, to_target(weights @ lattice, load, TGT_WH), rtol=0, atol=0.05)

    nn_points, mutual = hf.match_mutual(src, tgt, POINTS, method="mutual_nn")
    assert nn_points.shape == (n, 2) and mutual.shape == (n,) and mutual.dtype == torch.bool
    torch.testing.assert_close(nn_points, to_target(argmax_xy(sim), load, TGT_WH), rtol=0, atol=1e-3)
    # mutual: the NN back from the match lands within one descriptor cell (per axis) of the query
    pred = argmax_xy(sim).long()
    back = argmax_xy(torch.einsum("nd,dhw->nhw", tgt_up[:, pred[:, 1], pred[:, 0]].T, src_up))
    query = (torch.tensor(POINTS) * torch.tensor([load / SRC_WH[0], load / SRC_WH[1]])).round().clamp(0, load - 1)
    cell = load / int(hf.cfg.features.output_resolution)
    assert torch.equal(mutual, ((back - query).abs() <= cell).all(dim=1))
    assert torch.equal(flags, mutual)  # match_mutual's flags do not depend on the method


def test_point_outside_the_image_is_named(hf, pair):
    src, tgt, _, _ = pair
    with pytest.raises(HyperfeatError, match=r"outside the 160×96 source image.*\(1, \(160\.0, 10\.0\)\)"):
        hf.match(src, tgt, [[5.0, 5.0], [160.0, 10.0]])
    with pytest.raises(HyperfeatError, match=r"-3\.0"):
        hf.match(src, tgt, [[-3.0, 5.0]])


def test_default_temperatures_agree_with_the_config():
    from hyperfeat.correspond import matching
    from hyperfeat.eval import semantic as evaluation

    value = float(load_config().eval.softmax_temperature)
    assert matching.SOFTMAX_TEMPERATURE == value
    for fn in (matching.soft_argmax, matching.match_points, evaluation.predict_pair_points, evaluation.update_pck):
        assert inspect.signature(fn).parameters["temperature"].default == value, fn.__name__


# ---------------------------------------------------------------------------- mismatched checkpoints


def test_checkpoint_for_other_layers_or_backbone_is_refused(ckpt, tiny_backbone, tiny_cfg, tmp_path):
    with pytest.raises(CheckpointError, match="features.layers: 'all' in the checkpoint"):
        Hyperfeatures.from_checkpoint(ckpt, device="cpu", backbone=tiny_backbone,
                                      overrides=["features.layers=[[0,0],[1,1]]"])
    with pytest.raises(CheckpointError, match="trained on layers"):  # allowed by name: the network still refuses
        Hyperfeatures.from_checkpoint(ckpt, device="cpu", backbone=tiny_backbone,
                                      overrides=["features.layers=[[0,0],[1,1]]",
                                                 "checkpoint.allow_mismatch=[features.layers]"])
    other = load_config(overrides=TINY_OVERRIDES + ["backbone.model=someone/other-diffusion-model"])
    dims = [96] * 9 + [48] * 3
    layers = [(i, j) for i in range(4) for j in range(3)]
    path = tmp_path / "other.ckpt"
    save_checkpoint(path, build_network(other, dims), CheckpointMeta(other, dims, layers, [4, 2, 0]))
    with pytest.raises(CheckpointError, match="another backbone") as err:
        Hyperfeatures.from_checkpoint(path, device="cpu", backbone=tiny_backbone)
    assert "someone/other-diffusion-model" in str(err.value)


# ---------------------------------------------------------------------------- commands


def test_match_and_plot_mixing_commands_write_pngs(ckpt, pair, tmp_path, capsys):
    _, _, src_path, tgt_path = pair
    out = tmp_path / "match.png"
    assert main(["match", str(src_path), str(tgt_path), "--checkpoint", str(ckpt),
                 "--points", "10,20; 150,90", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == PNG
    printed = re.findall(r"\(([-\d.]+), ([-\d.]+)\) -> \(([-\d.]+), ([-\d.]+)\)", capsys.readouterr().out)
    assert [tuple(map(float, p[:2])) for p in printed] == [(10.0, 20.0), (150.0, 90.0)]
    for *_, u, v in printed:
        assert 0 <= float(u) <= TGT_WH[0] - 1 and 0 <= float(v) <= TGT_WH[1] - 1

    assert main(["match", str(src_path), str(tgt_path), "--checkpoint", str(ckpt), "--points", "1,2;3"]) == 2
    assert "x1,y1;x2,y2" in capsys.readouterr().err

    heat = tmp_path / "mixing.png"
    assert main(["plot-mixing", str(ckpt), "--out", str(heat)]) == 0
    assert heat.read_bytes()[:8] == PNG
    with Image.open(heat) as img:
        assert img.width >= 300 and img.height >= 300


# ---------------------------------------------------------------------------- eval.py on real data


def _eval(ckpt, backbone, data: str, out_dir, max_pairs: int, save_vis: int) -> dict:
    from hyperfeat.eval.runner import evaluate

    overrides = [f"data={data}", f"paths.data_root={DATA_ROOT}", f"paths.output_dir={out_dir}",
                 f"data.max_pairs={max_pairs}", f"eval.save_vis={save_vis}",
                 "features.load_size=128", "features.image_size=128"]
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
    hf = Hyperfeatures.from_checkpoint(ckpt, device="cpu", backbone=tiny_backbone,
                                       overrides=["features.load_size=128", "features.image_size=128"])
    src, tgt = zip(*(hf.describe_batch(torch.stack([it["source_image"], it["target_image"]])).unbind(0)
                     for it in (dataset[i] for i in range(len(dataset)))))
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
