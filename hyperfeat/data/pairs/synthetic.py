"""Synthetic pairs: an image and a randomly warped copy, with exact ground-truth points.

The warp lives in the L×L frame (L = load_size) the descriptors use: the source image is the
reference transform of a real image, (3, L, L); the target is that tensor pushed through a
homography H (rotation, isotropic scale, translation, optional mild perspective, all about the
image centre) with ``F.grid_sample`` (bilinear, black outside), after a photometric jitter
(brightness, contrast, per-channel colour gain). Target points are H applied to the source
points, so they are exactly where the pixels went. So ``target_size`` is (L, L),
``target_points_orig`` equals ``target_points`` and ``target_bbox`` is NaN (no object box).

Points: a k×k grid of cell centres (k = round(√num_points)) or ``num_points`` uniform random
points, in the source; a point whose image lands outside [0, L - 1]² is valid=False.

Determinism: item ``i`` of split ``s`` uses ``numpy.random.default_rng([seed, code(s), i])``.
Images are split once by a seeded permutation: ``val_fraction`` of them (at least one, when
there are two or more) are held out for ``val``/``test``; ``all`` uses every image. With one
image, or ``val_fraction=0``, every split uses all images (with different warps).

Images: a folder (read recursively), an explicit list of files, or procedural ones
(:mod:`hyperfeat.data.pairs.procedural`): ``images="generated"`` asks for ``generated_images`` of them
quietly; a folder that does not exist falls back to them with one :class:`DataWarning` naming
the folder (so the offline smoke preset runs on a fresh clone without the data). They are fixed
by ``seed`` and split like files. An existing but empty folder, or a missing listed file, is
still a DataError.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from hyperfeat.data.pairs.base import DataWarning, PairDataset
from hyperfeat.data.pairs.procedural import GeneratedImage, generated_images
from hyperfeat.errors import DataError
from hyperfeat.images import load_image, resize_for_backbone
from hyperfeat.io import PathLike, list_image_files

SPLIT_CODES = {"train": 0, "val": 1, "test": 2, "all": 3}


GENERATED = "generated"  # the images / root value that asks for procedural images


ImageSource = Union[Path, GeneratedImage]


@dataclass
class Warp:
    """One sampled warp: a homography of L×L pixel coordinates and a photometric jitter."""

    homography: np.ndarray  # (3, 3) source (x, y, 1) → target
    brightness: float  # multiplicative
    contrast: float  # about the image mean
    gains: np.ndarray  # (3,) per-channel colour gains


def resolve_images(
    source: Union[PathLike, Sequence[PathLike]], seed: int = 0, count: int = 24, size: int = 256
) -> list[ImageSource]:
    """The images of ``source``: ``"generated"`` → ``count`` procedural images of ``seed``; a
    folder that does not exist → the same, with one DataWarning naming it; otherwise
    :func:`list_image_files`. A missing folder *named* ``generated`` counts as the keyword (the
    config turns ``data.root: generated`` into an absolute path), so it gives no warning."""
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise DataError(f"synthetic generated_images must be a positive integer; got {count!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 16:
        raise DataError(f"synthetic generated_size must be an integer >= 16; got {size!r}")
    if isinstance(source, (str, Path)):
        folder = Path(source)
        if str(source) == GENERATED or (folder.name == GENERATED and not folder.exists()):
            return list(generated_images(count, seed, size))
        if not folder.exists():
            where = str(folder) if folder.is_absolute() else f"{folder} (resolved: {folder.resolve()})"
            warnings.warn(
                f"synthetic pairs: image folder not found: {where}; using {count} generated procedural "
                f"images ({size}x{size}, seed {seed}) instead. Point data.root at a folder of images to "
                f"train on real ones, or set data.root={GENERATED} to use generated images without this warning.",
                DataWarning,
                stacklevel=3,
            )
            return list(generated_images(count, seed, size))
    return list(list_image_files(source))


def pixel_normalizer(size: int) -> np.ndarray:
    """(3, 3) map of pixel coordinates (centres at integers) to [-1, 1] (grid_sample, align_corners=False)."""
    return np.array([[2.0 / size, 0.0, 1.0 / size - 1.0], [0.0, 2.0 / size, 1.0 / size - 1.0], [0.0, 0.0, 1.0]])


def random_homography(
    rng: np.random.Generator,
    size: int,
    rotation: float = 20.0,
    scale: Sequence[float] = (0.8, 1.2),
    translation: float = 0.1,
    perspective: float = 0.0,
) -> np.ndarray:
    """(3, 3) homography of size×size pixel coordinates: rotation ±``rotation`` degrees, scale in
    ``scale``, shift up to ``translation``·size, perspective terms up to ``perspective`` (in
    [-1, 1] units), all about the image centre."""
    theta = math.radians(rng.uniform(-rotation, rotation))
    s = rng.uniform(scale[0], scale[1])
    tx, ty = rng.uniform(-2 * translation, 2 * translation, size=2)  # [-1, 1] units: 2 = one image width
    px, py = rng.uniform(-perspective, perspective, size=2) if perspective > 0 else (0.0, 0.0)
    c, r = math.cos(theta), math.sin(theta)
    affine = np.array([[s * c, -s * r, tx], [s * r, s * c, ty], [0.0, 0.0, 1.0]])
    persp = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [px, py, 1.0]])
    norm = pixel_normalizer(size)
    return np.linalg.inv(norm) @ affine @ persp @ norm


def apply_homography(homography: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N, 2) points (x, y) → (N, 2) through a (3, 3) homography."""
    ones = np.ones((len(points), 1))
    mapped = np.concatenate([points, ones], axis=1) @ homography.T  # (N, 3)
    return mapped[:, :2] / mapped[:, 2:3]


