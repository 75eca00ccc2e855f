"""Procedural images: the synthetic pairs' fallback when no folder of real images is at hand.

Each image is a pure function of (seed, index, size), made with numpy and PIL only:

* a smooth random colour field (a few × few grid of random colours, bicubic-upsampled), plus a
  blotchy mid-frequency luminance field, so no region is flat;
* 8-15 random shapes of random colours: ellipses, rotated rectangles, triangles and thick
  lines, some with a contrasting outline — corners and edges that pin a correspondence down;
* high-frequency texture: a faint oriented sinusoidal grating under a smooth random mask and
  fine 2-pixel grain, so even the inside of a shape has something to match.

Nothing is read from or written to disk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

_SALT = 0x5EED  # keeps the image generators apart from the warp generators of the same seed


@dataclass(frozen=True)
class GeneratedImage:
    """A procedural image standing in for an image file: ``load()`` makes it (cached)."""

    seed: int
    index: int
    size: int = 256

    @property
    def stem(self) -> str:
        return f"generated-s{self.seed}-{self.size}-{self.index:03d}"

    def load(self) -> Image.Image:
        return Image.fromarray(_texture(self.seed, self.index, self.size), "RGB")

    def __str__(self) -> str:
        return self.stem


def generated_images(count: int, seed: int = 0, size: int = 256) -> list[GeneratedImage]:
    """``count`` procedural images of ``size``×``size`` pixels, fixed by ``seed``."""
    return [GeneratedImage(int(seed), i, int(size)) for i in range(int(count))]


def _smooth_field(rng: np.random.Generator, size: int, cells: int, channels: int) -> np.ndarray:
    """(size, size, channels) float32 in [0, 1]: random values on a cells×cells grid, bicubic-upsampled."""
    low = rng.uniform(0.0, 1.0, size=(cells, cells, channels)).astype(np.float32)
    planes = [
        np.asarray(Image.fromarray(low[..., c], "F").resize((size, size), Image.BICUBIC)) for c in range(channels)
    ]
    return np.clip(np.stack(planes, axis=-1), 0.0, 1.0)


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, size=3))


def _draw_shapes(rng: np.random.Generator, image: Image.Image) -> None:
    size = image.size[0]
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(8, 16))):
        kind = rng.choice(["ellipse", "rectangle", "triangle", "line"], p=[0.3, 0.3, 0.2, 0.2])
        cx, cy = rng.uniform(0.0, size, size=2)
        w, h = rng.uniform(0.06, 0.35, size=2) * size
        fill = _colour(rng)
        outline = _colour(rng) if rng.uniform() < 0.4 else None
        width = int(rng.integers(1, 4))
        if kind == "ellipse":
            draw.ellipse([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], fill=fill, outline=outline, width=width)
        elif kind == "rectangle":
            angle = rng.uniform(0.0, math.pi)
            c, s = math.cos(angle), math.sin(angle)
            corners = [(-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)]
            draw.polygon([(cx + c * x - s * y, cy + s * x + c * y) for x, y in corners], fill=fill, outline=outline)
        elif kind == "triangle":
            angles = np.sort(rng.uniform(0.0, 2 * math.pi, size=3))
            draw.polygon(
                [(cx + w / 2 * math.cos(a), cy + h / 2 * math.sin(a)) for a in angles], fill=fill, outline=outline
            )
        else:
            angle = rng.uniform(0.0, math.pi)
            dx, dy = math.cos(angle) * w, math.sin(angle) * w
            draw.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=fill, width=int(rng.integers(2, 7)))


@lru_cache(maxsize=64)
def _texture(seed: int, index: int, size: int) -> np.ndarray:
    rng = np.random.default_rng([_SALT, seed, index])
    colour = _smooth_field(rng, size, int(rng.integers(3, 7)), 3)  # (S, S, 3)
    blotches = _smooth_field(rng, size, int(rng.integers(12, 24)), 1) - 0.5  # (S, S, 1)
    base = np.clip(0.1 + 0.8 * colour + 0.3 * blotches, 0.0, 1.0)
    image = Image.fromarray((base * 255).round().astype(np.uint8), "RGB")
    _draw_shapes(rng, image)
    pixels = np.asarray(image, dtype=np.float32) / 255.0  # (S, S, 3)
    # high frequencies: an oriented grating under a smooth mask, and 2-pixel grain
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(0.0, math.pi)
    period = rng.uniform(3.0, 7.0)
    phase = (math.cos(angle) * xs + math.sin(angle) * ys) * (2 * math.pi / period)
    grating = np.sin(phase)[..., None] * _smooth_field(rng, size, 4, 1) * 0.12
    half = (size + 1) // 2
    grain = rng.normal(0.0, 0.04, size=(half, half, 3)).astype(np.float32)
    grain = grain.repeat(2, axis=0).repeat(2, axis=1)[:size, :size]
    out = np.clip(pixels + grating + grain, 0.0, 1.0)
    out = (out * 255).round().astype(np.uint8)
    out.setflags(write=False)
    return out
