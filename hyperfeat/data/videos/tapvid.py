"""TAP-Vid-DAVIS point tracks and TAP-Vid query sampling.

Two pickle layouts are read:

* strided (the shared subset, ``tapvid_davis_data_strided_32.pkl``): ``{"videos": [v, …]}``,
  each ``v`` a dict with ``video_idx``, ``h``, ``w`` and, per query frame ``q`` (0, 5, …),
  ``target_points[q]`` (n, T, 2) xy pixels of the 480p frames, ``occluded[q]`` (n, T) and
  ``query_points[q]`` (n, 2); the same track appears once for every strided frame where it
  is visible. No frames: they come from the DAVIS folder (``JPEGImages/480p/<seq>``), the
  sequence named by ``tapvid_index_to_sequence.txt`` (lines ``<video_idx> <sequence>``).
  Tracks are de-duplicated here into one (N, T, 2) array per video.
* official (``tapvid_davis.pkl``): ``{name: {"video": (T, H, W, 3) uint8, "points": (N, T, 2)
  xy in [0, 1], "occluded": (N, T)}}``; points are scaled to pixels, x · W and y · H.

Coordinates follow :mod:`hyperfeat.video.frames`: points (N, T, 2) xy pixels of the frames
(the given values, taken as pixel positions with centres at integers); queries (Q, 3) (t, x, y);
``occluded`` (N, T) bool, True = not visible.

Query modes, as in TAP-Vid (Doersch et al. 2022): "first" queries each track once, at its
first visible frame; "strided" queries each track at every ``stride``-th frame (0, 5, 10, …)
where it is visible.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from hyperfeat.data.videos.base import TrackedVideo, VideoDataset
from hyperfeat.errors import DataError
from hyperfeat.images import load_image
from hyperfeat.io import PathLike, safe_unpickle

QUERY_MODES = ("first", "strided")


@dataclass
class TapVidVideo(TrackedVideo):
    """One TAP-Vid video (frames as torch tensors) and its place ``index`` in the data file."""

    index: int = -1


@dataclass
class Queries:
    """Queries (Q, 3) float32 (t, x, y) and, for each, the index of its track in ``points`` (Q,)."""

    queries: torch.Tensor
    track: torch.Tensor
    mode: str

    def __len__(self) -> int:
        return int(self.queries.shape[0])

    def targets(self, points: torch.Tensor, occluded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The ground truth of each query: points (Q, T, 2) and occluded (Q, T)."""
        return points[self.track], occluded[self.track]


def sample_queries(points: torch.Tensor, occluded: torch.Tensor, mode: str = "first", stride: int = 5) -> Queries:
    """TAP-Vid queries from tracks (N, T, 2) xy and occlusion (N, T).

    "first": one query per track at its first visible frame (never-visible tracks get none);
    "strided": one query per (frame t in 0, stride, 2·stride, …; track visible at t), ordered
    by t then track.
    """
    if points.ndim != 3 or points.shape[-1] != 2 or occluded.shape != points.shape[:2]:
        raise DataError(
            f"expected points (N, T, 2) and occluded (N, T); got {tuple(points.shape)} and {tuple(occluded.shape)}"
        )
    visible = ~occluded.bool()  # (N, T)
    if mode == "first":
        track = torch.nonzero(visible.any(dim=1)).flatten()
        times = visible[track].float().argmax(dim=1)  # first True
    elif mode == "strided":
        if int(stride) < 1:
            raise DataError(f"query stride must be a positive integer; got {stride!r}")
        frames = torch.arange(0, points.shape[1], int(stride))
        t_idx, track = torch.nonzero(visible[:, frames].T, as_tuple=True)  # ordered by t, then track
        times = frames[t_idx]
    else:
        raise DataError(f"query mode must be one of {QUERY_MODES}; got {mode!r}")
    xy = points[track, times].float()  # (Q, 2)
    queries = torch.cat([times.float()[:, None], xy], dim=1)  # (Q, 3)
    return Queries(queries, track.long(), mode)


