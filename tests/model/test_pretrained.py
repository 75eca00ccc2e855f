"""Shareable weights: save_pretrained → from_pretrained, lone safetensors files, the published
reference networks by name from a pre-filled Hugging Face cache, hub ids, push_to_hub, and the
offline behaviour. Never touches the network: HF_HUB_OFFLINE is set (conftest), and where a test
needs "online but unreachable" the hub address is a closed local port."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hyperfeat import hub
from hyperfeat.api import Hyperfeatures
from hyperfeat.config import load_config
from hyperfeat.errors import BackboneError, CheckpointError
from hyperfeat.model import pretrained
from tests.reference import functional_aggregation

SD15_DIMS = [1280] * 6 + [640] * 3 + [320] * 3
SD15_LABELS = [49, 45, 40, 35, 30, 25, 20, 15, 10, 5, 0]
IMAGES = torch.rand(2, 3, 90, 120, generator=torch.Generator().manual_seed(3))  # (B, 3, H, W) in [0, 1]


@pytest.fixture(scope="module")
def tiny_hf(make_tiny_checkpoint, tiny_backbone):
    path = make_tiny_checkpoint(seed=1, randomise_mixing=True)
    return Hyperfeatures.from_checkpoint(path, backbone=tiny_backbone), path


@pytest.fixture(scope="module")
def expected(tiny_hf):
    """The descriptors of IMAGES by the original network."""
    return tiny_hf[0].describe(IMAGES)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_hf):
    hf, _ = tiny_hf
    folder = tmp_path_factory.mktemp("export") / "model"
    hf.save_pretrained(folder, metrics={"val/pck@0.1": 0.5})
    return folder


def test_round_trip_gives_identical_descriptors(tiny_hf, saved, tiny_backbone, expected):
    hf, _ = tiny_hf
    assert sorted(p.name for p in saved.iterdir()) == [
        "README.md",
        "config.json",
        "mixing_weights.png",
        "model.safetensors",
    ]
    again = Hyperfeatures.from_pretrained(saved, backbone=tiny_backbone)
    assert torch.equal(expected, again.describe(IMAGES))
    # the weights are the network's own parameters, stored under their own names
    state = load_file(str(saved / "model.safetensors"))
    assert state.keys() == hf.network.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in hf.network.state_dict().items())


def test_config_json_and_card(saved, tiny_hf):
    hf, _ = tiny_hf
    record = json.loads((saved / "config.json").read_text())
    assert record["format"] == "hyperfeat"
    assert record["save_steps"] == [4, 2, 0] and record["feature_dims"] == hf.network.feature_dims
    assert record["config"]["backbone"]["model"] == "tiny"
    assert "paths" not in record["config"]  # no paths of the machine that wrote it
    assert "/" not in record["config"]["data"]["root"]
    assert record["metrics"] == {"val/pck@0.1": 0.5}
    card = (saved / "README.md").read_text()
    assert "library_name: hyperfeat" in card and "![mixing weights](mixing_weights.png)" in card
    assert "timestep labels [4, 2, 0]" in card and "val/pck@0.1 | 0.5" in card
    assert (saved / "mixing_weights.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_lone_safetensors_file_and_every_checkpoint_form(saved, tiny_hf, tmp_path):
    hf, ckpt = tiny_hf
    lone = tmp_path / "weights.safetensors"
    lone.write_bytes((saved / "model.safetensors").read_bytes())  # no config.json beside it: the header has it
    expected = hf.network.state_dict()
    for spec in (ckpt, saved, saved / "model.safetensors", lone):
        network, meta = pretrained.load_pretrained(spec)  # the one reader every command uses
        assert meta.save_steps == [4, 2, 0]
        assert all(torch.equal(network.state_dict()[k], v) for k, v in expected.items()), spec


def test_bad_folders_and_names_are_clear_errors(tmp_path, saved):
    with pytest.raises(CheckpointError, match="missing config.json, model.safetensors"):
        pretrained.load_pretrained(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((saved / "config.json").read_text())
    (broken / "model.safetensors").write_bytes((saved / "model.safetensors").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt or not a safetensors file"):
        pretrained.load_pretrained(broken)
    with pytest.raises(CheckpointError, match="not a published name .*dhf-sd15"):
        pretrained.load_pretrained("no-such-model")
    with pytest.raises(CheckpointError, match="checkpoint not found: checkpoints/missing.ckpt"):
        pretrained.load_pretrained("checkpoints/missing.ckpt")  # a missing file, not a hub repo


def test_a_local_path_without_its_extension_is_not_taken_for_a_hub_id(tmp_path, monkeypatch):
    """``--checkpoint checkpoints/last`` looks like owner/name; with checkpoints/ here it is a typo
    of a local path: one line naming the file it meant, and no download is tried."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "last.ckpt").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pretrained, "hub_file", lambda *a, **k: pytest.fail("a local typo reached the hub"))
    with pytest.raises(
        CheckpointError, match=r"checkpoint not found: checkpoints/last; did you mean checkpoints/last.ckpt\?"
    ):
        pretrained.load_pretrained("checkpoints/last")
    with pytest.raises(CheckpointError, match=r"the folder checkpoints is here, so this is a local path.*last.ckpt"):
        pretrained.load_pretrained("checkpoints/best")


