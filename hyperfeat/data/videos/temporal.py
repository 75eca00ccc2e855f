"""Temporal training data: frame pairs with exact tracks, and short clips of unlabelled videos.

Two kinds of training item, both made of video frames and both read through the raw-feature
cache like the semantic pairs (:mod:`hyperfeat.train.cache`, keyed by frame content, so the
frozen backbone sees each frame once):

* :class:`TrackPairs` (supervised): item i is frames (t, t + Δ) of a clip with point tracks,
  Δ drawn in [1, ``max_delta``], as a *pair item* (:data:`hyperfeat.data.pairs.PAIR_KEYS`): the
  tracked points are the correspondences, and a point occluded (or outside the frame) in either
  frame is ``valid=False``, so it never enters the loss. The clips are the synthetic tracking
  clips of :mod:`hyperfeat.data.videos.synthetic_tracks` (exact tracks and occlusion) or any
  TAP-Vid-layout videos (:class:`hyperfeat.data.videos.tapvid.TapVidDavis`).
* :class:`FrameClips` (self-supervised): item i is ``clip_length`` frames of one video of a
  :class:`VideoFolder` (a folder of video files and/or frame folders, no labels), ``stride``
  frames apart (drawn in [1, ``max_stride``]), as ``frame_images`` (K, 3, L, L); the
  contrastive random walk (:func:`hyperfeat.train.losses.cycle_walk_loss`) trains on them.

Item i is drawn from ``rng([seed, split, i])`` alone, so it is the same every time it is read
(what the content-keyed cache needs). ``build_temporal_dataset(cfg.data, split, load_size)``
builds one from the ``data`` block (names in :data:`TEMPORAL_DATASETS`; presets
``configs/data/davis_tracks.yaml`` and ``configs/data/video_folder.yaml``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from hyperfeat.config import block_value
from hyperfeat.data.pairs.synthetic import SPLIT_CODES
from hyperfeat.data.videos.base import TrackedVideo
from hyperfeat.errors import ConfigError, DataError
from hyperfeat.geometry import inside_image, rescale_points
from hyperfeat.images import resize_for_backbone
from hyperfeat.io import FRAME_SUFFIXES, READABLE_VIDEO_SUFFIXES, PathLike


def _split_id(split: str) -> int:
    """The split's code in the item seeds, the synthetic pairs' own (``SPLIT_CODES``)."""
    if split not in SPLIT_CODES:
        raise ConfigError(f"split must be one of {', '.join(SPLIT_CODES)}; got {split!r}")
    return SPLIT_CODES[split]


def _at_least(minimum: int, why: str = "", **values: Any) -> list[int]:
    """The ``values`` as ints in their order; a ConfigError names the first one below ``minimum``."""
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < minimum:
            raise ConfigError(f"{key} must be an integer >= {minimum}{why}; got {value!r}")
    return [int(v) for v in values.values()]


def _as_numpy(value: Any) -> np.ndarray:
    return value.numpy() if torch.is_tensor(value) else np.asarray(value)


def _backbone_frame(frame: np.ndarray, load_size: int) -> torch.Tensor:
    """(H, W, 3) uint8 → (3, L, L) float32 in [-1, 1], the pair data sets' transform."""
    return resize_for_backbone(Image.fromarray(frame), load_size)


