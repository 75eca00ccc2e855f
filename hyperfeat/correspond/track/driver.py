"""The offline driver: every registered tracker runs through this one loop.

Queries may sit on any frame; the points of each query frame form one group per direction,
followed forward to the last frame and then backward to the first, one frame read at a time from
the descriptor source (a video's store or a tensor). Cells ↔ pixels go through
:mod:`hyperfeat.geometry`. The online tracker (:class:`hyperfeat.video.online.Tracker`) calls the
same group ``step`` as frames arrive, so both agree on every frame after a query's.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from hyperfeat.correspond.cells import check_image_size
from hyperfeat.correspond.track.base import as_source, check_query_rows, query_groups
from hyperfeat.correspond.track.registry import DEFAULT_TRACKER, tracker_spec
from hyperfeat.geometry import cells_to_pixels, pixels_to_cells


@torch.no_grad()
def track_descriptors(
    descriptors: Any,
    queries: Any,
    image_size: Sequence[int],
    tracker: str = DEFAULT_TRACKER,
    settings: Optional[Any] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Track queries (N, 3) (t, x, y) in pixels of an ``image_size`` (W, H) frame through
    ``descriptors`` ((T, D, h, w) or a per-frame store) with the registered ``tracker`` and its
    ``settings`` (default: the settings dataclass's defaults, which are the config's).

    Returns tracks (N, T, 2) xy pixels, visible (N, T) bool and confidence (N, T) in [0, 1]; at
    its own frame a query is itself exactly, visible, confidence 1.
    """
    spec = tracker_spec(tracker)
    settings = spec.settings() if settings is None else settings
    if not isinstance(settings, spec.settings):
        raise TypeError(f"tracker {tracker!r} takes {spec.settings.__name__}; got {type(settings).__name__}")
    source = as_source(descriptors)
    size = check_image_size(image_size)
    num_frames = len(source)
    h, w = source.shape[-2:]
    queries = torch.as_tensor(queries, dtype=torch.float32).to(source.device)
    check_query_rows(queries, num_frames, size)
    n = queries.shape[0]
    tracks = torch.zeros(n, num_frames, 2, device=source.device)  # cells, then pixels
    visible = torch.zeros(n, num_frames, dtype=torch.bool, device=source.device)
    confidence = torch.zeros(n, num_frames, device=source.device)
    cells = pixels_to_cells(queries[:, 1:], size, (h, w))  # (N, 2)
    for t_query, members in query_groups(queries):
        query_desc = source[t_query]  # (D, h, w)
        visible[members, t_query] = True
        confidence[members, t_query] = 1.0
        for frames in (range(t_query + 1, num_frames), range(t_query - 1, -1, -1)):
            group = spec.group(query_desc, cells[members], settings)
            for t in frames:
                tracks[members, t], visible[members, t], confidence[members, t] = group.step(source[t])
    tracks = cells_to_pixels(tracks, size, (h, w))
    tracks[torch.arange(n, device=source.device), queries[:, 0].long()] = queries[:, 1:]
    return tracks, visible, confidence
