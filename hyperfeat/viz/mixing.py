"""The mixing-weight heat map: softmax weights of an aggregation network, layers × timesteps,
timesteps ordered from noisy to clean, the largest cell outlined.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from hyperfeat.errors import HyperfeatError
from hyperfeat.io import PathLike
from hyperfeat.viz.figures import ArrayLike, save_figure, to_numpy

ANNOTATE_MAX_CELLS = 15  # annotate heat-map cells with percentages up to this many per side


PANEL_MIN_WIDTH = 3.9  # inches: room for a panel's two-line title

MAX_CELL_GID = "max_cell"  # gid of the rectangle outlining the largest mixing weight


# ---------------------------------------------------------------------------- mixing weights


def noisy_to_clean_order(timestep_labels: Sequence[int]) -> np.ndarray:
    """Indices that sort timestep labels from the noisiest to the cleanest UNet call.

    A label k is the inversion step at t = seq_next[N-1-k] (see ``schedule.py``): label 0 is the
    noisiest call and the largest label the cleanest (t = -1), so this is ascending label order.
    """
    return np.argsort(np.asarray(timestep_labels), kind="stable")


def layer_tick_labels(layer_names: Sequence[str], channels: Optional[Sequence[int]]) -> list[str]:
    """``up_blocks.0.resnets.2`` or, with channel counts, ``up_blocks.0.resnets.2 (1280)``."""
    if channels is None:
        return list(layer_names)
    if len(channels) != len(layer_names):
        raise HyperfeatError(f"got {len(channels)} channel counts for {len(layer_names)} layers")
    return [f"{name} ({c})" for name, c in zip(layer_names, channels)]


def check_weights(weights: np.ndarray, timestep_labels: Sequence[int], layer_names: Sequence[str]) -> None:
    """Raise unless ``weights`` is (S, L) for S timestep labels and L layer names."""
    expected = (len(timestep_labels), len(layer_names))
    if weights.ndim != 2 or weights.shape != expected:
        raise HyperfeatError(f"mixing weights must be (timesteps, layers) = {expected}; got shape {weights.shape}")


def annotate_cells(ax, grid: np.ndarray, norm, cmap) -> None:
    """Write each cell's value (percent) in a colour that reads on the cell's colour."""
    fontsize = 8 if max(grid.shape) > 8 else 10
    for (row, col), value in np.ndenumerate(grid):  # grid (L, S)
        r, g, b, _ = cmap(norm(value))
        dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
        ax.text(
            col, row, f"{value:.1f}", ha="center", va="center", fontsize=fontsize, color="white" if dark else "black"
        )


def outline_max_cell(ax, grid: np.ndarray) -> tuple[int, int]:
    """Outline the largest cell of ``grid`` (L, S); returns its (row, col)."""
    row, col = np.unravel_index(int(np.argmax(grid)), grid.shape)
    ax.add_patch(
        Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.5, gid=MAX_CELL_GID, zorder=3)
    )
    return int(row), int(col)


@dataclass
class MixingPanel:
    """One checkpoint's mixing weights (S, L) with what labels them (see :func:`plot_mixing_weights`)."""

    weights: ArrayLike
    timestep_labels: Sequence[int]
    layer_names: Sequence[str]
    title: Optional[str] = None
    channels: Optional[Sequence[int]] = None
    timestep_values: Optional[Sequence[int]] = None

    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """(L, S) percent with columns noisy → clean, and that column order of the labels."""
        w = to_numpy(self.weights)  # (S, L)
        check_weights(w, self.timestep_labels, self.layer_names)
        if self.timestep_values is not None and len(self.timestep_values) != len(self.timestep_labels):
            raise HyperfeatError(
                f"got {len(self.timestep_values)} timestep values for {len(self.timestep_labels)} labels"
            )
        order = noisy_to_clean_order(self.timestep_labels)
        return 100.0 * w[order].T, order


def draw_mixing(ax, panel: MixingPanel, norm, cmap, *, layer_labels: bool = True, step_label: bool = True):
    """Draw ``panel`` into ``ax`` on the colour scale ``norm``; returns the image."""
    grid, order = panel.grid()  # (L, S)
    n_layers, n_steps = grid.shape
    image = ax.imshow(grid, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(n_steps), labels=step_tick_labels(panel.timestep_labels, panel.timestep_values, order))
    ax.set_yticks(range(n_layers), labels=layer_tick_labels(panel.layer_names, panel.channels) if layer_labels else [])
    ax.tick_params(labelsize=8)
    if step_label:
        ax.set_xlabel(step_axis_label(panel))
    if layer_labels:
        ax.set_ylabel("decoder layer" + (" (channels)" if panel.channels is not None else ""))
    if max(grid.shape) <= ANNOTATE_MAX_CELLS:
        annotate_cells(ax, grid, image.norm, cmap)
    row, col = outline_max_cell(ax, grid)
    summary = (
        f"max {grid.max():.1f}% (red: {panel.layer_names[row]}, label {panel.timestep_labels[order[col]]})\n"
        f"uniform {100 / grid.size:.1f}%"
    )
    ax.set_title(f"{panel.title or 'Mixing weights'}\n{summary}", fontsize=9)
    return image


def step_axis_label(panel: MixingPanel) -> str:
    return "timestep label" + (" and t" if panel.timestep_values is not None else "") + " (noisiest → cleanest)"


