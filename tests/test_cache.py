"""The raw-feature cache: hits skip the backbone, keys follow image and config, bad files are redone."""

import math
import pickle
import warnings

import pytest
import torch
from conftest import TINY_OVERRIDES

from hyperfeat.config import load_config
from hyperfeat.errors import ConfigError
from hyperfeat.model.features import FeatureExtractor
from hyperfeat.train.cache import (
    CachedPairDataset,
    CacheMissError,
    CacheWarning,
    FeatureCache,
    collate_cached_pairs,
    precompute,
)


class CountingExtractor:
    """Wraps an extractor and counts its backbone runs and the images they saw."""

    def __init__(self, inner: FeatureExtractor):
        self.inner = inner
        self.calls = 0
        self.images = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def run(self, images, consumer=None):
        self.calls += 1
        self.images += images.shape[0]
        return self.inner.run(images, consumer)


def cfg_with(*overrides):
    return load_config(overrides=TINY_OVERRIDES + list(overrides))


@pytest.fixture(scope="module")
def extractor(tiny_cfg, tiny_backbone):
    return FeatureExtractor(tiny_backbone, tiny_cfg.features)


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 128, 128, generator=g) * 2 - 1  # (B, 3, L, L)


@pytest.fixture(scope="module")
def reference(extractor, images):
    return extractor.run(images)  # (B, S, C, R, R) float32


def entry_shape(extractor):
    r = int(extractor.cfg.output_resolution)
    return (extractor.num_timesteps, extractor.total_channels, r, r)


def test_hit_skips_extractor_and_equals_its_output(tmp_path, tiny_cfg, extractor, images, reference):
    cache = FeatureCache(tmp_path, tiny_cfg)
    counting = CountingExtractor(extractor)
    first = cache.get_or_compute(images, counting)
    assert (counting.calls, counting.images) == (1, 2)
    assert (cache.stats.hits, cache.stats.misses) == (0, 2)
    assert first.dtype == torch.float32 and first.shape == (2,) + entry_shape(extractor)
    torch.testing.assert_close(first, reference, rtol=1e-3, atol=1e-3)  # float16 storage

    second = cache.get_or_compute(images, counting)
    assert counting.calls == 1, "a hit must not run the backbone"
    assert (cache.stats.hits, cache.stats.misses, cache.stats.recomputed) == (2, 2, 0)
    assert torch.equal(first, second)
    assert FeatureCache(tmp_path, tiny_cfg).get_or_compute(images).shape == first.shape, "hits need no extractor"


@pytest.mark.parametrize("name, dtype, tol", [("float16", torch.float16, 1e-3), ("float32", torch.float32, 1e-6)])
def test_stored_dtype_follows_config(tmp_path, extractor, images, reference, name, dtype, tol):
    cfg = cfg_with(f"train.cache_dtype={name}")
    cache = FeatureCache(tmp_path, cfg)
    out = cache.get_or_compute(images, extractor)
    entry = torch.load(cache.path(cache.key(images[0])), weights_only=True)
    assert entry["raw"].dtype == dtype and tuple(entry["raw"].shape) == entry_shape(extractor)
    torch.testing.assert_close(out, reference, rtol=tol, atol=tol)


def test_feature_config_decides_the_key(tmp_path, tiny_cfg, images):
    base = FeatureCache(tmp_path, tiny_cfg).key(images[0])
    changed = [
        "features.save_steps=[4,0]", "features.seed=1", "features.mode=noise", "features.num_steps=6",
        "features.output_resolution=16", "features.layers=[[1,0],[3,2]]", "features.latent=sample",
        "features.prompt=a cat", "backbone.tiny_seed=1", "backbone.dtype=bfloat16", "train.cache_dtype=float32",
    ]
    keys = {item: FeatureCache(tmp_path, cfg_with(item)).key(images[0]) for item in changed}
    assert base not in keys.values()
    assert len(set(keys.values())) == len(changed), "every change must give its own key"
    # what does not change the raw maps keeps the key
    for item in ("aggregation.projection_dim=256", "features.batch_size=1", "features.streaming=true", "train.lr=0.1"):
        assert FeatureCache(tmp_path, cfg_with(item)).key(images[0]) == base, item


