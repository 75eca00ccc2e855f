"""Import of published aggregation checkpoints built here with known weights."""

import pytest
import torch

from hyperfeat.api import Hyperfeatures
from hyperfeat.cli import main
from hyperfeat.config import load_config
from hyperfeat.errors import CheckpointError
from hyperfeat.model.checkpoint import check_compatible, load_checkpoint
from hyperfeat.model.convert import convert_official
from tests.reference import functional_aggregation

DIMS = [64] * 9 + [32] * 3  # the tiny backbone's decoder channels
SAVE = [4, 2, 0]
D = 128


def published_state(seed=0, dims=DIMS, steps=len(SAVE)):
    """A state dict in the published naming, with random known values (no hyperfeat code)."""
    g = torch.Generator().manual_seed(seed)
    state = {"mixing_weights": torch.randn(len(dims) * steps, generator=g)}
    for l, c in enumerate(dims):
        shapes = {
            "conv1": (D // 4, c, 1, 1),
            "conv2": (D // 4, D // 4, 3, 3),
            "conv3": (D, D // 4, 1, 1),
            "shortcut": (D, c, 1, 1),
        }
        for name, shape in shapes.items():
            state[f"bottleneck_layers.{l}.0.{name}.weight"] = torch.randn(shape, generator=g) * 0.2
            out = shape[0]
            state[f"bottleneck_layers.{l}.0.{name}.norm.weight"] = 1 + 0.1 * torch.randn(out, generator=g)
            state[f"bottleneck_layers.{l}.0.{name}.norm.bias"] = 0.1 * torch.randn(out, generator=g)
    state["logit_scale"] = torch.tensor(2.659)
    return state


@pytest.fixture()
def official(tmp_path):
    path = tmp_path / "official.pt"
    state = published_state()
    torch.save({"aggregation_network": state, "config": {"save_timestep": SAVE, "num_timesteps": 5}}, path)
    return path, state


def test_imported_network_gives_the_published_output(official, tmp_path, tiny_cfg):
    path, state = official
    out = tmp_path / "converted.ckpt"
    assert main(["convert-official", str(path), str(out), "backbone=tiny"]) == 0
    network, meta = load_checkpoint(out)
    assert meta.save_steps == SAVE and meta.feature_dims == DIMS
    assert meta.layers == [(i, j) for i in range(4) for j in range(3)]
    raw = torch.randn(2, len(SAVE), sum(DIMS), 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(network(raw), functional_aggregation(state, DIMS, raw), rtol=1e-4, atol=1e-4)


def test_a_file_that_does_not_say_its_ddim_steps_is_converted_with_a_warning(tmp_path, capsys):
    path = tmp_path / "official.pt"
    torch.save({"aggregation_network": published_state(), "config": {"save_timestep": SAVE}}, path)
    out = tmp_path / "converted.ckpt"
    assert main(["convert-official", str(path), str(out), "backbone=tiny", "features.num_steps=5"]) == 0
    assert "does not say" not in capsys.readouterr().err, "the number was given: nothing assumed"
    assert main(["convert-official", str(path), str(out), "backbone=tiny"]) == 0
    err = capsys.readouterr().err
    assert f"warning: {path} does not say its number of DDIM steps" in err and "features.num_steps=N" in err
    assert (
        load_checkpoint(out)[1].config.features.num_steps == load_config(overrides=["backbone=tiny"]).features.num_steps
    )


def test_converted_checkpoint_fits_the_tiny_backbone(official, tmp_path, tiny_backbone):
    path, _ = official
    out = tmp_path / "converted.ckpt"
    main(["convert-official", str(path), str(out), "backbone=tiny"])
    hf = Hyperfeatures.from_checkpoint(out, backbone=tiny_backbone)
    desc = hf.describe(torch.rand(1, 3, 64, 64))
    assert desc.shape == (1, D, 32, 32)


def test_checkpoint_for_another_backbone_is_refused(official, tmp_path):
    path, _ = official
    out = tmp_path / "converted.ckpt"
    main(["convert-official", str(path), str(out), "backbone=tiny"])
    _, meta = load_checkpoint(out)
    sd15_dims = [1280] * 6 + [640] * 3 + [320] * 3
    with pytest.raises(CheckpointError, match="another backbone"):
        check_compatible(meta, meta.layers, sd15_dims, "stable-diffusion-v1-5/stable-diffusion-v1-5")
    with pytest.raises(CheckpointError, match="layers"):
        check_compatible(meta, meta.layers[:-1], DIMS[:-1], "tiny")
    with pytest.raises(CheckpointError, match="save_steps"):
        check_compatible(meta, meta.layers, meta.feature_dims, "tiny", save_steps=list(meta.save_steps)[::-1])


def test_loading_with_other_timestep_labels_is_refused_at_load(official, tiny_backbone, tmp_path):
    path, _ = official
    out = tmp_path / "converted.ckpt"
    main(["convert-official", str(path), str(out), "backbone=tiny"])
    _, meta = load_checkpoint(out)
    other = [int(s) for s in meta.save_steps][:-1]
    with pytest.raises(CheckpointError, match="save_steps"):
        Hyperfeatures.from_checkpoint(
            out, backbone=tiny_backbone, overrides=[f"features.save_steps=[{','.join(map(str, other))}]"]
        )


def test_mismatched_timesteps_and_bad_files(tmp_path):
    cfg = load_config(overrides=["backbone=tiny", "features.num_steps=5", "features.save_steps=[4,0]"])
    path = tmp_path / "official.pt"
    torch.save({"aggregation_network": published_state()}, path)
    with pytest.raises(CheckpointError, match="timesteps"):
        convert_official(path, tmp_path / "x.ckpt", cfg)
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="aggregation_network"):
        convert_official(tmp_path / "other.pt", tmp_path / "x.ckpt", cfg)
    (tmp_path / "corrupt.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="corrupt"):
        convert_official(tmp_path / "corrupt.pt", tmp_path / "x.ckpt", cfg)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.ckpt")
    with pytest.raises(CheckpointError, match="convert-official"):
        load_checkpoint(path)