def plot_mixing_weights(
    weights: ArrayLike,
    timestep_labels: Sequence[int],
    layer_names: Sequence[str],
    out_path: Optional[PathLike] = None,
    title: Optional[str] = None,
    channels: Optional[Sequence[int]] = None,
    timestep_values: Optional[Sequence[int]] = None,
) -> Figure:
    """Heat map of softmax mixing weights (S, L): layers down the y axis, timesteps across x.

    Columns are ordered from the noisiest to the cleanest timestep (ascending label), cells show
    the weight in percent when the grid is at most 15 × 15, and the largest cell is outlined in
    red (its rectangle has gid ``"max_cell"``). ``channels`` (one per layer) is added to the
    layer labels; ``timestep_values`` (the diffusion timestep t of each label, −1 for the clean
    latent; see :func:`label_timestep_values`) is written under the labels. The title (``title``
    or "Mixing weights") is followed by the largest weight, where it is, and the uniform weight.
    Writes the figure to ``out_path`` (PNG by suffix) when given.
    """
    panel = MixingPanel(weights, timestep_labels, layer_names, title, channels, timestep_values)
    return plot_mixing_comparison([panel], out_path)


def plot_mixing_comparison(panels: Sequence[MixingPanel], out_path: Optional[PathLike] = None) -> Figure:
    """Several checkpoints' heat maps side by side on ONE colour scale (e.g. semantic vs
    temporal training), each as :func:`plot_mixing_weights` draws it. Two panels of the same
    layers and timesteps get a third: their difference (second − first, percentage points,
    red where the second puts more weight)."""
    if not panels:
        raise HyperfeatError("plot_mixing_comparison needs at least one set of mixing weights")
    grids = [panel.grid()[0] for panel in panels]  # each (L, S)
    same_plan = (
        len(panels) == 2
        and grids[0].shape == grids[1].shape
        and list(panels[0].timestep_labels) == list(panels[1].timestep_labels)
        and list(panels[0].layer_names) == list(panels[1].layer_names)
    )
    n_layers = max(g.shape[0] for g in grids)
    cell = 0.55 if max(max(g.shape) for g in grids) <= ANNOTATE_MAX_CELLS else 0.3
    widths = [max(PANEL_MIN_WIDTH, 1.2 + cell * g.shape[1]) for g in grids]
    widths += [widths[0]] if same_plan else []
    fig = Figure(figsize=(3.0 + sum(widths), 1.9 + cell * n_layers), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(widths), squeeze=False, width_ratios=widths)[0]
    cmap = colormaps["viridis"]
    norm = Normalize(vmin=min(float(g.min()) for g in grids), vmax=max(float(g.max()) for g in grids))
    for i, (ax, panel) in enumerate(zip(axes, panels)):
        image = draw_mixing(ax, panel, norm, cmap, layer_labels=i == 0, step_label=len(widths) == 1)
    if len(widths) > 1:
        fig.supxlabel(step_axis_label(panels[0]), fontsize=10)
    fig.colorbar(image, ax=list(axes[: len(panels)]), label="mixing weight (%)", shrink=0.9, aspect=30)
    if same_plan:
        ax, diff = axes[-1], grids[1] - grids[0]  # (L, S)
        bound = max(float(np.abs(diff).max()), 1e-6)
        shown = ax.imshow(
            diff, cmap=colormaps["RdBu_r"], norm=Normalize(-bound, bound), aspect="auto", interpolation="nearest"
        )
        ax.set_xticks(range(diff.shape[1]), labels=[t.get_text() for t in axes[1].get_xticklabels()])
        ax.set_yticks(range(diff.shape[0]), labels=[])
        ax.tick_params(labelsize=8)
        ax.set_title(
            f"difference: right − left\nlargest change {diff.flat[np.abs(diff).argmax()]:+.1f} points", fontsize=9
        )
        fig.colorbar(shown, ax=ax, label="percentage points", shrink=0.9, aspect=30)
    save_figure(fig, out_path)
    return fig


def step_tick_labels(labels: Sequence[int], values: Optional[Sequence[int]], order: np.ndarray) -> list[str]:
    """Column labels in ``order``: the label, with timestep values a second line ``t=180`` (``clean`` for t = −1)."""
    if values is None:
        return [str(labels[i]) for i in order]
    return [f"{labels[i]}\n" + ("clean" if int(values[i]) < 0 else f"t={int(values[i])}") for i in order]


def label_timestep_values(mode: str, num_steps: int, labels: Sequence[int]) -> list[int]:
    """The diffusion timestep t of each label for feature ``mode`` (−1: the clean latent).

    Inversion and noise modes call the UNet at the inversion's timesteps; generation labels
    its step i, at t = seq[N−1−i] (see ``schedule.py``).
    """
    from hyperfeat.model import schedule

    if mode == "generation":
        by_label = {s.label: s.t for s in schedule.generation_steps(int(num_steps))}
        return [by_label[int(k)] for k in labels]
    return schedule.label_timesteps(int(num_steps), [int(k) for k in labels])


def save_mixing_picture(path: PathLike, network, meta) -> str:
    """The model card's picture: a trained network's mixing weights (``meta``: its
    :class:`~hyperfeat.model.checkpoint.CheckpointMeta`) drawn to the PNG ``path``; returns the
    file name the card links (:func:`hyperfeat.model.pretrained.save_pretrained`'s ``picture``)."""
    from pathlib import Path

    from hyperfeat.io import atomic_write
    from hyperfeat.model.features import layer_name

    path = Path(path)
    feats = meta.config.features
    values = label_timestep_values(str(feats.mode), int(feats.num_steps), meta.save_steps)
    fig = plot_mixing_weights(
        network.mixing_grid().detach(),
        meta.save_steps,
        [layer_name(ij) for ij in meta.layers],
        title="mixing weights",
        channels=meta.feature_dims,
        timestep_values=values,
    )
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    return path.name
