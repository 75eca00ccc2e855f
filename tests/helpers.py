"""Plain helpers shared by test files (import them: ``from tests.helpers import data_dir``).

Fixtures live in ``conftest.py``; the builders the benchmarks share live in
``hyperfeat.testing``; independent re-implementations that tests check against live in
``tests/reference.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from hyperfeat.config import load_config
from hyperfeat.testing import ONE_STEP_OVERRIDES, TINY_OVERRIDES  # noqa: F401  (for the test files)
from hyperfeat.video.frames import frames_as_uint8

DATA_ROOT = Path(os.environ.get("HYPERFEAT_DATA_ROOT", Path(__file__).resolve().parents[2] / "shared" / "data"))


def data_dir(name: str) -> Path:
    """A real data subset below the data root, or skip the test saying what is missing."""
    path = DATA_ROOT / name
    if not path.exists():
        pytest.skip(f"real data {name!r} not found at {path} (set HYPERFEAT_DATA_ROOT to the data folder)")
    return path


# ---------------------------------------------------------------------------- a picture pair

PNG = b"\x89PNG\r\n\x1a\n"
SRC_WH, TGT_WH = (160, 96), (72, 120)  # landscape source, portrait target
POINTS = [[0.0, 0.0], [159.0, 95.0], [37.0, 80.0], [120.0, 12.0], [80.0, 48.0]]  # (x, y), corners included


def picture(size_wh: tuple[int, int], seed: int) -> Image.Image:
    """A structured RGB test image: smooth colour waves plus a few flat rectangles."""
    w, h = size_wh
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    channels = [
        127 + 100 * np.sin(xx / rng.uniform(5, 15) + yy / rng.uniform(5, 15) + rng.uniform(0, 6)) for _ in range(3)
    ]
    array = np.stack(channels, axis=-1)
    for _ in range(4):
        x0, y0 = rng.integers(0, w - 10), rng.integers(0, h - 10)
        array[y0 : y0 + rng.integers(5, h // 2), x0 : x0 + rng.integers(5, w // 2)] = rng.integers(0, 256, 3)
    return Image.fromarray(array.clip(0, 255).astype(np.uint8))


def write_picture_pair(folder: Path) -> tuple[Image.Image, Image.Image, Path, Path]:
    """The landscape source (SRC_WH) and portrait target (TGT_WH) pictures, also saved as PNGs."""
    src, tgt = picture(SRC_WH, 1), picture(TGT_WH, 2)
    src.save(folder / "src.png")
    tgt.save(folder / "tgt.png")
    return src, tgt, folder / "src.png", folder / "tgt.png"


# ---------------------------------------------------------------------------- videos with known motion
# The tiny random backbone's descriptors carry no correspondence, so motion tests swap
# ``describe_batch`` on a Hyperfeatures instance for :func:`conv_stand_in`, a fixed random conv
# that sees what the backbone would, (B, 3, L, L) in [-1, 1].

VELOCITY = (4, 2)  # content motion of translated_video, px per frame
STEPS = 5
CROP = (192, 112)  # (W, H) of translated_video


def make_parts():
    """(cfg, backbone, network, channels): the tiny backbone with the one-step plan and an
    untrained network built right after ``torch.manual_seed(0)``."""
    from hyperfeat.model.backbone import load_backbone
    from hyperfeat.model.checkpoint import build_network
    from hyperfeat.model.features import FeatureExtractor

    cfg = load_config(overrides=ONE_STEP_OVERRIDES)
    backbone = load_backbone(cfg)
    channels = FeatureExtractor(backbone, cfg.features).channels
    torch.manual_seed(0)
    network = build_network(cfg, channels)
    return cfg, backbone, network, channels


def make_hf(parts, *overrides: str):
    """A Hyperfeatures of ``parts`` with more overrides (no checkpoint)."""
    from hyperfeat.api import Hyperfeatures

    _, backbone, network, _ = parts
    cfg = load_config(overrides=ONE_STEP_OVERRIDES + list(overrides))
    return Hyperfeatures(cfg, backbone, network)


def conv_stand_in(kernel: int = 17, stride: int = 4, dim: int = 64, seed: int = 0, calls: list | None = None):
    """A fixed random conv: (B, 3, L, L) in [-1, 1] → (B, dim, L/stride, L/stride), mean-removed."""
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(dim, 3, kernel, kernel, generator=gen) / kernel

    def describe(batch: torch.Tensor) -> torch.Tensor:
        if calls is not None:
            calls.append(batch.clone())
        out = F.avg_pool2d(torch.tanh(F.conv2d(batch, weight, padding=kernel // 2)), stride)
        return out - out.mean(dim=(2, 3), keepdim=True)

    return describe


def scene(size=(320, 192), blobs: int = 60, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8: coloured discs on a dark, faintly textured background."""
    gen = np.random.default_rng(seed)
    width, height = size
    image = 25 + gen.integers(0, 20, (height, width, 3))
    yy, xx = np.mgrid[:height, :width]
    for _ in range(blobs):
        x, y, r = gen.integers(0, width), gen.integers(0, height), gen.integers(5, 16)
        image[(xx - x) ** 2 + (yy - y) ** 2 < r * r] = gen.integers(40, 256, 3)
    return image.astype(np.uint8)


