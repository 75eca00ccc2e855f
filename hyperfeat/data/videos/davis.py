"""DAVIS-2017 video object segmentation: sequences, frames and object-id masks.

Layout (the release's own): ``JPEGImages/<res>/<seq>/%05d.jpg``,
``Annotations/<res>/<seq>/%05d.png`` (palette PNGs whose pixel values are object ids,
0 = background), ``ImageSets/2017/<split>.txt`` (one sequence name per line).

Coordinates follow :mod:`hyperfeat.video.frames`: (x, y) pixels, pixel centres at integers,
sizes (W, H), masks (T, H, W) int64 object ids.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from hyperfeat.data.videos.base import VideoDataset
from hyperfeat.errors import DataError
from hyperfeat.io import PathLike
from hyperfeat.video.frames import VideoFrames, read_frame_files

VOID_ID = 255  # DAVIS marks "do not evaluate" pixels with 255 in some releases


# Sequences inherited from DAVIS-2016 that are multi-object in DAVIS-2017, but whose masks in
# the shared subset are the union of the objects (one object id). Multi-object J&F is exact
# only on the other sequences; report foreground J&F on all of them.
DAVIS_MERGED_SEQUENCES: frozenset[str] = frozenset(
    {
        "bmx-trees",
        "horsejump-high",
        "kite-surf",
        "motocross-jump",
        "paragliding-launch",
        "scooter-black",
        "soapbox",
    }
)


def multi_object_exact(sequence: str) -> bool:
    """Whether the sequence's multi-object masks are exact (not in :data:`DAVIS_MERGED_SEQUENCES`)."""
    return sequence not in DAVIS_MERGED_SEQUENCES


