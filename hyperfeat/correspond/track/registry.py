"""Every point tracker by one name: the CLI (``hyperfeat track --tracker``), the API, the config's
``video.tracker`` and ``changes.tracker`` all read this table.

To add a tracker: write one file in this package with a settings dataclass (fields made with
:func:`hyperfeat.correspond.track.base.setting`) and a group class with ``step`` (see
:mod:`hyperfeat.correspond.track.base`), add its line to ``TRACKERS`` below and its block under
``video.trackers`` in ``configs/default.yaml`` (a test checks the block against the dataclass).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hyperfeat.correspond.track.appearance import AppearanceGroup, AppearanceSettings
from hyperfeat.correspond.track.coherent import CoherentGroup, CoherentSettings
from hyperfeat.correspond.track.memory import MemoryGroup, MemorySettings
from hyperfeat.correspond.track.window import WindowGroup, WindowSettings
from hyperfeat.errors import ConfigError
from hyperfeat.settings import from_block


@dataclass(frozen=True)
class TrackerSpec:
    """A registered tracker: its settings dataclass, its point-group class and one line on what it does."""

    settings: type
    group: type
    summary: str


TRACKERS: dict[str, TrackerSpec] = {
    "coherent": TrackerSpec(CoherentSettings, CoherentGroup, "points tracked together: neighbour motion, evidence-based visibility, re-detection"),
    "memory": TrackerSpec(MemorySettings, MemoryGroup, "re-detection, template memory, voted visibility (cosine floor, margin, cycle)"),
    "window": TrackerSpec(WindowSettings, WindowGroup, "the original: local window, cosine floor and cycle check"),
    "appearance": TrackerSpec(AppearanceSettings, AppearanceGroup, "template follows the point's latest look (points that change state)"),
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
