"""The public inference object (``Hyperfeatures``: describe, match, checkpoint checks), with a
tiny random backbone and a checkpoint built here.

Matching is checked against an independent computation written from the documented
convention (tests/reference.py): points are (x, y) pixels with centres at integers, frames
are rescaled by plain scaling (x·W'/W), descriptors are bilinearly upsampled
(align_corners=False) to the square load frame, and a point takes the cosine nearest neighbour
there. Source and target differ in size and aspect ratio, so a swapped x/y or a wrong scale fails.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from hyperfeat.api import Hyperfeatures
from hyperfeat.config import load_config
from hyperfeat.errors import CheckpointError, HyperfeatError
from hyperfeat.model.checkpoint import CheckpointMeta, build_network, save_checkpoint
from tests.helpers import POINTS, SRC_WH, TGT_WH, TINY_OVERRIDES, write_picture_pair
from tests.reference import (
    argmax_xy,
    by_hand_descriptors,
    load_frame_similarities,
    to_target,
)


@pytest.fixture(scope="module")
def ckpt(make_tiny_checkpoint):
    return make_tiny_checkpoint(randomise_mixing=True)  # not uniform: the heat map has a largest cell


@pytest.fixture(scope="module")
def hf(ckpt, tiny_backbone):
    return Hyperfeatures.from_checkpoint(ckpt, device="cpu", backbone=tiny_backbone)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return write_picture_pair(tmp_path_factory.mktemp("pair"))


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
        Hyperfeatures.from_checkpoint(
            ckpt, device="cpu", backbone=tiny_backbone, overrides=["features.layers=[[0,0],[1,1]]"]
        )
    with pytest.raises(CheckpointError, match="trained on layers"):  # allowed by name: the network still refuses
        Hyperfeatures.from_checkpoint(
            ckpt,
            device="cpu",
            backbone=tiny_backbone,
            overrides=["features.layers=[[0,0],[1,1]]", "checkpoint.allow_mismatch=[features.layers]"],
        )
    other = load_config(overrides=TINY_OVERRIDES + ["backbone.model=someone/other-diffusion-model"])
    dims = [96] * 9 + [48] * 3
    layers = [(i, j) for i in range(4) for j in range(3)]
    path = tmp_path / "other.ckpt"
    save_checkpoint(path, build_network(other, dims), CheckpointMeta(other, dims, layers, [4, 2, 0]))
    with pytest.raises(CheckpointError, match="another backbone") as err:
        Hyperfeatures.from_checkpoint(path, device="cpu", backbone=tiny_backbone)
    assert "someone/other-diffusion-model" in str(err.value)
