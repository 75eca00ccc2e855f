"""The describer contract, checked for every registered name on the tiny backbone: descriptors
(B, D, h, w) float32 on the describer's device, an identity that is JSON-able, the same for two
builds and different from every other name's, and bad input refused in one line naming it."""

from __future__ import annotations

import json

import pytest
import torch

from hyperfeat.describe import registry
from hyperfeat.describe.base import Describer
from hyperfeat.errors import ConfigError, HyperfeatError
from tests.helpers import TINY_OVERRIDES

# the tiny plan for the backbone describers, small inputs for the weight-free ones
OVERRIDES = {
    name: [*TINY_OVERRIDES, "dift.ensemble_size=1", "features.load_size=64", "raw.maps=[[4,1,0]]"]
    for name in registry.NAMES
}
OVERRIDES["pruned"] = OVERRIDES["hyperfeatures"] = []  # the checkpoint's own plan


@pytest.fixture(scope="module")
def built(make_tiny_checkpoint, tiny_backbone):
    checkpoint = make_tiny_checkpoint(randomise_mixing=True)

    def build(name):
        spec = registry.REGISTRY[name]
        return registry.build(
            name, OVERRIDES[name], checkpoint=checkpoint if spec.needs_checkpoint else None, backbone=tiny_backbone
        )

    return build


def test_every_name_has_one_home():
    assert len(set(registry.NAMES)) == len(registry.SPECS)
    assert {"hyperfeatures", "dift", "raw", "concat", "pruned", "ldm", "patches", "local-stats", "classical"} <= set(
        registry.NAMES
    )
    assert set(registry.CHECKPOINT_METHODS) == {"hyperfeatures", "pruned"}
    assert "ldm" not in registry.DENSE and set(registry.DENSE) | {"ldm"} == set(registry.NAMES)
    # the commands take their lists from here
    from hyperfeat.cli.changes import DESCRIBERS

    assert DESCRIBERS == registry.DENSE


@pytest.mark.parametrize("name", registry.DENSE)
def test_describer_contract(name, built):
    d = built(name)
    assert isinstance(d, Describer)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 40, 56, generator=g)  # (B, 3, H, W) in [0, 1], not square
    desc = d.describe(images)
    assert desc.ndim == 4 and desc.shape[0] == 2 and desc.dtype == torch.float32, desc.shape
    assert torch.isfinite(desc).all()
    batch = torch.rand(2, 3, d.load_size, d.load_size, generator=g) * 2 - 1
    assert d.describe_batch(batch.to(d.device)).device.type == d.device.type
    assert torch.allclose(
        d.describe(images[:1]), desc[:1], atol=1e-4, rtol=1e-4
    )  # one image's descriptor does not depend on the batch
    ident = d.identity()
    assert json.loads(json.dumps(ident)) == ident
    assert built(name).identity() == ident  # stable across builds
    with pytest.raises(HyperfeatError) as info:  # bad input: one line naming it
        d.describe(["no/such/image.png"])
    assert "\n" not in str(info.value) and "no/such/image.png" in str(info.value)


def test_identities_are_distinct(built):
    identities = {name: json.dumps(built(name).identity(), sort_keys=True) for name in registry.DENSE}
    assert len(set(identities.values())) == len(identities), identities


def test_matcher_matches_points(built):
    m = built("ldm")
    g = torch.Generator().manual_seed(0)
    L = m.load_size
    pair = torch.rand(2, 3, L, L, generator=g) * 2 - 1
    points = torch.tensor([[10.0, 20.0], [30.0, 40.0]])
    out = m.match(pair[0], pair[1], points)
    assert out.shape == (2, 2) and torch.isfinite(out).all()


def test_one_calling_convention_and_one_line_errors(tiny_backbone):
    with pytest.raises(ConfigError, match="method must be one of hyperfeatures, dift, raw, concat"):
        registry.build("bogus")
    with pytest.raises(ConfigError, match="method=pruned needs a trained checkpoint"):
        registry.build("pruned", TINY_OVERRIDES)
    with pytest.raises(ConfigError, match=r"dift settings \['timstep'\] are not keys of the dift block"):
        registry.build("dift", TINY_OVERRIDES, backbone=tiny_backbone, timstep=3)
    with pytest.raises(ConfigError, match="takes no keyword settings"):
        registry.build("patches", maps="all")
    with pytest.raises(ConfigError, match="--describer must be one of .*local-stats, classical; got 'ldm'"):
        registry.check_name("ldm", "--describer", dense=True)
    # keyword settings reach the name's block; a composed cfg is used as it is
    d = registry.build("dift", TINY_OVERRIDES, backbone=tiny_backbone, timestep=51, ensemble_size=2)
    assert (d.timestep, d.ensemble_size) == (51, 2)
    again = registry.build("dift", cfg=d.cfg, backbone=tiny_backbone)
    assert again.identity() == d.identity()
    raw = registry.build("raw", TINY_OVERRIDES, backbone=tiny_backbone, maps=[(4, (1, 0))])
    assert raw.maps == [(4, (1, 0))]
    assert registry.build("local-stats").load_size == 128  # the name's preset


def test_eval_and_compare_take_the_registry_names(capsys):
    from hyperfeat.cli import main

    assert main(["eval", "backbone=tiny", "method=bogus"]) == 2
    assert f"method must be one of {', '.join(registry.NAMES)}" in capsys.readouterr().err
    assert main(["eval", "backbone=tiny", "--compare", "compare.methods=[dift,bogus]"]) == 2
    assert "compare.methods must be one of" in capsys.readouterr().err