def warp_image(image: torch.Tensor, homography: np.ndarray) -> torch.Tensor:
    """Warp a (C, S, S) image by ``homography`` (source → target pixels); black (0) outside."""
    size = image.shape[-1]
    if image.shape[-2] != size:
        raise DataError(f"warp_image expects a square image; got shape {tuple(image.shape)}")
    coords = np.arange(size, dtype=np.float64)
    ys, xs = np.meshgrid(coords, coords, indexing="ij")  # (S, S)
    target = np.stack([xs.ravel(), ys.ravel()], axis=1)  # (S*S, 2)
    source = apply_homography(np.linalg.inv(homography), target)  # (S*S, 2)
    norm = pixel_normalizer(size)
    grid = source * norm[0, 0] + norm[0, 2]  # same scale and offset on x and y
    grid = torch.from_numpy(grid.reshape(1, size, size, 2)).to(image.dtype)  # (1, S, S, 2)
    out = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[0]  # (C, S, S)


def photometric(image: torch.Tensor, warp: Warp) -> torch.Tensor:
    """Brightness, contrast and colour gains on a (3, H, W) image in [0, 1]."""
    out = image * warp.brightness
    mean = out.mean()
    out = (out - mean) * warp.contrast + mean
    out = out * torch.as_tensor(warp.gains, dtype=image.dtype)[:, None, None]
    return out.clamp(0.0, 1.0)


def draw_warp(rng: np.random.Generator, size: int, geometry: dict, jitter: dict) -> Warp:
    """A warp of size×size images: :func:`random_homography` of ``geometry`` (rotation, scale,
    translation, perspective) and the photometric ``jitter`` (brightness, contrast, color: the
    largest change of each factor from 1)."""
    homography = random_homography(rng, size, **geometry)
    return Warp(
        homography=homography,
        brightness=1.0 + rng.uniform(-jitter["brightness"], jitter["brightness"]),
        contrast=1.0 + rng.uniform(-jitter["contrast"], jitter["contrast"]),
        gains=1.0 + rng.uniform(-jitter["color"], jitter["color"], size=3),
    )


def source_points(rng: np.random.Generator, size: int, num_points: int, mode: str) -> np.ndarray:
    """(N, 2) points in a size×size frame: a k×k grid of cell centres or uniform random."""
    if mode == "grid":
        k = max(1, round(math.sqrt(num_points)))
        centres = (np.arange(k) + 0.5) * size / k - 0.5
        ys, xs = np.meshgrid(centres, centres, indexing="ij")
        return np.stack([xs.ravel(), ys.ravel()], axis=1)
    if mode == "random":
        return rng.uniform(0.0, size - 1.0, size=(num_points, 2))
    raise DataError(f"synthetic point_mode must be grid or random; got {mode!r}")


