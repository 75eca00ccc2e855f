"""Raw-feature cache for training: the backbone is frozen, so each image's maps are made once.

One file per image, ``<cache_dir>/<fingerprint>/<key[:2]>/<key>.pt``, holding the raw maps
at ``train.cache_dtype`` and the key they were made for. Each layer's maps are kept at the
resolution the UNet made them, ``(S, C_l, h_l, w_l)`` (SD 1.5 at 512 px: 8², 16², 32², 64² for
up_blocks 0-3), not resized to ``output_resolution``: about 6× fewer bytes at the paper's
settings (157 MB instead of 951 MB per image in float16). A read resizes them exactly as the
extractor does (:func:`hyperfeat.model.features.resize_map`, bilinear, align_corners=False) and
returns the familiar ``(S, C, R, R)``; with ``train.cache_dtype=float32`` on a float32 backbone
that is bit for bit the extractor's output. ``train.cache_dtype=int8`` (opt-in) stores each
(timestep, channel) plane as int8 with one float32 scale (its absolute maximum / 127), half the
bytes of float16 again; benchmarks/README.md gives its measured effect on the loss. Files are
read memory-mapped (``torch.load(..., mmap=True)``), so a read touches only the pages it uses.

The key is a hash of the preprocessed image (its (3, L, L) float32 bytes) and the
*fingerprint*: every config value that decides the raw maps (:func:`feature_identity`). A
changed timestep plan, layer set, resolution, seed, backbone or compute dtype gives another
fingerprint, hence another folder, and never reads stale maps. The aggregation block and the
runtime-only feature keys (``streaming``, ``batch_size``) are not part of it: they do not
change the raw maps.

Writes go to a temporary file that is renamed into place. A file that cannot be read, or holds
another key, shape or dtype than expected, is reported with a :class:`CacheWarning` naming it,
recomputed and overwritten. The tensor bytes carry no checksum: a bit flip inside the data of a
well-formed file is not detected.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import torch
from omegaconf import DictConfig
from torch.utils.data import Dataset

from hyperfeat.errors import ConfigError
from hyperfeat.io import atomic_save, atomic_write, safe_torch_load
from hyperfeat.model.identity import (
    _features_identity,
    digest,
    feature_identity,
    image_digest,
)

CACHE_FORMAT = 2  # 1: (S, C, R, R) resized maps; 2: per-layer native maps (+ int8 scales)


CACHE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "int8": torch.int8}


INT8_READ_DTYPE = torch.float16  # what an int8 cache hands out after dequantising and resizing


def quantize_int8(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, C, h, w) float → int8 values and (S, C) float32 scales, one per (timestep, channel) plane."""
    scale = maps.float().abs().amax(dim=(-2, -1)) / 127.0  # (S, C)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(maps.float() / scale[..., None, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


