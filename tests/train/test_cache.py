"""The raw-feature cache: hits skip the backbone, keys follow image and config, bad files are redone."""

import math
import pickle
import warnings

import pytest
import torch

from hyperfeat.config import load_config
from hyperfeat.errors import ConfigError
from hyperfeat.model.features import FeatureExtractor
from hyperfeat.testing import loss_curve
from hyperfeat.train.cache import (
    CachedPairDataset,
    CacheMissError,
    CacheWarning,
    FeatureCache,
    collate_cached_pairs,
    precompute,
)
from tests.helpers import TINY_OVERRIDES


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

    def run_native(self, images):
        self.calls += 1
        self.images += images.shape[0]
        return self.inner.run_native(images)


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


@pytest.mark.parametrize(
    "name, dtype, tol", [("float16", torch.float16, 1e-3), ("float32", torch.float32, 0.0), ("int8", torch.int8, None)]
)
def test_stored_dtype_follows_config(tmp_path, extractor, images, reference, name, dtype, tol):
    cfg = cfg_with(f"train.cache_dtype={name}")
    cache = FeatureCache(tmp_path, cfg)
    out = cache.get_or_compute(images, extractor)
    entry = torch.load(cache.path(cache.key(images[0])), weights_only=True)
    assert all(maps.dtype == dtype for maps in entry["layers"])
    if tol == 0.0:  # float32: the native maps resized at read are bit for bit the extractor's output
        assert torch.equal(out, reference)
    elif tol is not None:
        torch.testing.assert_close(out, reference, rtol=tol, atol=tol)
    else:  # int8: within half a quantisation step of each (timestep, channel) plane (resizing only averages)
        step = torch.cat([sc for sc in entry["scales"]], dim=1)  # (S, C)
        assert (out[0].float() - reference[0]).abs().amax(dim=(-2, -1)).le(0.5 * step + 2e-3).all()
        assert [tuple(sc.shape) for sc in entry["scales"]] == [tuple(m.shape[:2]) for m in entry["layers"]]