def draw_gap(rng: np.random.Generator, num_frames: int, max_gap: int, span: int = 1) -> tuple[int, int]:
    """(start, gap): gap in [1, max_gap] (cut so that ``span`` gaps fit), start such that
    ``start + span · gap`` is a frame."""
    if num_frames < span + 1:
        raise DataError(f"a clip of {num_frames} frames is too short for {span + 1} frames")
    top = max(1, min(int(max_gap), (num_frames - 1) // span))
    gap = int(rng.integers(1, top + 1))
    start = int(rng.integers(0, num_frames - span * gap))
    return start, gap


# ---------------------------------------------------------------------------------------------
# supervised: frame pairs of tracked clips


class TrackPairs(Dataset):
    """Pairs of frames (t, t + Δ) of tracked clips with their exact correspondences.

    ``clips``: :class:`~hyperfeat.data.videos.base.TrackedVideo` s; ``pairs_per_clip`` items per clip; ``max_delta``: the
    largest gap Δ; ``max_points``: keep at most this many tracks per item (the first ones).
    Items follow :data:`hyperfeat.data.pairs.PAIR_KEYS` (the target bbox is NaN: PCK by image size).
    """

    def __init__(
        self,
        clips: Sequence[TrackedVideo],
        load_size: int,
        pairs_per_clip: int = 16,
        max_delta: int = 8,
        seed: int = 0,
        split: str = "train",
        max_points: Optional[int] = None,
    ):
        if not clips:
            raise DataError("TrackPairs: no clips given")
        self.pairs_per_clip, self.max_delta = _at_least(1, pairs_per_clip=pairs_per_clip, max_delta=max_delta)
        self.clips, self.load_size, self.seed, self.split_id = list(clips), int(load_size), int(seed), _split_id(split)
        self.max_points = int(max_points) if max_points else None
        for clip in self.clips:
            frames, points, occluded = (_as_numpy(clip.frames), _as_numpy(clip.points), _as_numpy(clip.occluded))
            if (
                frames.ndim != 4
                or points.ndim != 3
                or occluded.shape != points.shape[:2]
                or points.shape[1] != frames.shape[0]
            ):
                raise DataError(
                    f"clip {clip.name!r}: expected frames (T, H, W, 3), points (N, T, 2) and occluded "
                    f"(N, T); got {frames.shape}, {points.shape} and {occluded.shape}"
                )

    def __len__(self) -> int:
        return len(self.clips) * self.pairs_per_clip

    def frames_of(self, index: int) -> tuple[int, int, int]:
        """(clip index, t, t + Δ) of item ``index``."""
        clip_index = index // self.pairs_per_clip
        rng = np.random.default_rng([self.seed, self.split_id, int(index)])
        num_frames = int(_as_numpy(self.clips[clip_index].points).shape[1])
        t, delta = draw_gap(rng, num_frames, self.max_delta)
        return clip_index, t, t + delta

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        clip_index, t, u = self.frames_of(index)
        clip = self.clips[clip_index]
        frames = _as_numpy(clip.frames)
        points = torch.as_tensor(_as_numpy(clip.points), dtype=torch.float32)  # (N, T, 2)
        occluded = torch.as_tensor(_as_numpy(clip.occluded)).bool()  # (N, T)
        if self.max_points is not None:
            points, occluded = points[: self.max_points], occluded[: self.max_points]
        size = (int(frames.shape[2]), int(frames.shape[1]))  # (W, H)
        src, tgt = points[:, t], points[:, u]  # (N, 2) original pixels
        valid = (
            ~occluded[:, t]
            & ~occluded[:, u]
            & inside_image(src, size)
            & inside_image(tgt, size)
            & torch.isfinite(src).all(1)
            & torch.isfinite(tgt).all(1)
        )
        frame = (self.load_size, self.load_size)
        return {
            "source_image": _backbone_frame(frames[t], self.load_size),  # (3, L, L)
            "target_image": _backbone_frame(frames[u], self.load_size),
            "source_points": rescale_points(src, size, frame).float(),  # (N, 2) load frame
            "target_points": rescale_points(tgt, size, frame).float(),
            "valid": valid,
            "source_size": size,
            "target_size": size,
            "target_points_orig": tgt.clone(),
            "target_bbox": torch.full((4,), float("nan")),
            "category": str(clip.name),
            "pair_id": f"{clip.name}:{t}-{u}",
        }


# ---------------------------------------------------------------------------------------------
# self-supervised: clips of a folder of videos


class VideoFolder:
    """The videos of a folder: video files (``READABLE_VIDEO_SUFFIXES``) and sub-folders of frames
    (jpg/png), sorted by name; a DataError naming the folder when it holds none, naming the file
    when one cannot be read. ``load(name)`` → frames (T, H, W, 3) uint8, the longer side at
    ``frame_size`` (None: original), the first ``max_frames`` (None: all)."""

    def __init__(
        self,
        root: PathLike,
        frame_size: Optional[int] = None,
        max_frames: Optional[int] = None,
        names: Optional[Sequence[str]] = None,
    ):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"video folder not found: {self.root}")
        entries = {
            p.name: p
            for p in sorted(self.root.iterdir())
            if (p.is_file() and p.suffix.lower() in READABLE_VIDEO_SUFFIXES)
            or (p.is_dir() and any(f.suffix.lower() in FRAME_SUFFIXES for f in p.iterdir()))
        }
        if not entries:
            raise DataError(
                f"no videos in {self.root}: expected video files ({', '.join(READABLE_VIDEO_SUFFIXES)}) "
                f"or folders of frames ({', '.join(FRAME_SUFFIXES)})"
            )
        if names is not None:
            missing = [n for n in names if n not in entries]
            if missing:
                raise DataError(f"videos {missing[:5]} are not in {self.root}; present: {sorted(entries)[:10]}")
            entries = {n: entries[n] for n in names}
        self.paths = entries
        self.names: list[str] = list(entries)
        self.frame_size = int(frame_size) if frame_size else None
        self.max_frames = int(max_frames) if max_frames else None
        self._loaded: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.names)

    def load(self, name: str) -> np.ndarray:
        """Frames (T, H, W, 3) uint8 of one video (read once, then kept)."""
        if name not in self._loaded:
            from hyperfeat.video.frames import frames_as_uint8, read_video

            video = read_video(self.paths[name], self.frame_size, self.max_frames)  # DataError names the file
            self._loaded[name] = frames_as_uint8(video.frames)
        return self._loaded[name]


