"""What every tracker shares: the descriptor-source protocol, the per-frame step interface, the
settings fields (default, range and one-line meaning in one place) and the query checks.

A tracker is a *point group*: points that start on one query frame, followed one frame at a time
in one direction. ``Group(query_desc, cells, settings)`` takes the query frame's (D, h, w)
L2-normalised descriptors and the points' (n, 2) cell xy; ``group.step(desc)`` takes the next
frame's (D, h, w) descriptors and returns positions (n, 2) cell xy, visible (n,) bool and
confidence (n,) in [0, 1]. The offline driver (:mod:`hyperfeat.correspond.track.driver`) and the
online :class:`hyperfeat.video.online.Tracker` call the same ``step``.
"""

from __future__ import annotations

from dataclasses import field, fields
from typing import Any, Optional, Protocol, Sequence, runtime_checkable

import torch

from hyperfeat.config import check_number
from hyperfeat.errors import ConfigError, DataError
from hyperfeat.settings import defaults_of


@runtime_checkable
class DescriptorSource(Protocol):
    """Per-frame descriptors read one frame at a time (a video's store, or a tensor wrapped by
    :class:`TensorSource`): ``source[t]`` is frame t's (D, h, w) float32, L2-normalised over D."""

    shape: Sequence[int]
    device: torch.device

    def __len__(self) -> int: ...

    def __getitem__(self, t: int) -> torch.Tensor: ...


class TensorSource:
    """(T, D, h, w) descriptors in memory as a :class:`DescriptorSource` (normalised once)."""

    def __init__(self, desc: torch.Tensor):
        from hyperfeat.correspond.cells import check_descriptors

        self.desc = check_descriptors(desc)  # (T, D, h, w) normalised float32
        self.shape = tuple(self.desc.shape)
        self.device = self.desc.device

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, t: int) -> torch.Tensor:
        return self.desc[t]


def as_source(desc: Any) -> DescriptorSource:
    """A (T, D, h, w) tensor or anything that is already a :class:`DescriptorSource`."""
    if isinstance(desc, torch.Tensor):
        return TensorSource(desc)
    if isinstance(desc, DescriptorSource):
        return desc
    raise DataError(f"descriptors must be a (T, D, h, w) tensor or a per-frame store; got {type(desc).__name__}")


class PointGroup(Protocol):
    """The per-frame step every tracker implements (see the module docstring)."""

    def __init__(self, query_desc: torch.Tensor, cells: torch.Tensor, settings: Any): ...

    def step(self, desc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


def setting(
    default: Any, meaning: str, low: Optional[float] = None, high: Optional[float] = None, low_open: bool = False
) -> Any:
    """A settings field: its default, its one-line ``meaning`` (``hyperfeat config show``) and its
    allowed range [low, high] (``low_open``: low itself excluded), checked by :func:`check_settings`."""
    extra = {"meaning": meaning, "low": low, "high": high, "low_open": low_open}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=extra)
    return field(default=default, metadata=extra)


def check_settings(settings: Any, where: str) -> None:
    """Every field of a settings dataclass has its default's type and lies in its range; a
    :class:`ConfigError` names ``where``.key, the value and what was expected."""
    defaults = defaults_of(type(settings))
    for f in fields(settings):
        value, default = getattr(settings, f.name), defaults[f.name]
        key = f"{where}.{f.name}"
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{key} must be true or false; got {value!r}")
        elif isinstance(default, (list, tuple)):
            if not isinstance(value, (list, tuple)) or len(value) != len(default):
                raise ConfigError(f"{key} must be a list of {len(default)} numbers; got {value!r}")
            for item in value:
                check_number(key, item, float)
        else:
            check_number(
                key,
                value,
                type(default),
                f.metadata.get("low"),
                bool(f.metadata.get("low_open")),
                f.metadata.get("high"),
            )


def check_query_rows(queries: torch.Tensor, num_frames: int, image_size: tuple[int, int]) -> None:
    """Queries (N, 3) rows of (t, x, y): t an integer frame in [0, T), (x, y) inside the (W, H)
    frame; a :class:`DataError` names the first bad one."""
    if queries.ndim != 2 or queries.shape[-1] != 3:
        raise DataError(f"queries must be (N, 3) rows of (t, x, y); got shape {tuple(queries.shape)}")
    width, height = image_size
    bad = ~torch.isfinite(queries).all(dim=1)
    if bad.any():
        n = int(bad.nonzero()[0])
        raise DataError(f"query {n} has a non-finite value: {queries[n].tolist()}")
    for n, (t, x, y) in enumerate(queries.tolist()):
        if t != int(t) or not 0 <= t < num_frames:
            raise DataError(
                f"query {n} is at t={t}, past the video: t must be an integer in [0, {num_frames - 1}] (T={num_frames})"
            )
        if not -0.5 <= x <= width - 0.5 or not -0.5 <= y <= height - 0.5:
            raise DataError(
                f"query {n} at (x, y)=({x:g}, {y:g}) is outside the frame: x must be in [-0.5, {width - 0.5:g}], "
                f"y in [-0.5, {height - 0.5:g}] for frames of (W, H)={image_size}"
            )


def query_groups(queries: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
    """(N, 3) queries → [(t, member indices)] by query frame, in frame order."""
    frames = queries[:, 0].long()
    return [(int(t), (frames == t).nonzero().flatten()) for t in frames.unique().tolist()]


def check_frame(desc: torch.Tensor, dim: int, grid: tuple[int, int]) -> None:
    """One frame's descriptors must be (D, h, w) with the query frame's D and grid."""
    if desc.ndim != 3 or desc.shape[0] != dim:
        raise DataError(
            f"frame descriptors must be (D, h, w) with D = {dim} like the query frame's; got shape {tuple(desc.shape)}"
        )
    if tuple(desc.shape[-2:]) != tuple(grid):
        raise DataError(f"descriptors of {tuple(desc.shape[-2:])} cells after {tuple(grid)}: one grid per video")
