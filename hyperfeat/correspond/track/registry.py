"""Every point tracker by one name: the commands and the API (``video.tracker=NAME``), the config's
``video.tracker`` and ``changes.tracker`` all read this table.

To add a tracker: write one file in this package with a settings dataclass (fields made with
:func:`hyperfeat.correspond.track.base.setting`) and a group class with ``step`` (see
:mod:`hyperfeat.correspond.track.base`), add its line to ``TRACKERS`` below and its block under
``video.trackers`` in ``configs/default.yaml`` (a test checks the block against the dataclass).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from hyperfeat.errors import ConfigError
from hyperfeat.settings import from_block


@dataclass(frozen=True)
class TrackerSpec:
    """A registered tracker: the module that holds it (imported when the tracker is first used, so
    a run loads only its own tracker), its settings dataclass and point-group class by name, and
    one line on what it does."""

    module: str
    settings_class: str
    group_class: str
    summary: str

    @property
    def settings(self) -> type:
        return getattr(importlib.import_module(self.module), self.settings_class)

    @property
    def group(self) -> type:
        return getattr(importlib.import_module(self.module), self.group_class)


_HERE = "hyperfeat.correspond.track"
TRACKERS: dict[str, TrackerSpec] = {
    "coherent": TrackerSpec(
        f"{_HERE}.coherent",
        "CoherentSettings",
        "CoherentGroup",
        "points tracked together: neighbour motion, evidence-based visibility, re-detection",
    ),
    "memory": TrackerSpec(
        f"{_HERE}.memory",
        "MemorySettings",
        "MemoryGroup",
        "re-detection, template memory, voted visibility (cosine floor, margin, cycle)",
    ),
    "window": TrackerSpec(
        f"{_HERE}.window", "WindowSettings", "WindowGroup", "the original: local window, cosine floor and cycle check"
    ),
    "appearance": TrackerSpec(
        f"{_HERE}.appearance",
        "AppearanceSettings",
        "AppearanceGroup",
        "template follows the point's latest look (points that change state)",
    ),
}
DEFAULT_TRACKER = "coherent"


def tracker_spec(name: str) -> TrackerSpec:
    """The registered tracker ``name``; an unknown name is one :class:`ConfigError` listing the names."""
    if name not in TRACKERS:
        raise ConfigError(f"unknown tracker {name!r}; the trackers are: {', '.join(TRACKERS)}")
    return TRACKERS[name]


def settings_from_config(cfg: Any, name: str) -> Any:
    """The settings of tracker ``name`` from the config's ``video.trackers.<name>`` block (a key
    the block lacks takes the dataclass default; a bad value is one line naming the key)."""
    spec = tracker_spec(name)
    return from_block(spec.settings, cfg.video.trackers.get(name), where=f"video.trackers.{name}")