def translated_video(steps: int = STEPS, velocity=VELOCITY, crop=CROP, origin=(60, 40)) -> torch.Tensor:
    """(T, 3, H, W) in [0, 1], exactly uint8 values: a ``crop`` window over :func:`scene` moving so
    that the content moves by ``velocity`` px per frame."""
    big = torch.from_numpy(scene()).permute(2, 0, 1).float() / 255.0
    (vx, vy), (w, h), (x0, y0) = velocity, crop, origin
    assert x0 - vx * (steps - 1) >= 0 and y0 - vy * (steps - 1) >= 0
    return torch.stack([big[:, y0 - vy * t : y0 - vy * t + h, x0 - vx * t : x0 - vx * t + w] for t in range(steps)])


def as_pil(frames: torch.Tensor) -> list[Image.Image]:
    return [Image.fromarray(f) for f in frames_as_uint8(frames)]


def write_frames(frames: torch.Tensor, folder: Path) -> list[Path]:
    """Save (T, 3, H, W) frames in [0, 1] as 00000.png, 00001.png, ... and return the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for t, image in enumerate(as_pil(frames)):
        path = folder / f"{t:05d}.png"
        image.save(path)
        paths.append(path)
    return paths


def translated_sequence(
    sequence: str, velocity=(4, 2), steps: int = 6, crop=(256, 144), canvas=(320, 180), origin=(40, 24)
):
    """Frame 0 of a DAVIS sequence (and its mask) resized to ``canvas`` (W, H), seen through a
    ``crop`` window that moves so that the content moves by ``velocity`` (vx, vy) px per frame.
    Returns frames (T, 3, H, W) in [0, 1] and masks (T, H, W) int64."""
    from hyperfeat.data.videos.davis import read_mask
    from hyperfeat.images import load_image, pil_to_tensor

    root = data_dir("davis2017")
    image = load_image(root / "JPEGImages" / "480p" / sequence / "00000.jpg").resize(canvas, Image.BILINEAR)
    mask = read_mask(root / "Annotations" / "480p" / sequence / "00000.png").numpy().astype(np.uint8)
    mask = torch.from_numpy(np.array(Image.fromarray(mask).resize(canvas, Image.NEAREST))).long()
    pixels = pil_to_tensor(image)
    (vx, vy), (w, h), (x0, y0) = velocity, crop, origin
    assert x0 - vx * (steps - 1) >= 0 and x0 + w - vx * (steps - 1) <= canvas[0]
    frames = torch.stack(
        [pixels[:, y0 - vy * t : y0 - vy * t + h, x0 - vx * t : x0 - vx * t + w] for t in range(steps)]
    )
    masks = torch.stack([mask[y0 - vy * t : y0 - vy * t + h, x0 - vx * t : x0 - vx * t + w] for t in range(steps)])
    return frames, masks


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum()) / max(1.0, float((a | b).sum()))