def read_index_file(path: PathLike) -> dict[int, str]:
    """``tapvid_index_to_sequence.txt`` → {video index: DAVIS sequence name}."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"TAP-Vid index file not found: {path}")
    mapping: dict[int, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[0].isdigit():
            raise DataError(f"{path} line {number}: expected '<index> <sequence>'; got {line!r}")
        mapping[int(parts[0])] = parts[1]
    return mapping


def _dedupe_strided(entry: dict, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-query-frame groups of a strided entry → unique tracks (N, T, 2) and occlusion (N, T)."""
    for key in ("target_points", "occluded"):
        if not isinstance(entry.get(key), dict):
            raise DataError(
                f"{where}: expected a dict {key!r} keyed by query frame; got {type(entry.get(key)).__name__}"
            )
    tracks: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}
    for frame in sorted(entry["target_points"]):
        points = np.asarray(entry["target_points"][frame], dtype=np.float64)
        occluded = np.asarray(entry["occluded"].get(frame), dtype=bool)
        if points.size == 0:
            continue
        if points.ndim != 3 or points.shape[-1] != 2 or occluded.shape != points.shape[:2]:
            raise DataError(
                f"{where}, query frame {frame}: target_points {points.shape} / occluded {occluded.shape}; "
                f"expected (n, T, 2) / (n, T)"
            )
        for track, occ in zip(points, occluded):
            tracks.setdefault(track.tobytes() + occ.tobytes(), (track, occ))
    if not tracks:
        raise DataError(f"{where}: no tracks")
    lengths = {t.shape[0] for t, _ in tracks.values()}
    if len(lengths) != 1:
        raise DataError(f"{where}: tracks of different lengths {sorted(lengths)}")
    return np.stack([t for t, _ in tracks.values()]), np.stack([o for _, o in tracks.values()])


