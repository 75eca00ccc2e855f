"""Point tracking: one package, one interface.

* :mod:`.base`: the descriptor-source protocol, the per-frame ``step`` every tracker implements,
  settings fields (default, range, meaning) and the query checks;
* :mod:`.driver`: :func:`track_descriptors`, the one offline loop (forward then backward from each query frame);
* :mod:`.registry`: ``TRACKERS``, every tracker by name (``coherent`` the default, ``memory``,
  ``window``, ``appearance``);
* one file per tracker.

    from hyperfeat.correspond.track import track_descriptors
    tracks, visible, confidence = track_descriptors(desc, [[0, 120, 80]], (854, 480))  # (N, T, 2), (N, T), (N, T)
"""

from hyperfeat.correspond.track.driver import track_descriptors
from hyperfeat.correspond.track.registry import DEFAULT_TRACKER, TRACKERS, settings_from_config, tracker_spec

__all__ = ["track_descriptors", "TRACKERS", "DEFAULT_TRACKER", "settings_from_config", "tracker_spec"]