class SyntheticPairs(PairDataset):
    """Image → randomly warped copy, with exact point correspondences (module docstring).

    ``images``: a folder, a list of image files, or ``"generated"``; a missing folder falls back
    to ``generated_images`` procedural images of ``generated_size``² pixels, with a warning.
    """

    def __init__(
        self,
        images: Union[PathLike, Sequence[PathLike]],
        load_size: int,
        split: str = "train",
        *,
        seed: int = 0,
        val_fraction: float = 0.25,
        pairs_per_image: int = 10,
        num_points: int = 64,
        point_mode: str = "grid",
        rotation: float = 20.0,
        scale: Sequence[float] = (0.8, 1.2),
        translation: float = 0.1,
        perspective: float = 0.05,
        brightness: float = 0.2,
        contrast: float = 0.2,
        color: float = 0.1,
        max_pairs: Optional[int] = None,
        max_points: Optional[int] = None,
        generated_images: int = 24,
        generated_size: int = 256,
    ) -> None:
        super().__init__(load_size, max_points)
        if split not in SPLIT_CODES:
            raise DataError(f"synthetic split must be one of {', '.join(SPLIT_CODES)}; got {split!r}")
        if point_mode not in ("grid", "random"):
            raise DataError(f"synthetic point_mode must be grid or random; got {point_mode!r}")
        if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
            raise DataError(f"synthetic scale must be [min, max] with 0 < min <= max; got {list(scale)}")
        for name, value in (("pairs_per_image", pairs_per_image), ("num_points", num_points)):
            if not isinstance(value, int) or value < 1:
                raise DataError(f"synthetic {name} must be a positive integer; got {value!r}")
        if not 0.0 <= val_fraction < 1.0:
            raise DataError(f"synthetic val_fraction must be in [0, 1); got {val_fraction!r}")
        files = resolve_images(images, seed, generated_images, generated_size)
        self.images = self._split_images(files, split, seed, val_fraction)
        self.split, self.seed = split, seed
        self.pairs_per_image, self.num_points, self.point_mode = pairs_per_image, num_points, point_mode
        self.geometry = dict(rotation=rotation, scale=tuple(scale), translation=translation, perspective=perspective)
        self.jitter = dict(brightness=brightness, contrast=contrast, color=color)
        length = len(self.images) * pairs_per_image
        if max_pairs is not None:
            if int(max_pairs) < 1:
                raise DataError(f"synthetic max_pairs must be a positive integer or null; got {max_pairs!r}")
            length = min(length, int(max_pairs))
        self.length = length

    @staticmethod
    def _split_images(files: list[ImageSource], split: str, seed: int, val_fraction: float) -> list[ImageSource]:
        n = len(files)
        n_val = min(n - 1, max(1, round(val_fraction * n))) if val_fraction > 0 and n >= 2 else 0
        if split == "all" or n_val == 0:
            return files
        order = np.random.default_rng(seed).permutation(n)
        held_out = sorted(order[:n_val]) if split in ("val", "test") else sorted(order[n_val:])
        return [files[i] for i in held_out]

    def __len__(self) -> int:
        return self.length

    def rng(self, index: int) -> np.random.Generator:
        """The generator of item ``index``: fixed by (seed, split, index)."""
        return np.random.default_rng([self.seed, SPLIT_CODES[self.split], index])

    def sample_warp(self, rng: np.random.Generator) -> Warp:
        """Draw a geometric + photometric warp from ``rng``."""
        return draw_warp(rng, self.load_size, self.geometry, self.jitter)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.length:
            raise IndexError(f"synthetic pair index {index} out of range [0, {self.length})")
        path = self.images[index % len(self.images)]
        rng = self.rng(index)
        warp = self.sample_warp(rng)
        src_pts = source_points(rng, self.load_size, self.num_points, self.point_mode)  # (N, 2)
        trg_pts = apply_homography(warp.homography, src_pts)  # (N, 2)
        L = self.load_size
        valid = (trg_pts >= 0.0).all(axis=1) & (trg_pts <= L - 1.0).all(axis=1)
        img = path.load() if isinstance(path, GeneratedImage) else load_image(path)
        source = resize_for_backbone(img, L)  # (3, L, L) in [-1, 1]
        target = warp_image(photometric((source + 1.0) / 2.0, warp), warp.homography) * 2.0 - 1.0  # (3, L, L)
        return self.pack(
            source_image=source,
            target_image=target,
            source_points=src_pts,
            target_points=trg_pts,
            valid=valid,
            source_size=img.size,
            target_size=(L, L),
            target_points_orig=trg_pts,
            target_bbox=np.full(4, np.nan),
            category="synthetic",
            pair_id=f"synthetic:{self.split}:{index:06d}:{path.stem}",
        )
