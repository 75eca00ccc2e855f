"""What every picture shares: array conversion, figure to array or file, distinct colours.

Everything here runs headless. Matplotlib is used through its object API
(:class:`matplotlib.figure.Figure` on an Agg canvas), never through pyplot, so importing this
module neither needs a display nor changes the user's matplotlib backend.

Conventions: points are (x, y) in pixels (x right, y down, pixel centres at integers); tracks
are (N, T, 2) xy and visibility (N, T) bool, True = visible. Figures come back as
:class:`~matplotlib.figure.Figure` (heat map, correspondences; :func:`figure_to_array` turns one
into an RGB array for wandb); per-frame pictures (tracks, masks) come back as PIL images.
"""

from __future__ import annotations

import colorsys
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hyperfeat.io import PathLike

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence]


# ---------------------------------------------------------------------------- helpers


def to_numpy(values: ArrayLike, dtype: type = np.float64) -> np.ndarray:
    """Tensor, array or nested list → numpy array of ``dtype`` (detached, on CPU)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype)


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render ``fig`` and return it as (H, W, 3) uint8 RGB (e.g. for ``wandb.Image``)."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()  # (H, W, 3)


def save_figure(fig: Figure, out_path: Optional[PathLike]) -> None:
    """Write ``fig`` as an image (format from the suffix, PNG by default) if a path is given."""
    if out_path is None:
        return
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format=path.suffix.lstrip(".").lower() or "png", dpi=fig.dpi)


def distinct_colours(n: int) -> np.ndarray:
    """(n, 3) uint8 saturated colours with evenly spaced hues (alternating brightness)."""
    hues = np.arange(n) / max(n, 1)
    values = [1.0 if i % 2 == 0 else 0.8 for i in range(n)]  # neighbours differ in brightness too
    rgb = [colorsys.hsv_to_rgb(h, 0.9, v) for h, v in zip(hues, values)]
    return (np.array(rgb, dtype=np.float64).reshape(n, 3) * 255).round().astype(np.uint8)