def test_entries_hold_each_layer_at_its_native_resolution(tmp_path, tiny_cfg, extractor, images):
    """The UNet makes up_blocks 0-3 at 1/8, 1/4, 1/2, 1/1 of the latent side (tiny at 128 px:
    2², 4², 8², 16²; R = 32): an entry holds them so, and its bytes are what ``entry_bytes`` says."""
    from hyperfeat.train.cache import entry_bytes

    cache = FeatureCache(tmp_path, tiny_cfg)
    cache.get_or_compute(images[:1], extractor)
    entry = torch.load(cache.path(cache.key(images[0])), weights_only=True)
    latent = int(tiny_cfg.features.image_size) // 8
    sizes = [tuple(m.shape[-2:]) for m in entry["layers"]]
    expected = [(latent // 2 ** (len(set(i for i, _ in extractor.layers)) - 1 - i),) * 2 for i, _ in extractor.layers]
    assert sizes == expected, sizes
    assert [m.shape[1] for m in entry["layers"]] == list(extractor.channels)
    stored = sum(m.numel() * m.element_size() for m in entry["layers"])
    assert stored == entry_bytes(extractor.num_timesteps, extractor.channels, sizes, "float16")
    resized = torch.Size(entry_shape(extractor)).numel() * 2
    assert stored < resized / 2, (stored, resized)  # the old (S, C, R, R) entry


def test_feature_config_decides_the_key(tmp_path, tiny_cfg, images):
    base = FeatureCache(tmp_path, tiny_cfg).key(images[0])
    changed = [
        "features.save_steps=[4,0]",
        "features.seed=1",
        "features.mode=noise",
        "features.num_steps=6",
        "features.output_resolution=16",
        "features.layers=[[1,0],[3,2]]",
        "features.latent=sample",
        "features.prompt=a cat",
        "backbone.tiny_seed=1",
        "backbone.dtype=bfloat16",
        "train.cache_dtype=float32",
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


def _entry(path, key, fingerprint, layers, fmt=2):
    torch.save({"format": fmt, "key": key, "fingerprint": fingerprint, "layers": layers}, path)


def _good_layers(path):
    return torch.load(path, weights_only=True)["layers"]


def _wrong_shape(path, cache, key, shape):
    layers = _good_layers(path)
    _entry(path, key, cache.fingerprint, [m[:-1] for m in layers])  # a timestep short


def _wrong_dtype(path, cache, key, shape):
    _entry(path, key, cache.fingerprint, [m.float() for m in _good_layers(path)])


def _wrong_key(path, cache, key, shape):
    _entry(path, "0" * len(key), cache.fingerprint, _good_layers(path))


def _missing_layer(path, cache, key, shape):
    _entry(path, key, cache.fingerprint, _good_layers(path)[:-1])


def _old_format(path, cache, key, shape):
    torch.save(
        {"format": 1, "key": key, "fingerprint": cache.fingerprint, "raw": torch.zeros(shape, dtype=torch.float16)},
        path,
    )


@pytest.mark.parametrize(
    "damage", [_truncate, _garbage, _wrong_shape, _wrong_dtype, _wrong_key, _missing_layer, _old_format]
)
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
    raw = [torch.zeros(extractor.num_timesteps, c, 4, 4) for c in extractor.channels]
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
        "source_image": images[i],
        "target_image": images[j],
        "source_points": torch.rand(n, 2) * 127,
        "target_points": torch.rand(n, 2) * 127,
        "valid": torch.ones(n, dtype=torch.bool),
        "source_size": (128, 128),
        "target_size": (128, 128),
        "target_points_orig": torch.rand(n, 2) * 127,
        "target_bbox": torch.zeros(4),
        "category": "cat",
        "pair_id": f"{i}-{j}",
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
    module = HyperfeatModule.from_config(tiny_cfg, tiny_backbone)
    cached = CachedPairDataset(pairs, FeatureCache(tmp_path, tiny_cfg), module.extractor)
    cached.precompute(progress=False)
    with torch.no_grad():
        from_images = module.describe_pair(collate_pairs(pairs))
        from_cache = module.describe_pair(collate_cached_pairs([cached[0]]))
    for a, b in zip(from_images, from_cache):
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2)


def test_cached_training_gives_the_loss_curve_of_the_resized_cache(tmp_path, tiny_cfg, tiny_backbone):
    """Training on the native cache follows the curve of the former cache, which stored
    ``extractor.run`` (maps resized at extraction) at the cache dtype: the same at float32,
    within float16 rounding at float16."""
    from hyperfeat.train.module import HyperfeatModule

    g = torch.Generator().manual_seed(3)
    imgs = torch.rand(2, 3, 128, 128, generator=g) * 2 - 1
    pairs = [pair_item(imgs, 0, 1), pair_item(imgs, 1, 0)]
    module = HyperfeatModule.from_config(tiny_cfg, tiny_backbone)
    start = {k: v.clone() for k, v in module.aggregation.state_dict().items()}
    # (S, C, R, R) float32 as the former cache got them: one backbone batch of the 2 images, as precompute makes
    resized = dict(enumerate(module.extractor.run(imgs)))

    def former(dtype):
        items = [
            {
                **{k: v for k, v in it.items() if not k.endswith("_image")},
                "source_raw": resized[int(it["pair_id"][0])].to(dtype),
                "target_raw": resized[int(it["pair_id"][2])].to(dtype),
            }
            for it in pairs
        ]
        return [collate_cached_pairs([it]) for it in items]

    for name, dtype, tol in (("float32", torch.float32, 1e-6), ("float16", torch.float16, 2e-3)):
        cache = FeatureCache(tmp_path / name, cfg_with(f"train.cache_dtype={name}"))
        dataset = CachedPairDataset(pairs, cache, module.extractor)
        dataset.precompute(progress=False)
        native = [collate_cached_pairs([dataset[i]]) for i in range(len(pairs))]
        for a, b in zip(native, former(dtype)):
            if name == "float32":
                assert torch.equal(a["source_raw"], b["source_raw"]) and torch.equal(a["target_raw"], b["target_raw"])
        now, before = (
            loss_curve(module, native[:1], 3, 1e-2, start),
            loss_curve(module, former(dtype)[:1], 3, 1e-2, start),
        )
        assert now[-1] < now[0], now  # it learns
        assert now == pytest.approx(before, rel=tol, abs=tol), (name, now, before)