class FrameClips(Dataset):
    """Clips of ``clip_length`` frames, ``stride`` apart (stride in [1, ``max_stride``]), from
    the videos of a :class:`VideoFolder`, ``clips_per_video`` items per video.

    Items: ``frame_images`` (K, 3, L, L) in [-1, 1], ``frame_indices`` (K,) long, ``video`` str;
    with ``mirrored_home`` also ``mirrored_home_image`` (3, L, L): the first frame mirrored
    left–right, where the walk ends (:func:`hyperfeat.train.losses.cycle_walk_loss`).
    """

    def __init__(
        self,
        videos: VideoFolder,
        load_size: int,
        clip_length: int = 4,
        max_stride: int = 4,
        clips_per_video: int = 8,
        seed: int = 0,
        split: str = "train",
        mirrored_home: bool = False,
    ):
        (self.clip_length,) = _at_least(2, why=" (a walk needs two frames)", clip_length=clip_length)
        self.max_stride, self.clips_per_video = _at_least(1, max_stride=max_stride, clips_per_video=clips_per_video)
        self.videos, self.load_size, self.seed, self.split_id = videos, int(load_size), int(seed), _split_id(split)
        self.mirrored_home = bool(mirrored_home)

    def __len__(self) -> int:
        return len(self.videos) * self.clips_per_video

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        name = self.videos.names[index // self.clips_per_video]
        frames = self.videos.load(name)
        rng = np.random.default_rng([self.seed, self.split_id, int(index)])
        try:
            start, stride = draw_gap(rng, len(frames), self.max_stride, span=self.clip_length - 1)
        except DataError as err:
            raise DataError(f"video {self.videos.paths[name]}: {err} (data.clip_length={self.clip_length})") from None
        picked = [start + k * stride for k in range(self.clip_length)]
        images = torch.stack([_backbone_frame(frames[i], self.load_size) for i in picked])  # (K, 3, L, L)
        item = {"frame_images": images, "frame_indices": torch.tensor(picked), "video": name}
        if self.mirrored_home:
            item["mirrored_home_image"] = images[0].flip(-1)  # (3, L, L)
        return item


def collate_clips(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch clip items: ``frame_images`` (B, K, 3, L, L) or, cached, ``frame_raw`` (B, K, S, C, R, R);
    and their ``mirrored_home_image`` (B, 3, L, L) / ``mirrored_home_raw`` (B, S, C, R, R) when present."""
    if not items:
        raise DataError("collate_clips got an empty batch")
    batch: dict[str, Any] = {}
    for key in ("frame_images", "frame_raw", "frame_indices", "mirrored_home_image", "mirrored_home_raw"):
        if key in items[0]:
            batch[key] = torch.stack([it[key] for it in items])
    batch["video"] = [it["video"] for it in items]
    return batch


# ---------------------------------------------------------------------------------------------
# from the config


def _names_split(
    names: Sequence[str], split: str, explicit: Optional[Sequence[str]], val_fraction: float, seed: int, what: str
) -> list[str]:
    """The names of ``split``: the explicit list, else a seeded hold-out of ``val_fraction`` (val/test)."""
    names = sorted(names)
    if explicit is not None:
        missing = [n for n in explicit if n not in names]
        if missing:
            raise DataError(f"{what} {missing[:5]} not found; present: {names[:10]}")
        return [str(n) for n in explicit]
    if split == "all":
        return names
    order = np.random.default_rng(seed).permutation(len(names))
    held = max(1, int(round(val_fraction * len(names)))) if len(names) > 1 else 0
    chosen = order[:held] if split in ("val", "test") else order[held:]
    return [names[i] for i in sorted(chosen)]


def davis_track_clips(data_cfg: Any, split: str) -> list:
    """The synthetic tracking clips of one split: background, object and occluder all from the
    split's DAVIS sequences (``<split>_sequences``, else a seeded ``val_fraction`` hold-out)."""
    from hyperfeat.data.videos.synthetic_tracks import davis_synthetic_clips

    root = Path(str(block_value(data_cfg, "root")))
    frames_dir = root / "JPEGImages" / "480p"
    if not frames_dir.is_dir():
        raise DataError(f"DAVIS frames not found: {frames_dir} (expected a DAVIS-2017 folder as data.root)")
    names = [p.name for p in frames_dir.iterdir() if (root / "Annotations" / "480p" / p.name).is_dir()]
    seed = int(block_value(data_cfg, "seed", 0))
    chosen = _names_split(
        names,
        split,
        block_value(data_cfg, f"{split}_sequences"),
        float(block_value(data_cfg, "val_fraction", 0.3)),
        seed,
        f"data.{split}_sequences",
    )
    size = tuple(int(v) for v in block_value(data_cfg, "size", [256, 192]))
    return list(
        davis_synthetic_clips(
            root,
            int(block_value(data_cfg, "num_clips", 8)),
            int(block_value(data_cfg, "num_frames", 24)),
            size,
            int(block_value(data_cfg, "num_points", 64)),
            seed=seed * 10 + _split_id(split),
            sequences=chosen,
        )
    )


def tapvid_track_clips(data_cfg: Any, split: str) -> list:
    """TAP-Vid-layout videos (frames loaded) of one split (``<split>_sequences`` or a hold-out)."""
    from hyperfeat.data.videos.tapvid import TapVidDavis

    davis_root = block_value(data_cfg, "davis_root")
    full = TapVidDavis(
        block_value(data_cfg, "root"),
        pickle_name=str(block_value(data_cfg, "pickle", "tapvid_davis_data_strided_32.pkl")),
        davis_root=davis_root,
        max_frames=block_value(data_cfg, "max_frames"),
    )
    chosen = _names_split(
        full.names,
        split,
        block_value(data_cfg, f"{split}_sequences"),
        float(block_value(data_cfg, "val_fraction", 0.3)),
        int(block_value(data_cfg, "seed", 0)),
        f"data.{split}_sequences",
    )
    return [full.load(name) for name in chosen]


def build_temporal_dataset(data_cfg: Any, split: str, load_size: int) -> Dataset:
    """The temporal data set of the ``data`` block for role ``split`` (train | val | test).

    ``davis_tracks``: :class:`TrackPairs` over synthetic clips made from DAVIS; ``tapvid_tracks``:
    :class:`TrackPairs` over TAP-Vid-layout tracks; ``video_folder``: :class:`FrameClips` of a
    folder of videos. ``<split>_split`` null means the role has no data (a ConfigError).
    """
    name = str(block_value(data_cfg, "name"))
    if name not in TEMPORAL_DATASETS:
        raise ConfigError(f"data.name must be one of {', '.join(TEMPORAL_DATASETS)} here; got {name!r}")
    which = block_value(data_cfg, f"{split}_split")
    if which is None:
        raise ConfigError(
            f"data.{split}_split is null for data set {name!r}: it has no {split} data here; "
            f"set data.{split}_split (train | val | test | all)"
        )
    which = str(which)
    seed = int(block_value(data_cfg, "seed", 0))
    if name == "video_folder":
        root = block_value(data_cfg, "root")
        everything = VideoFolder(root)
        chosen = _names_split(
            everything.names,
            which,
            block_value(data_cfg, f"{split}_videos"),
            float(block_value(data_cfg, "val_fraction", 0.2)),
            seed,
            f"data.{split}_videos",
        )
        videos = VideoFolder(
            root, block_value(data_cfg, "frame_size"), block_value(data_cfg, "max_frames"), names=chosen
        )
        return FrameClips(
            videos,
            load_size,
            int(block_value(data_cfg, "clip_length", 4)),
            int(block_value(data_cfg, "max_stride", 4)),
            int(block_value(data_cfg, "clips_per_video", 8)),
            seed,
            which,
            bool(block_value(data_cfg, "mirrored_home", False)),
        )
    clips = TEMPORAL_DATASETS[name](data_cfg, which)
    return TrackPairs(
        clips,
        load_size,
        int(block_value(data_cfg, "pairs_per_clip", 16)),
        int(block_value(data_cfg, "max_delta", 8)),
        seed,
        which,
        block_value(data_cfg, "max_points"),
    )


TEMPORAL_DATASETS = {"davis_tracks": davis_track_clips, "tapvid_tracks": tapvid_track_clips, "video_folder": None}
CLIP_DATASETS = ("video_folder",)  # items are clips (collate_clips), not pairs