def test_config_change_misses_and_recomputes(tmp_path, tiny_cfg, tiny_backbone, extractor, images, reference):
    FeatureCache(tmp_path, tiny_cfg).get_or_compute(images, extractor)
    cfg = cfg_with("features.num_steps=6")
    other = CountingExtractor(FeatureExtractor(tiny_backbone, cfg.features))
    cache = FeatureCache(tmp_path, cfg)
    out = cache.get_or_compute(images, other)
    assert other.images == 2 and cache.stats.misses == 2 and cache.stats.hits == 0
    assert not torch.allclose(out, reference, atol=1e-2), "another plan puts the labels at other timesteps"


def test_extractor_must_match_the_cache_config(tmp_path, tiny_cfg, tiny_backbone, images):
    other = FeatureExtractor(tiny_backbone, cfg_with("features.save_steps=[4,0]").features)
    with pytest.raises(ConfigError, match="save_steps"):
        FeatureCache(tmp_path, tiny_cfg).get_or_compute(images, other)


def test_changed_image_is_a_miss(tmp_path, tiny_cfg, extractor, images):
    cache = FeatureCache(tmp_path, tiny_cfg)
    counting = CountingExtractor(extractor)
    cache.get_or_compute(images, counting)
    edited = images.clone()
    edited[1, 0, 5, 5] += 0.01
    assert cache.key(edited[1]) != cache.key(images[1]) and cache.key(edited[0]) == cache.key(images[0])
    cache.get_or_compute(edited, counting)
    assert (counting.calls, counting.images) == (2, 3), "only the edited image is computed again"


def _truncate(path, cache, key, shape):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage(path, cache, key, shape):
    path.write_bytes(b"not a torch file")


def _entry(path, key, fingerprint, raw):
    torch.save({"format": 1, "key": key, "fingerprint": fingerprint, "raw": raw}, path)


def _wrong_shape(path, cache, key, shape):
    _entry(path, key, cache.fingerprint, torch.zeros((shape[0] - 1,) + shape[1:], dtype=torch.float16))


def _wrong_dtype(path, cache, key, shape):
    _entry(path, key, cache.fingerprint, torch.zeros(shape, dtype=torch.float32))


def _wrong_key(path, cache, key, shape):
    _entry(path, "0" * len(key), cache.fingerprint, torch.zeros(shape, dtype=torch.float16))


@pytest.mark.parametrize("damage", [_truncate, _garbage, _wrong_shape, _wrong_dtype, _wrong_key])
def test_bad_file_is_recomputed_with_a_warning(tmp_path, tiny_cfg, extractor, images, damage):
    cache = FeatureCache(tmp_path, tiny_cfg)
    counting = CountingExtractor(extractor)
    first = cache.get_or_compute(images, counting)
    key = cache.key(images[1])
    path = cache.path(key)
    damage(path, cache, key, entry_shape(extractor))

    fresh = FeatureCache(tmp_path, tiny_cfg)  # also when the shape is learnt from the extractor
    with pytest.warns(CacheWarning, match=path.name):
        again = fresh.get_or_compute(images, counting)
    assert (counting.calls, counting.images) == (2, 3), "only the bad file is recomputed"
    assert (fresh.stats.hits, fresh.stats.recomputed) == (1, 1)
    torch.testing.assert_close(again, first, rtol=1e-3, atol=1e-3)  # a batch of one, not two

    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        fresh.get_or_compute(images, counting)  # the file was overwritten with a good one
    assert counting.calls == 2 and fresh.stats.hits == 3