# ---------------------------------------------------------------------------- published networks by name


def published_state(dims, steps, d=384, seed=0):
    """The reference's parameter names with random values (built without hyperfeat code)."""
    g = torch.Generator().manual_seed(seed)
    state = {"mixing_weights": torch.randn(len(dims) * steps, generator=g)}
    for l, c in enumerate(dims):
        shapes = {
            "conv1": (d // 4, c, 1, 1),
            "conv2": (d // 4, d // 4, 3, 3),
            "conv3": (d, d // 4, 1, 1),
            "shortcut": (d, c, 1, 1),
        }
        for name, shape in shapes.items():
            state[f"bottleneck_layers.{l}.0.{name}.weight"] = torch.randn(shape, generator=g) * 0.05
            state[f"bottleneck_layers.{l}.0.{name}.norm.weight"] = 1 + 0.1 * torch.randn(shape[0], generator=g)
            state[f"bottleneck_layers.{l}.0.{name}.norm.bias"] = 0.1 * torch.randn(shape[0], generator=g)
    state["logit_scale"] = torch.tensor(2.659)
    return state


def fill_hf_cache(cache: Path, repo_id: str, files: dict[str, bytes], commit: str = "0" * 40) -> Path:
    """The Hugging Face cache layout hf_hub_download reads offline: refs/main → snapshots/<commit>/…"""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    for name, data in files.items():
        target = repo / "snapshots" / commit / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return repo / "snapshots" / commit


@pytest.fixture(scope="module")
def sd15_published(tmp_path_factory):
    """A published-format dhf-sd15 file (SD 1.5 shapes) in a pre-filled HF cache."""
    root = tmp_path_factory.mktemp("hub")
    state = published_state(SD15_DIMS, len(SD15_LABELS))
    blob = root / "aggregation_network.pt"
    config = {
        "save_timestep": SD15_LABELS,
        "num_timesteps": 50,
        "projection_dim": 384,
        "output_resolution": 64,
        "model_id": "runwayml/stable-diffusion-v1-5",
    }
    torch.save({"step": 5000, "config": config, "aggregation_network": state, "optimizer_state_dict": {}}, blob)
    cache = root / "hf_cache"
    entry = pretrained.OFFICIAL["dhf-sd15"]
    fill_hf_cache(cache, entry.repo_id, {entry.filename: blob.read_bytes()})
    return cache, state


def test_published_network_loads_by_name_offline(sd15_published, tmp_path, monkeypatch):
    cache, state = sd15_published
    monkeypatch.setenv("HYPERFEAT_CACHE", str(tmp_path / "converted"))
    network, meta = pretrained.load_pretrained("dhf-sd15", cache_dir=cache)
    assert meta.save_steps == SD15_LABELS and meta.feature_dims == SD15_DIMS
    assert meta.config.backbone.model == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert int(meta.config.features.num_steps) == 50 and str(meta.config.features.mode) == "inversion"
    # the descriptors are those of the published parameters, computed independently
    raw = torch.randn(1, len(SD15_LABELS), sum(SD15_DIMS), 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(network(raw), functional_aggregation(state, SD15_DIMS, raw), atol=1e-4, rtol=1e-4)
    # converted once: the second load reads the cached safetensors folder, no conversion
    converted = list((tmp_path / "converted" / "official").iterdir())
    assert len(converted) == 1 and (converted[0] / "model.safetensors").is_file()
    assert "g-luo/diffusion-hyperfeatures" in (converted[0] / "README.md").read_text()

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr("hyperfeat.model.convert.convert_official", no_conversion)
    again, _ = pretrained.load_pretrained("dhf-sd15", cache_dir=cache)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in network.state_dict().items())


def test_published_name_missing_from_cache_offline_says_how_to_download(tmp_path):
    start = time.monotonic()
    with pytest.raises(CheckpointError) as info:
        pretrained.load_pretrained("dhf-sd21", cache_dir=tmp_path)
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert "HF_HUB_OFFLINE is set" in message
    assert "set HF_HUB_OFFLINE=1" not in message  # it is set: no advice to set it again
    assert "`hf download g-luo/diffusion-hyperfeatures weights/aggregation_network_sdv2-1.pt`" in message


def test_hub_id_from_prefilled_cache(saved, tiny_backbone, tmp_path, expected):
    files = {name: (saved / name).read_bytes() for name in ("config.json", "model.safetensors", "README.md")}
    fill_hf_cache(tmp_path, "someone/tiny-dhf", files)
    loaded = Hyperfeatures.from_pretrained("someone/tiny-dhf", cache_dir=tmp_path, backbone=tiny_backbone)
    assert torch.equal(loaded.describe(IMAGES), expected)


@pytest.fixture()
def unreachable_hub(monkeypatch):
    """Online mode, but the hub address is a closed local port: the probe fails at once."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    hub.forget_probe()
    yield
    hub.forget_probe()


def test_unreachable_hub_is_detected_fast_with_an_accurate_message(unreachable_hub, tmp_path):
    start = time.monotonic()
    with pytest.raises(CheckpointError) as info:
        pretrained.load_pretrained("someone/not-cached", cache_dir=tmp_path)
    message = str(info.value)
    assert "cannot be reached" in message and "127.0.0.1:9" in message
    assert "`hf download someone/not-cached config.json`" in message
    assert "set HF_HUB_OFFLINE=1 to skip the network check" in message  # not set here: worth saying
    assert "does not appear to have a file named" not in message
    with pytest.raises(BackboneError) as info:  # the backbone download takes the same probe (done once)
        from hyperfeat.model.backbone import load_backbone

        load_backbone(load_config(overrides=["backbone.model=someone/no-such-sd", "backbone.device=cpu"]))
    assert "cannot be reached" in str(info.value) and "`hf download someone/no-such-sd`" in str(info.value)
    assert time.monotonic() - start < 10


def test_cuda_on_cpu_only_build_says_how_to_install(monkeypatch):
    from hyperfeat.model.backbone import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(BackboneError) as info:
        resolve_device("cuda")
    message = str(info.value)
    assert "\n" not in message and "CPU-only build" in message and "pip install torch --index-url" in message
    monkeypatch.setattr(torch.version, "cuda", "12.6")  # a CUDA build on a machine without a GPU
    with pytest.raises(BackboneError, match="no CUDA device is visible"):
        resolve_device("cuda:0")
    assert resolve_device("cpu").type == "cpu"


def test_push_to_hub_uploads_a_loadable_folder(tiny_hf, monkeypatch, tiny_backbone, expected):
    hf, _ = tiny_hf
    calls = {}

    def fake_create_repo(repo_id, **kwargs):
        calls["create"] = (repo_id, kwargs)

    def fake_upload_folder(repo_id, folder_path, **kwargs):
        calls["files"] = sorted(p.name for p in Path(folder_path).iterdir())
        calls["loaded"] = Hyperfeatures.from_pretrained(folder_path, backbone=tiny_backbone).describe(IMAGES)
        return "commit"

    monkeypatch.setattr("huggingface_hub.create_repo", fake_create_repo)
    monkeypatch.setattr("huggingface_hub.upload_folder", fake_upload_folder)
    assert hf.push_to_hub("someone/tiny-dhf", private=True) == "commit"
    assert calls["create"][0] == "someone/tiny-dhf" and calls["create"][1]["private"] is True
    assert calls["files"] == ["README.md", "config.json", "mixing_weights.png", "model.safetensors"]
    assert torch.equal(calls["loaded"], expected)


def test_export_command(tiny_hf, tmp_path, tiny_backbone, capsys, expected):
    from hyperfeat.cli import main

    hf, ckpt = tiny_hf
    assert main(["export", str(ckpt), str(tmp_path / "out")]) == 0
    assert "wrote" in capsys.readouterr().out
    again = Hyperfeatures.from_pretrained(tmp_path / "out", backbone=tiny_backbone)
    assert torch.equal(again.describe(IMAGES), expected)
    assert main(["export", str(tmp_path / "missing.ckpt"), str(tmp_path / "x")]) == 2


def test_export_card_carries_headline_scores_data_backbone_and_steps(tiny_hf, tmp_path):
    """``export --metrics eval.json``: the card names the headline scores with the data set, task
    and backbone they were measured on (not every per-category number), and the training steps."""
    import json

    from hyperfeat.cli import main

    _, ckpt = tiny_hf
    record = torch.load(ckpt, weights_only=False)
    record["global_step"] = 1234
    trained = tmp_path / "trained.ckpt"
    torch.save(record, trained)
    metrics = tmp_path / "eval.json"
    metrics.write_text(
        json.dumps(
            {
                "method": "hyperfeatures",
                "task": "semantic",
                "data": "spair",
                "backbone": "tiny",
                "results": {"pck_bbox@0.1": 0.61, "cat/cat/pck_bbox@0.1": 0.7, "num_pairs": 360},
            }
        )
    )
    assert main(["export", str(trained), str(tmp_path / "out"), "--metrics", str(metrics)]) == 0
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| pck_bbox@0.1 (data spair, task semantic, backbone tiny, method hyperfeatures) | 0.61 |" in card
    assert "cat/cat" not in card and "num_pairs" not in card
    assert "exported from trained.ckpt after 1234 training steps" in card
    assert "![mixing weights](mixing_weights.png)" in card