class TapVidDavis(VideoDataset):
    """TAP-Vid-DAVIS videos from a pickle (either layout, see the module docstring).

    ``davis_root`` is the DAVIS-2017 folder that provides frames for the strided layout
    (default: ``<root>/../davis2017``); ``index_file`` maps video index → sequence (default:
    ``tapvid_index_to_sequence.txt`` in ``root``, else in ``davis_root``). ``sequences``
    restricts to these names; ``max_frames`` keeps the first frames only.
    """

    def __init__(
        self,
        root: PathLike,
        pickle_name: str = "tapvid_davis_data_strided_32.pkl",
        davis_root: Optional[PathLike] = None,
        index_file: Optional[PathLike] = None,
        resolution: str = "480p",
        sequences: Optional[Sequence[str]] = None,
        max_frames: Optional[int] = None,
    ):
        self.root = Path(root)
        self.pickle_path = Path(pickle_name) if Path(pickle_name).is_absolute() else self.root / pickle_name
        self.davis_root = Path(davis_root) if davis_root is not None else self.root.parent / "davis2017"
        self.resolution = resolution
        self.max_frames = int(max_frames) if max_frames else None
        self._index_file = index_file
        self._entries = self._parse(self._load_pickle())  # name → (index, points, occluded, size, frames)
        names = list(self._entries)
        if sequences is not None:
            missing = [s for s in sequences if s not in self._entries]
            if missing:
                raise DataError(f"TAP-Vid sequences {missing} are not in {self.pickle_path}; present: {names}")
            names = [str(s) for s in sequences]
        self.names: list[str] = names

    def _load_pickle(self) -> Any:
        if not self.pickle_path.is_file():
            raise DataError(f"TAP-Vid pickle not found: {self.pickle_path}")
        # numpy arrays and plain containers only: a crafted pickle cannot run code
        return safe_unpickle(self.pickle_path, "TAP-Vid pickle", DataError)

    def _index(self) -> dict[int, str]:
        if self._index_file is not None:
            return read_index_file(self._index_file)
        for folder in (self.root, self.davis_root):
            path = folder / "tapvid_index_to_sequence.txt"
            if path.is_file():
                return read_index_file(path)
        raise DataError(
            f"tapvid_index_to_sequence.txt not found in {self.root} or {self.davis_root} "
            f"(needed to name the videos of {self.pickle_path.name})"
        )

    def _parse(self, data: Any) -> dict[str, tuple]:
        where = str(self.pickle_path)
        if isinstance(data, dict) and isinstance(data.get("videos"), list):
            index = self._index()
            entries = {}
            for position, entry in enumerate(data["videos"]):
                if not isinstance(entry, dict) or "target_points" not in entry:
                    raise DataError(f"{where}: videos[{position}] is not a dict with 'target_points'")
                video_idx = int(entry.get("video_idx", position))
                if video_idx not in index:
                    raise DataError(
                        f"{where}: video_idx {video_idx} is not in the index file (indices {sorted(index)})"
                    )
                points, occluded = _dedupe_strided(entry, f"{where} videos[{position}]")
                size = (int(entry["w"]), int(entry["h"])) if "w" in entry and "h" in entry else None
                entries[index[video_idx]] = (video_idx, points, occluded, size, None)
            return entries
        if isinstance(data, dict) and data and all(isinstance(v, dict) and "points" in v for v in data.values()):
            entries = {}
            for position, (name, entry) in enumerate(data.items()):
                video = np.asarray(entry["video"]) if "video" in entry else None
                if video is None or video.ndim != 4 or video.shape[-1] != 3:
                    shape = None if video is None else video.shape
                    raise DataError(f"{where}[{name!r}]: 'video' must be (T, H, W, 3) uint8; got {shape}")
                height, width = video.shape[1:3]
                points = np.asarray(entry["points"], dtype=np.float64) * np.array([width, height])
                occluded = np.asarray(entry["occluded"], dtype=bool)
                entries[str(name)] = (position, points, occluded, (width, height), video)
            return entries
        kind = type(data).__name__
        keys = list(data)[:5] if isinstance(data, dict) else None
        raise DataError(
            f"{where}: unknown TAP-Vid pickle layout ({kind}, keys {keys}); expected {{'videos': [...]}} "
            f"(strided) or {{name: {{'video', 'points', 'occluded'}}}} (official)"
        )

    def frame_files(self, name: str, num_frames: int) -> list[Path]:
        """The first ``num_frames`` DAVIS frame files of sequence ``name``."""
        folder = self.davis_root / "JPEGImages" / self.resolution / name
        if not folder.is_dir():
            raise DataError(f"frames of TAP-Vid video {name!r} not found: {folder} (set davis_root)")
        files = sorted(folder.glob("*.jpg"))
        if len(files) < num_frames:
            raise DataError(f"TAP-Vid video {name!r} has {num_frames} frames of tracks but {folder} only {len(files)}")
        return files[:num_frames]

    def load(self, name: str, frames: bool = True) -> TapVidVideo:
        """One video; ``frames=False`` skips reading frames (``frames`` is then None)."""
        if name not in self._entries:
            raise DataError(f"TAP-Vid video {name!r} not in {self.pickle_path}; present: {list(self._entries)}")
        index, points, occluded, size, video = self._entries[name]
        num_frames = min(points.shape[1], self.max_frames or points.shape[1])
        frame_tensor = None
        if frames and video is not None:
            frame_tensor = torch.from_numpy(np.ascontiguousarray(video[:num_frames]))
        elif frames:
            files = self.frame_files(name, num_frames)
            arrays = [np.asarray(load_image(p)) for p in files]
            frame_tensor = torch.from_numpy(np.stack(arrays))  # (T, H, W, 3) uint8
            found = (int(frame_tensor.shape[2]), int(frame_tensor.shape[1]))
            if size is not None and found != size:
                raise DataError(
                    f"TAP-Vid video {name!r}: tracks are for frames of {size} (W, H) but {files[0]} is {found}"
                )
            size = found
        if size is None:
            first = self.frame_files(name, 1)[0]
            size = load_image(first).size
        return TapVidVideo(
            name=name,
            index=int(index),
            frames=frame_tensor,
            points=torch.from_numpy(points[:, :num_frames]).float(),
            occluded=torch.from_numpy(occluded[:, :num_frames]).bool(),
            size=size,
        )


def tapvid_from_config(data_cfg) -> TapVidDavis:
    """A :class:`TapVidDavis` from the ``data`` block of the config (``configs/data/tapvid.yaml``)."""
    from hyperfeat.config import base_dir

    sequences = data_cfg.get("sequences")
    davis_root = data_cfg.get("davis_root")
    if davis_root is not None and not Path(str(davis_root)).is_absolute():
        davis_root = base_dir() / str(davis_root)  # as the config does for data.root
    return TapVidDavis(
        data_cfg.root,
        pickle_name=str(data_cfg.pickle),
        davis_root=davis_root,
        resolution=str(data_cfg.resolution),
        sequences=list(sequences) if sequences is not None else None,
        max_frames=data_cfg.get("max_frames"),
    )
