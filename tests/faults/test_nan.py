"""NaN files: every load of weights, descriptor stores and caches checks finiteness. Weights are
refused naming the file (a NaN network maps every point to one place and still exits 0); a
store or cache entry is dropped and recomputed with a warning naming the file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hyperfeat.cli import main
from hyperfeat.errors import CheckpointError
from hyperfeat.model.pretrained import load_pretrained, save_pretrained


def test_nan_weights_in_a_saved_folder_are_refused_like_a_ckpt(tmp_path, make_tiny_checkpoint, capsys):
    from safetensors.torch import load_file, save_file

    folder = save_pretrained(tmp_path / "saved", *load_pretrained(make_tiny_checkpoint()), card=False)
    weights = folder / "model.safetensors"
    state = load_file(str(weights))
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = torch.full_like(state[name], float("nan"))
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as handle:
        metadata = handle.metadata()
    save_file(state, str(weights), metadata=metadata)
    with pytest.raises(CheckpointError, match=rf"{weights} holds non-finite \(NaN/inf\) weights in \['{name}'\]"):
        load_pretrained(folder)
    with pytest.raises(CheckpointError, match="non-finite"):
        load_pretrained(weights)  # the lone file, its header holding the config
    image = tmp_path / "i.png"
    Image.new("RGB", (16, 16), (10, 200, 30)).save(image)
    assert main(["match", str(image), str(image), "--checkpoint", str(folder), "--points", "3,4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "non-finite" in err and str(weights) in err


def test_a_nan_entry_of_the_eval_store_is_described_again(tmp_path):
    from hyperfeat.eval.store import EvalStore

    calls = []

    def describe(batch):
        calls.append(len(batch))
        return batch[:, :2, ::8, ::8] * 1.0  # (B, 2, 4, 4)

    images = torch.rand(2, 3, 32, 32)
    first = EvalStore(describe, "identity", store_dir=tmp_path)
    keys = first.add(images)
    path = first.path(keys[0])
    entry = torch.load(path, weights_only=True)
    entry["descriptors"][0, 0, 0] = float("nan")
    torch.save(entry, path)
    again = EvalStore(describe, "identity", store_dir=tmp_path)
    with pytest.warns(UserWarning, match=rf"descriptor store file {path} is unreadable .*NaN/inf"):
        desc = again.describe_all(images)
    assert again.described == 1 and bool(torch.isfinite(desc).all())
    torch.testing.assert_close(desc, describe(images))
    assert bool(torch.isfinite(torch.load(path, weights_only=True)["descriptors"]).all()), "the entry is rewritten"


def test_a_nan_video_descriptor_cache_is_recomputed(tmp_path):
    from hyperfeat.video.store import compute_descriptors

    frames = torch.rand(3, 3, 16, 16)
    calls = []

    def describe(batch):
        calls.append(len(batch))
        return batch[:, :2, ::4, ::4] + 1.0

    first = compute_descriptors(frames, describe, cache_dir=tmp_path, key="k", progress=False)
    (path,) = tmp_path.glob("*.pt")
    entry = torch.load(path, weights_only=True)
    entry["descriptors"][1] = float("nan")
    torch.save(entry, path)
    with pytest.warns(UserWarning, match=rf"descriptor cache file {path} is unreadable .*NaN/inf.*recomputing"):
        again = compute_descriptors(frames, describe, cache_dir=tmp_path, key="k", progress=False)
    assert sum(calls) == 6 and torch.equal(again, first)
    compute_descriptors(frames, describe, cache_dir=tmp_path, key="k", progress=False)
    assert sum(calls) == 6, "the recomputed entry is used next time"


def test_a_nan_memory_mapped_video_store_is_recomputed(tmp_path):
    from hyperfeat.video.run import describe_store, frame_stream
    from tests.video.test_stream import moving_scene, patch_describer, write_frames

    folder = write_frames(tmp_path / "clip", moving_scene(4))
    describer = patch_describer(f"video.cache_dir={tmp_path / 'cache'}")
    first = describe_store(describer, frame_stream(describer, folder), progress=False)
    reference = first.tensor().clone()
    path = first.path
    del first
    array = np.load(path, mmap_mode="r+")
    array[2, 0, 0, 0] = np.nan
    array.flush()
    del array
    with pytest.warns(UserWarning, match=rf"{path} is unreadable .*NaN/inf"):
        again = describe_store(describer, frame_stream(describer, folder), progress=False)
    assert torch.equal(again.tensor(), reference)


def test_a_nan_training_cache_entry_is_recomputed(tmp_path, tiny_cfg, tiny_backbone):
    from hyperfeat.model.features import FeatureExtractor
    from hyperfeat.train.cache import CacheWarning, FeatureCache

    extractor = FeatureExtractor(tiny_backbone, tiny_cfg.features)
    cache = FeatureCache(tmp_path, tiny_cfg)
    images = torch.rand(1, 3, int(tiny_cfg.features.load_size), int(tiny_cfg.features.load_size)) * 2 - 1
    first = cache.get_or_compute(images, extractor)
    (path,) = cache.dir.rglob("??/*.pt")
    entry = torch.load(path, weights_only=True)
    entry["layers"][0] = torch.full_like(entry["layers"][0], float("nan"))
    torch.save(entry, path)
    with pytest.warns(CacheWarning, match=rf"{path} is corrupt or stale .*NaN/inf"):
        again = cache.get_or_compute(images, extractor)
    assert cache.stats.recomputed == 1 and torch.equal(again, first)