def dequantize_int8(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """int8 (S, C, h, w) and (S, C) scales → float32 (S, C, h, w)."""
    return q.float() * scale.float()[..., None, None]


def entry_bytes(num_timesteps: int, channels: Sequence[int], sizes: Sequence[tuple[int, int]], dtype_name: str) -> int:
    """Bytes of one cache entry's tensors: Σ_l S·C_l·h_l·w_l values (+ S·C_l float32 scales for int8)."""
    itemsize = CACHE_DTYPES[dtype_name].itemsize
    total = 0
    for c, (h, w) in zip(channels, sizes):
        total += num_timesteps * c * h * w * itemsize
        if dtype_name == "int8":
            total += num_timesteps * c * 4
    return total


SIDES = ("source", "target")


class CacheWarning(UserWarning):
    """A cache file was unreadable or did not match its key; it is being recomputed."""


class CacheMissError(RuntimeError):
    """An image is not in the cache and no extractor was given to compute it."""


@dataclass
class CacheStats:
    """hits: read from disk; misses: absent, computed; recomputed: present but bad, computed."""

    hits: int = 0
    misses: int = 0
    recomputed: int = 0

    def reset(self) -> None:
        self.hits = self.misses = self.recomputed = 0


def _cache_dtype(cfg: DictConfig) -> torch.dtype:
    name = str(cfg.train.cache_dtype)
    if name not in CACHE_DTYPES:
        raise ConfigError(f"train.cache_dtype must be one of {', '.join(CACHE_DTYPES)}; got {name!r}")
    return CACHE_DTYPES[name]


def _extractor_mismatch(identity: dict, extractor) -> list[str]:
    """What of the extractor differs from the cache's identity (empty when it fits)."""
    wrong = []
    if str(extractor.backbone.model_id) != identity["backbone"]["model_id"]:
        wrong.append(f"backbone {extractor.backbone.model_id!r} vs {identity['backbone']['model_id']!r}")
    if str(extractor.backbone.dtype) != identity["backbone"]["compute_dtype"]:
        wrong.append(f"dtype {extractor.backbone.dtype} vs {identity['backbone']['compute_dtype']}")
    mine = _features_identity(extractor.cfg)
    for key in sorted(set(mine) | set(identity["features"])):
        if mine.get(key) != identity["features"].get(key):
            wrong.append(f"features.{key} {mine.get(key)!r} vs {identity['features'].get(key)!r}")
    return wrong


class FeatureCache:
    """Raw maps of images on disk, keyed by image content and the feature config."""

    def __init__(self, cache_dir: Optional[str | os.PathLike], cfg: DictConfig):
        self.cfg = cfg
        self.identity = {**feature_identity(cfg), "format": CACHE_FORMAT, "cache_dtype": str(_cache_dtype(cfg))}
        self.fingerprint = digest(json.dumps(self.identity, sort_keys=True), size=8)
        root = cache_dir if cache_dir is not None else cfg.train.cache_dir
        self.dir = Path(root) / self.fingerprint
        self.dtype = _cache_dtype(cfg)  # how the maps are stored
        self.read_dtype = INT8_READ_DTYPE if self.dtype == torch.int8 else self.dtype  # how they are handed out
        self.resolution = int(cfg.features.output_resolution)
        self.batch_size = int(cfg.features.batch_size)
        self.entry_shape: Optional[tuple[int, int, int, int]] = None  # (S, C, R, R), set by bind()
        self.channels: Optional[list[int]] = None  # C_l per layer, set by bind()
        self.stats = CacheStats()

    # ------------------------------------------------------------------ keys and files
    def key(self, image: torch.Tensor) -> str:
        """The entry key of a preprocessed image (3, L, L)."""
        return digest(f"{self.fingerprint}:{image_digest(image)}")

    def path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.pt"

    def bind(self, extractor) -> None:
        """Check that ``extractor`` makes what this cache holds and learn the entry shape."""
        wrong = _extractor_mismatch(self.identity, extractor)
        if wrong:
            raise ConfigError(
                f"the extractor does not match the feature cache's config ({self.dir}): " + "; ".join(wrong)
            )
        shape = (
            extractor.num_timesteps,
            extractor.total_channels,
            int(extractor.cfg.output_resolution),
            int(extractor.cfg.output_resolution),
        )
        self.entry_shape = shape
        self.channels = [int(c) for c in extractor.channels]

    # ------------------------------------------------------------------ read and write
    def _read(self, path: Path, key: str) -> torch.Tensor:
        entry = safe_torch_load(path, "feature cache entry", ValueError, mmap=True)
        if not isinstance(entry, dict) or "layers" not in entry or entry.get("format") != CACHE_FORMAT:
            raise ValueError(f"not a feature cache entry of format {CACHE_FORMAT}")
        if entry.get("key") != key or entry.get("fingerprint") != self.fingerprint:
            raise ValueError(f"holds key {entry.get('key')!r}, expected {key!r}")
        layers, scales = entry["layers"], entry.get("scales")
        if not isinstance(layers, (list, tuple)) or not layers:
            raise ValueError("holds no layer maps")
        if any(torch.is_tensor(m) and m.is_floating_point() and not bool(torch.isfinite(m).all()) for m in layers):
            raise ValueError("holds NaN/inf maps")
        if self.channels is not None and len(layers) != len(self.channels):
            raise ValueError(f"holds {len(layers)} layers, expected {len(self.channels)}")
        num_timesteps = self.entry_shape[0] if self.entry_shape is not None else layers[0].shape[0]
        for i, maps in enumerate(layers):
            if not torch.is_tensor(maps) or maps.dtype != self.dtype:
                raise ValueError(
                    f"layer {i} holds dtype {getattr(maps, 'dtype', type(maps).__name__)}, expected {self.dtype}"
                )
            want_c = self.channels[i] if self.channels is not None else maps.shape[1] if maps.ndim == 4 else -1
            if maps.ndim != 4 or maps.shape[0] != num_timesteps or maps.shape[1] != want_c:
                raise ValueError(
                    f"layer {i} holds shape {tuple(maps.shape)}, expected ({num_timesteps}, {want_c}, h, w)"
                )
        if self.dtype == torch.int8:
            if (
                not isinstance(scales, (list, tuple))
                or len(scales) != len(layers)
                or any(
                    not torch.is_tensor(sc) or tuple(sc.shape) != tuple(m.shape[:2]) for sc, m in zip(scales, layers)
                )
            ):
                raise ValueError("int8 entry without one (S, C_l) scale per layer")
        return self.assemble(layers, scales)  # (S, C, R, R)

    def assemble(self, layers: Sequence[torch.Tensor], scales: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
        """Per-layer native maps (S, C_l, h_l, w_l) → (S, C, R, R) at ``read_dtype``: each resized
        exactly as the extractor resizes (float32 arithmetic), layers concatenated in order."""
        from hyperfeat.model.features import resize_map

        out = []
        for i, maps in enumerate(layers):
            values = dequantize_int8(maps, scales[i]) if self.dtype == torch.int8 else maps.float()
            if tuple(values.shape[-2:]) != (self.resolution, self.resolution):
                values = resize_map(values, self.resolution)
            out.append(values.to(self.read_dtype))
        return torch.cat(out, dim=1)

    def lookup(self, key: str) -> Optional[torch.Tensor]:
        """The stored maps (S, C, R, R) at ``read_dtype`` (resized from the native maps), or None.

        Counts a hit, a miss (no file) or a recompute (bad file: warns naming it).
        """
        path = self.path(key)
        if not path.is_file():
            self.stats.misses += 1
            return None
        try:
            raw = self._read(path, key)
        except Exception as err:  # any load error means the file cannot be trusted
            warnings.warn(
                f"feature cache file {path} is corrupt or stale ({type(err).__name__}: {err}); recomputing it",
                CacheWarning,
                stacklevel=2,
            )
            self.stats.recomputed += 1
            return None
        self.stats.hits += 1
        return raw

    def store(self, key: str, layers: Sequence[torch.Tensor]) -> torch.Tensor:
        """Write one image's native maps, one (S, C_l, h_l, w_l) per layer, atomically; returns
        what a read gives back, (S, C, R, R) at ``read_dtype``."""
        stored, scales = [], []
        for maps in layers:
            # a copy, so that a view of a batch does not save the whole batch's storage
            maps = maps.detach().to("cpu", torch.float32, copy=True).contiguous()
            if self.dtype == torch.int8:
                q, scale = quantize_int8(maps)
                stored.append(q.contiguous())
                scales.append(scale.contiguous())
            else:
                stored.append(maps.to(self.dtype).contiguous())
        entry = {"format": CACHE_FORMAT, "key": key, "fingerprint": self.fingerprint, "layers": stored}
        if scales:
            entry["scales"] = scales
        self._write_identity()
        atomic_save(entry, self.path(key))
        return self.assemble(stored, scales or None)

    def _write_identity(self) -> None:
        """``config.json`` beside the entries: what their fingerprint stands for (once)."""
        target = self.dir / "config.json"
        if not target.is_file():
            text = json.dumps(self.identity, indent=2, sort_keys=True)
            atomic_write(target, lambda tmp: Path(tmp).write_text(text))

    # ------------------------------------------------------------------ compute
    def compute(self, images: torch.Tensor, keys: Sequence[str], extractor) -> list[torch.Tensor]:
        """Run ``extractor`` on images (B, 3, L, L) in batches and store each; returns (S, C, R, R) each."""
        self.bind(extractor)
        out = []
        for start in range(0, len(keys), self.batch_size):
            layers = extractor.run_native(images[start : start + self.batch_size])  # per layer (b, S, C_l, h, w)
            for b, k in enumerate(keys[start : start + self.batch_size]):
                out.append(self.store(k, [maps[b] for maps in layers]))
        return out

    def fetch(self, images: torch.Tensor, extractor=None) -> list[torch.Tensor]:
        """Maps of each image (S, C, R, R) at ``read_dtype``: read, or computed and stored."""
        keys = [self.key(img) for img in images]
        found: dict[str, torch.Tensor] = {}
        pending: dict[str, int] = {}  # key → index of its first image
        for i, k in enumerate(keys):
            if k in found or k in pending:
                continue
            raw = self.lookup(k)
            if raw is None:
                pending[k] = i
            else:
                found[k] = raw
        if pending:
            if extractor is None:
                raise CacheMissError(
                    f"{len(pending)} image(s) are not in the feature cache {self.dir} and no extractor was "
                    "given to compute them; fill the cache first with hyperfeat.train.cache.precompute"
                )
            todo = list(pending)
            batch = images[[pending[k] for k in todo]]  # (b, 3, L, L)
            found.update(zip(todo, self.compute(batch, todo, extractor)))
        return [found[k] for k in keys]

    def get_or_compute(self, images: torch.Tensor, extractor=None) -> torch.Tensor:
        """Raw maps (B, S, C, R, R) float32 on the CPU of images (B, 3, L, L) in [-1, 1]."""
        if extractor is not None and self.entry_shape is None:
            self.bind(extractor)
        return torch.stack(self.fetch(images, extractor)).float()  # (B, S, C, R, R)

    def get(self, image: torch.Tensor, extractor=None) -> torch.Tensor:
        """Maps (S, C, R, R) of one image (3, L, L) at ``read_dtype`` (the cache dtype; float16 for int8)."""
        return self.fetch(image[None], extractor)[0]


# ---------------------------------------------------------------------------- pair data sets


class CachedPairDataset(Dataset):
    """A pair data set whose items carry ``source_raw``/``target_raw`` (S, C, R, R) instead of images.

    The maps are at the cache's ``read_dtype``; :class:`hyperfeat.train.module.HyperfeatModule` casts them to
    float. Fill the cache with :meth:`precompute` first: a miss computes the maps in
    ``__getitem__`` only when an extractor is at hand, which DataLoader workers never have.
    """

    def __init__(self, pairs: Dataset, cache: FeatureCache, extractor=None):
        self.pairs = pairs
        self.cache = cache
        self.extractor = extractor
        if extractor is not None:
            cache.bind(extractor)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.pairs[index])
        for side in SIDES:
            if f"{side}_image" in item:
                image = item.pop(f"{side}_image")  # (3, L, L)
                item[f"{side}_raw"] = self.cache.get(image, self.extractor)  # (S, C, R, R)
        if "frame_images" in item:  # a clip (hyperfeat.data.videos.temporal.FrameClips)
            frames = item.pop("frame_images")  # (K, 3, L, L)
            item["frame_raw"] = torch.stack(self.cache.fetch(frames, self.extractor))  # (K, S, C, R, R)
        if "mirrored_home_image" in item:
            item["mirrored_home_raw"] = self.cache.get(item.pop("mirrored_home_image"), self.extractor)  # (S, C, R, R)
        return item

    def precompute(self, **kwargs) -> CacheStats:
        """Fill the cache for every image of the pairs; see :func:`precompute`."""
        return precompute(self.pairs, self.cache, self.extractor, **kwargs)

    def __getstate__(self) -> dict:
        # workers read only: the frozen backbone does not travel to them
        state = dict(self.__dict__)
        state["extractor"] = None
        return state


class FillInterrupted(Exception):
    """The cache fill stopped because ``should_stop()`` said so (SIGINT/SIGTERM during training's
    fill): the entries written so far are whole and kept; the message counts them."""


def precompute(
    dataset: Dataset,
    cache: FeatureCache,
    extractor,
    batch_size: Optional[int] = None,
    image_keys: Iterable[str] = ("source_image", "target_image", "frame_images", "mirrored_home_image"),
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    should_stop: Callable[[], bool] = lambda: False,
) -> CacheStats:
    """Fill ``cache`` for every image of ``dataset`` in one pass, ``batch_size`` images per backbone call.

    Items are dicts holding images (3, L, L) (or clips of them, (K, 3, L, L)) under those of
    ``image_keys`` they have; an image met twice is done
    once. With several processes, every rank reads every item (cheap: decoding and warping) but
    computes only the images whose key falls to it (``int(key[:8], 16) % world_size == rank``), so
    an image shared by pairs on different ranks is still computed once in all. Returns this
    pass's counts (hits: already cached; misses and recomputed: computed now). ``should_stop`` is
    asked between items: when it says so, the fill ends at once (:class:`FillInterrupted`), so Ctrl-C does not wait for the whole fill.
    """
    from tqdm.auto import tqdm

    if isinstance(dataset, CachedPairDataset):
        dataset = dataset.pairs
    cache.bind(extractor)
    batch_size = int(batch_size or cache.batch_size)
    before = CacheStats(**asdict(cache.stats))
    seen: set[str] = set()
    pending_keys: list[str] = []
    pending_images: list[torch.Tensor] = []

    def flush() -> None:
        if pending_keys:
            cache.compute(torch.stack(pending_images), list(pending_keys), extractor)
            pending_keys.clear()
            pending_images.clear()

    for index in tqdm(range(len(dataset)), desc="caching raw features", unit="pair", disable=not progress):
        if should_stop():  # the images pending in the batch are not computed: a rerun does them
            raise FillInterrupted(f"{index} of {len(dataset)} items done")
        item = dataset[index]
        images = [item[name] for name in image_keys if name in item]
        images = [img for group in images for img in (group if group.dim() == 4 else [group])]  # clips: (K, 3, L, L)
        for image in images:  # (3, L, L)
            key = cache.key(image)
            if key in seen or int(key[:8], 16) % world_size != rank:
                continue
            seen.add(key)
            if cache.lookup(key) is None:
                pending_keys.append(key)
                pending_images.append(image)
                if len(pending_keys) == batch_size:
                    flush()
    flush()
    now = cache.stats
    return CacheStats(now.hits - before.hits, now.misses - before.misses, now.recomputed - before.recomputed)


_NO_IMAGE = torch.empty(0)


def collate_cached_pairs(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch pair items with or without cached maps: ``*_raw`` stacked to (B, S, C, R, R), the
    rest as :func:`hyperfeat.data.pairs.base.collate_pairs` does."""
    from hyperfeat.data.pairs.base import collate_pairs

    if not items or "source_raw" not in items[0]:
        return collate_pairs(items)
    raw_keys = [f"{side}_raw" for side in SIDES]
    raw = {key: torch.stack([it[key] for it in items]) for key in raw_keys}  # (B, S, C, R, R)
    rest = [
        {**{k: v for k, v in it.items() if k not in raw_keys}, "source_image": _NO_IMAGE, "target_image": _NO_IMAGE}
        for it in items
    ]
    batch = collate_pairs(rest)
    del batch["source_image"], batch["target_image"]
    batch.update(raw)
    return batch