def test_writes_are_atomic(tmp_path, tiny_cfg, extractor, images, monkeypatch):
    cache = FeatureCache(tmp_path, tiny_cfg)
    cache.bind(extractor)
    raw = torch.zeros(entry_shape(extractor))
    key = cache.key(images[0])

    def dies_halfway(obj, f, *args, **kwargs):
        with open(f, "wb") as handle:
            handle.write(b"PK\x03\x04 half")
        raise KeyboardInterrupt

    monkeypatch.setattr("hyperfeat.io.torch.save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        cache.store(key, raw)
    assert not cache.path(key).exists(), "a write that dies leaves no entry behind"
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")], "nor a temporary file"


def pair_item(images, i, j):
    n = 3
    return {
        "source_image": images[i], "target_image": images[j],
        "source_points": torch.rand(n, 2) * 127, "target_points": torch.rand(n, 2) * 127,
        "valid": torch.ones(n, dtype=torch.bool), "source_size": (128, 128), "target_size": (128, 128),
        "target_points_orig": torch.rand(n, 2) * 127, "target_bbox": torch.zeros(4),
        "category": "cat", "pair_id": f"{i}-{j}",
    }


def test_precompute_then_dataset_reads_only(tmp_path, tiny_cfg, extractor):
    g = torch.Generator().manual_seed(1)
    imgs = torch.rand(3, 3, 128, 128, generator=g) * 2 - 1
    pairs = [pair_item(imgs, 0, 1), pair_item(imgs, 1, 2), pair_item(imgs, 2, 0)]
    cache = FeatureCache(tmp_path, tiny_cfg)
    counting = CountingExtractor(extractor)
    dataset = CachedPairDataset(pairs, cache, counting)

    stats = dataset.precompute(progress=False)
    assert (stats.misses, stats.hits) == (3, 0), "each distinct image once"
    assert counting.calls == math.ceil(3 / int(tiny_cfg.features.batch_size)) and counting.images == 3
    assert precompute(pairs, cache, counting, progress=False).hits == 3 and counting.images == 3

    item = dataset[1]
    assert "source_image" not in item and "target_image" not in item
    assert item["source_raw"].shape == entry_shape(extractor) and item["source_raw"].dtype == torch.float16
    assert torch.equal(item["target_raw"], cache.get(imgs[2]))
    batch = collate_cached_pairs([dataset[0], dataset[1]])
    assert batch["source_raw"].shape == (2,) + entry_shape(extractor)
    assert batch["source_points"].shape == (2, 3, 2) and batch["pair_id"] == ["0-1", "1-2"]
    assert "source_image" not in batch
    assert counting.images == 3, "reading items never runs the backbone"

    worker_copy = pickle.loads(pickle.dumps(dataset))
    assert worker_copy.extractor is None and torch.equal(worker_copy[2]["source_raw"], item["target_raw"])
    empty = CachedPairDataset(pairs, FeatureCache(tmp_path / "empty", tiny_cfg))
    with pytest.raises(CacheMissError, match="precompute"):
        empty[0]


def test_module_gives_the_same_descriptors_from_the_cache(tmp_path, tiny_cfg, tiny_backbone, extractor):
    from hyperfeat.data.pairs.base import collate_pairs
    from hyperfeat.train.module import HyperfeatModule

    g = torch.Generator().manual_seed(2)
    imgs = torch.rand(2, 3, 128, 128, generator=g) * 2 - 1
    pairs = [pair_item(imgs, 0, 1)]
    module = HyperfeatModule(tiny_cfg, tiny_backbone)
    cached = CachedPairDataset(pairs, FeatureCache(tmp_path, tiny_cfg), module.extractor)
    cached.precompute(progress=False)
    with torch.no_grad():
        from_images = module.describe_pair(collate_pairs(pairs))
        from_cache = module.describe_pair(collate_cached_pairs([cached[0]]))
    for a, b in zip(from_images, from_cache):
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2)
