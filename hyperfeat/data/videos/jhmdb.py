"""JHMDB: clips of frames with 15 puppet joints per frame, for keypoint propagation.

Layout (the release's own): ``Rename_Images/<action>/<clip>/%05d.png`` (numbered from 1),
``joint_positions/<action>/<clip>/joint_positions.mat`` with ``pos_img`` (2, 15, T) in
MATLAB's 1-based pixel coordinates, and optionally ``splits/<action>_test_split<k>.txt``
(lines ``<clip>.avi 1|2``; 1 = train, 2 = test).

Coordinates follow :mod:`hyperfeat.video.frames`: joints are (T, 15, 2) xy pixels with pixel
centres at integers (0-based: 1 is subtracted from ``pos_img``).

PCK: the person box of a frame is the tight box of its 15 joints, [x1, y1, x2, y2]; the
threshold at α (0.1, 0.2) is α · max(box w, box h), per frame (as in the standard JHMDB
propagation protocol of Jabri et al. / Li et al.). :func:`box_sizes` gives max(w, h).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch

from hyperfeat.data.mat import read_mat_field
from hyperfeat.data.videos.base import VideoDataset
from hyperfeat.errors import DataError
from hyperfeat.geometry import inside_image
from hyperfeat.io import PathLike, list_frames
from hyperfeat.video.frames import read_frame_files

NUM_JOINTS = 15


JOINT_NAMES = (
    "neck", "belly", "face",
    "right shoulder", "left shoulder", "right hip", "left hip",
    "right elbow", "left elbow", "right knee", "left knee",
    "right wrist", "left wrist", "right ankle", "left ankle",
)  # fmt: skip


def read_joints(path: PathLike, one_based: bool = True) -> torch.Tensor:
    """``joint_positions.mat`` → (T, 15, 2) float32 xy (0-based pixels when ``one_based``)."""
    path = Path(path)
    pos = read_mat_field(path, "pos_img", "JHMDB joint")
    if pos.ndim != 3 or pos.shape[0] != 2 or pos.shape[1] != NUM_JOINTS:
        raise DataError(f"'pos_img' in {path} has shape {pos.shape}; expected (2, {NUM_JOINTS}, T)")
    joints = torch.from_numpy(pos).permute(2, 1, 0).float()  # (T, 15, 2)
    return joints - 1.0 if one_based else joints


def person_boxes(joints: torch.Tensor) -> torch.Tensor:
    """Tight box of the joints per frame: (T, 15, 2) → (T, 4) [x1, y1, x2, y2]."""
    return torch.cat([joints.amin(dim=-2), joints.amax(dim=-2)], dim=-1)


def box_sizes(boxes: torch.Tensor) -> torch.Tensor:
    """max(box w, box h) per box: (..., 4) → (...); the PCK reference length."""
    return torch.maximum(boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1])


@dataclass
class JhmdbClip:
    """One clip: frames (T, 3, H, W) in [0, 1] at ``size``; joints (T, 15, 2) xy and boxes
    (T, 4) at the original size; ``in_frame`` (T, 15) whether each joint lies in the frame."""

    name: str
    frames: torch.Tensor
    joints: torch.Tensor
    boxes: torch.Tensor
    in_frame: torch.Tensor
    original_size: tuple[int, int]
    size: tuple[int, int]
    frame_files: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.frames.shape[0])


class JhmdbDataset(VideoDataset):
    """JHMDB clips named ``<action>/<clip>``.

    ``split``: None or ``"all"`` (every clip under ``Rename_Images``), ``"train<k>"``/``"test<k>"`` (the
    release's split files ``splits/<action>_test_split<k>.txt``, k in 1..3), or a text file
    (relative to ``root`` or absolute) listing ``<action>/<clip>`` per line. ``clips``
    restricts further; ``max_frames`` keeps the first frames only.
    """

    def __init__(
        self,
        root: PathLike,
        split: Optional[str] = None,
        clips: Optional[Sequence[str]] = None,
        max_frames: Optional[int] = None,
    ):
        self.root = Path(root)
        self.max_frames = int(max_frames) if max_frames else None
        images = self.root / "Rename_Images"
        if not images.is_dir():
            raise DataError(f"JHMDB frame folder not found: {images}")
        found = sorted(f"{a.name}/{c.name}" for a in images.iterdir() if a.is_dir() for c in a.iterdir() if c.is_dir())
        if not found:
            raise DataError(f"no JHMDB clips (<action>/<clip> folders) in {images}")
        names = found if split in (None, "all") else self._read_split(str(split))
        if clips is not None:
            missing = [c for c in clips if c not in names]
            if missing:
                raise DataError(f"JHMDB clips {missing} are not in split {split!r}; e.g. {names[:3]}")
            names = [str(c) for c in clips]
        self.clips: list[str] = names

    def _read_split(self, split: str) -> list[str]:
        if split[:-1] in ("train", "test") and split[-1:] in ("1", "2", "3"):
            wanted = "1" if split.startswith("train") else "2"
            split_files = sorted((self.root / "splits").glob(f"*_test_split{split[-1]}.txt"))
            if not split_files:
                raise DataError(f"JHMDB split files *_test_split{split[-1]}.txt not found in {self.root / 'splits'}")
            names = []
            for path in split_files:
                action = path.name[: -len(f"_test_split{split[-1]}.txt")]
                for line in path.read_text().splitlines():
                    parts = line.split()
                    if len(parts) == 2 and parts[1] == wanted:
                        names.append(f"{action}/{Path(parts[0]).stem}")
            return names
        path = Path(split) if Path(split).is_absolute() else self.root / split
        if not path.is_file():
            raise DataError(
                f"JHMDB split {split!r}: expected train<k>/test<k> (k = 1..3) or a clip list file; {path} not found"
            )
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]

    @property
    def names(self) -> list[str]:
        return self.clips

    def load(self, clip: str, frame_size: Optional[int] = None) -> JhmdbClip:
        """Frames (resized to ``frame_size`` on the longer side) and joints of one clip."""
        files = list_frames(self.root / "Rename_Images" / clip)
        joints = read_joints(self.root / "joint_positions" / clip / "joint_positions.mat")
        if len(files) != joints.shape[0]:
            warnings.warn(
                f"JHMDB clip {clip!r} has {len(files)} frames but its joint_positions.mat has "
                f"{joints.shape[0]}; using the first {min(len(files), joints.shape[0])}",
                stacklevel=2,
            )
        files = files[: min(len(files), joints.shape[0], self.max_frames or len(files))]
        joints = joints[: len(files)]
        video = read_frame_files(files, frame_size)
        in_frame = inside_image(joints, video.original_size)  # (T, 15)
        return JhmdbClip(
            name=clip,
            frames=video.frames,
            joints=joints,
            boxes=person_boxes(joints),
            in_frame=in_frame,
            original_size=video.original_size,
            size=video.size,
            frame_files=files,
        )


def jhmdb_from_config(data_cfg, split_key: str = "test_split") -> JhmdbDataset:
    """A :class:`JhmdbDataset` from the ``data`` block of the config (``configs/data/jhmdb.yaml``)."""
    clips = data_cfg.get("clips")
    return JhmdbDataset(
        data_cfg.root,
        split=data_cfg.get(split_key),
        clips=list(clips) if clips is not None else None,
        max_frames=data_cfg.get("max_frames"),
    )