def read_mask(path: PathLike) -> torch.Tensor:
    """A DAVIS annotation PNG → (H, W) int64 object ids (palette indices, not colours)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"mask file not found: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode not in ("P", "L", "I", "I;16"):
                raise DataError(
                    f"mask {path} has mode {image.mode}; expected a palette (P) or grayscale PNG of object ids"
                )
            array = np.array(image, dtype=np.int64)  # (H, W)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DataError(f"cannot read mask {path}: {err} (corrupt or not an image?)") from err
    return torch.from_numpy(array)


def merge_objects(masks: torch.Tensor) -> torch.Tensor:
    """Object-id masks → foreground masks (every object becomes id 1; void stays void)."""
    merged = (masks > 0).long()
    merged[masks == VOID_ID] = VOID_ID
    return merged


def object_ids(mask: torch.Tensor) -> list[int]:
    """Object ids present in a mask, without background (0) and void (255), sorted."""
    return [int(v) for v in torch.unique(mask).tolist() if v not in (0, VOID_ID)]


@dataclass
class DavisSequence:
    """One loaded sequence.

    frames: (T, 3, H, W) in [0, 1] at ``size`` (W, H) (resized when asked); masks: (T, H0, W0)
    int64 object ids at the original size ``original_size`` (only the first frame's when the
    others are absent, e.g. test-dev); object_ids: the ids in the first frame's mask.
    """

    name: str
    frames: torch.Tensor
    masks: torch.Tensor
    object_ids: list[int]
    original_size: tuple[int, int]
    size: tuple[int, int]
    frame_files: list[Path] = field(default_factory=list)
    multi_object_exact: bool = True
    missing_masks: list[Path] = field(default_factory=list)  # annotation files of frames that have none

    def __len__(self) -> int:
        return int(self.frames.shape[0])


class DavisDataset(VideoDataset):
    """The sequences of one DAVIS-2017 split.

    ``sequences`` restricts to these names (each must be in the split); ``max_frames`` keeps
    the first frames of each sequence only (None: all).
    """

    def __init__(
        self,
        root: PathLike,
        split: str = "val",
        resolution: str = "480p",
        sequences: Optional[Sequence[str]] = None,
        max_frames: Optional[int] = None,
    ):
        self.root = Path(root)
        self.split = split
        self.resolution = resolution
        self.max_frames = int(max_frames) if max_frames else None
        if not self.root.is_dir():
            raise DataError(f"DAVIS root not found: {self.root}")
        listed = self._read_split(split)
        if sequences is not None:
            wanted = [str(s) for s in sequences]
            missing = [s for s in wanted if s not in listed]
            if missing:
                raise DataError(
                    f"DAVIS sequences {missing} are not in split {split!r} "
                    f"({self.root / 'ImageSets' / '2017' / (split + '.txt')})"
                )
            listed = wanted
        self.sequences: list[str] = listed

    def _read_split(self, split: str) -> list[str]:
        path = self.root / "ImageSets" / "2017" / f"{split}.txt"
        if not path.is_file():
            folder = path.parent
            have = sorted(p.stem for p in folder.glob("*.txt")) if folder.is_dir() else []
            raise DataError(f"DAVIS split file not found: {path}; splits present: {have or 'none'}")
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not names:
            raise DataError(f"DAVIS split file {path} lists no sequences")
        return names

    @property
    def names(self) -> list[str]:
        return self.sequences

    def frame_dir(self, sequence: str) -> Path:
        return self.root / "JPEGImages" / self.resolution / sequence

    def mask_dir(self, sequence: str) -> Path:
        return self.root / "Annotations" / self.resolution / sequence

    def frame_paths(self, sequence: str) -> list[Path]:
        """The sequence's frame files, sorted (cut to ``max_frames``)."""
        folder = self.frame_dir(sequence)
        if not folder.is_dir():
            raise DataError(f"DAVIS frames of sequence {sequence!r} not found: {folder}")
        files = sorted(folder.glob("*.jpg"))
        if not files:
            raise DataError(f"empty video: no .jpg frames in {folder}")
        return files[: self.max_frames]

    def mask_paths(self, sequence: str) -> list[Path]:
        """One annotation path per frame (the frame's stem + .png); some may not exist."""
        folder = self.mask_dir(sequence)
        return [folder / f"{p.stem}.png" for p in self.frame_paths(sequence)]

    def load(self, sequence: str, frame_size: Optional[int] = None, foreground: bool = False) -> DavisSequence:
        """Frames (resized to ``frame_size`` on the longer side) and masks of one sequence.

        ``foreground``: merge every object into id 1 (foreground J&F). Masks of all frames are
        returned when all exist, else only the first frame's (which must exist).
        """
        files = self.frame_paths(sequence)
        video: VideoFrames = read_frame_files(files, frame_size)
        mask_files = self.mask_paths(sequence)
        present = [p.is_file() for p in mask_files]
        if not present[0]:
            raise DataError(f"first-frame annotation of DAVIS sequence {sequence!r} not found: {mask_files[0]}")
        missing = [p for p, here in zip(mask_files, present) if not here]
        if missing and any(present[1:]):  # some annotations past frame 0 but not all: a damaged copy
            warnings.warn(
                f"DAVIS sequence {sequence!r}: {len(missing)} of {len(mask_files)} annotation files are "
                f"missing (e.g. {missing[0]}); only the first frame's mask is used, the sequence "
                f"cannot be scored",
                UserWarning,
                stacklevel=2,
            )
        use = mask_files if all(present) else mask_files[:1]
        masks = torch.stack([read_mask(p) for p in use])  # (T, H, W)
        mask_size = (int(masks.shape[-1]), int(masks.shape[-2]))
        if mask_size != video.original_size:
            raise DataError(
                f"DAVIS masks of {sequence!r} are {mask_size} (W, H) but its frames are {video.original_size}"
            )
        if foreground:
            masks = merge_objects(masks)
        return DavisSequence(
            name=sequence,
            frames=video.frames,
            masks=masks,
            object_ids=object_ids(masks[0]),
            original_size=video.original_size,
            size=video.size,
            frame_files=files,
            multi_object_exact=multi_object_exact(sequence),
            missing_masks=missing,
        )


def davis_from_config(data_cfg, split_key: str = "val_split") -> DavisDataset:
    """A :class:`DavisDataset` from the ``data`` block of the config (``configs/data/davis.yaml``)."""
    split = data_cfg.get(split_key)
    if split is None:
        raise DataError(f"data.{split_key} is null: no DAVIS split to read")
    sequences = data_cfg.get("sequences")
    return DavisDataset(
        data_cfg.root,
        split=str(split),
        resolution=str(data_cfg.resolution),
        sequences=list(sequences) if sequences is not None else None,
        max_frames=data_cfg.get("max_frames"),
    )
