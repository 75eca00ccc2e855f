"""Raw-map baselines against slices of `hyperfeat extract --raw` output of the same images."""

import pytest
import torch
import torch.nn.functional as F

from hyperfeat.cli import main
from hyperfeat.describe import registry
from hyperfeat.errors import ConfigError
from tests.helpers import TINY_OVERRIDES, data_dir


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    images = sorted((data_dir("spair_dhf") / "images").glob("*.jpg"))[:2]
    out = tmp_path_factory.mktemp("raw")
    assert main(["extract", *map(str, images), "--out", str(out), "--raw", *TINY_OVERRIDES]) == 0
    return images, [torch.load(out / f"{p.stem}.pt") for p in images]


def raw_slice(record, label, layer):
    s = record["save_steps"].index(label)
    n = record["layers"].index(list(layer))
    start = sum(record["layer_channels"][:n])
    return record["raw"][s, start : start + record["layer_channels"][n]]  # (C, R, R)


def close(a, b):
    return a.shape == b.shape and torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_one_map_is_its_slice(extracted, tiny_backbone):
    images, records = extracted
    d = registry.build("raw", TINY_OVERRIDES, maps=[(2, (1, 0))], backbone=tiny_backbone)
    desc = d.describe(images)
    for b, record in enumerate(records):
        assert close(desc[b], raw_slice(record, 2, (1, 0)))
        assert not close(desc[b], raw_slice(record, 4, (1, 0)))  # another label differs


def test_concatenated_maps_are_normalised_slices(extracted, tiny_backbone):
    images, records = extracted
    maps = [(4, (1, 0)), (0, (3, 2))]
    d = registry.build("raw", TINY_OVERRIDES, maps=maps, backbone=tiny_backbone)
    desc = d.describe(images)
    for b, record in enumerate(records):
        expected = torch.cat([F.normalize(raw_slice(record, label, ij), dim=0) for label, ij in maps])
        assert close(desc[b], expected)
    every = registry.build("concat", TINY_OVERRIDES, backbone=tiny_backbone).describe(images[:1])
    expected = torch.cat(
        [
            F.normalize(raw_slice(records[0], label, ij), dim=0)
            for label in records[0]["save_steps"]
            for ij in records[0]["layers"]
        ]
    )
    assert close(every[0], expected)


def test_pruned_takes_the_largest_mixing_weight(extracted, tiny_backbone, tiny_cfg, tmp_path):
    from hyperfeat.model.checkpoint import (
        CheckpointMeta,
        build_network,
        save_checkpoint,
    )
    from hyperfeat.model.features import FeatureExtractor

    images, records = extracted
    extractor = FeatureExtractor(tiny_backbone, tiny_cfg.features)
    network = build_network(tiny_cfg, extractor.channels)
    with torch.no_grad():
        network.mixing_weights.zero_()
        network.mixing_weights[1 * 12 + 7] = 3.0  # timestep index 1 (label 2), layer 7 = up_blocks[2].resnets[1]
    path = tmp_path / "p.ckpt"
    save_checkpoint(path, network, CheckpointMeta(tiny_cfg, extractor.channels, extractor.layers, [4, 2, 0]))
    d = registry.build("pruned", ["backbone=tiny"], checkpoint=path, backbone=tiny_backbone)
    assert d.maps == [(2, (2, 1))]
    assert close(d.describe(images[:1])[0], raw_slice(records[0], 2, (2, 1)))


def test_raw_bad_maps_list_valid_values(tiny_backbone):
    with pytest.raises(ConfigError, match=r"valid 0 … 4"):
        registry.build("raw", TINY_OVERRIDES, maps=[(5, (1, 0))], backbone=tiny_backbone)
    with pytest.raises(ConfigError, match=r"valid \[i, j\]: \[\(0, 0\)"):
        registry.build("raw", TINY_OVERRIDES, maps=[(4, (4, 0))], backbone=tiny_backbone)
    with pytest.raises(ConfigError, match="needs a trained checkpoint.*dift, raw, concat, ldm"):
        registry.build("pruned")
