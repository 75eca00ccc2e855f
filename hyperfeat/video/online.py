"""Online point tracking: frames arrive one at a time (a camera, a stream), each frame's
positions, visibility and confidence come back at once.

    tracker = Tracker(describer, [[0, 120, 80], [5, 300, 200]])
    for frame in camera:                       # (3, H, W) in [0, 1], PIL image or (H, W, 3) uint8
        xy, visible, confidence = tracker.step(frame)   # (N, 2), (N,), (N,)

Memory is bounded: the tracker keeps the descriptors of the last ``video.online_window`` frames
(so queries added with :meth:`Tracker.add_queries` may start up to that many frames back) plus,
per query frame, that frame's descriptors and each point's small state. The tracker is
``video.tracker`` from the registry (:mod:`hyperfeat.correspond.track`); its per-frame ``step``
is the code the offline driver runs, so online and offline agree on every frame at or after a
query's frame (offline also tracks
backward from the query, which an online tracker cannot). A query's position before its frame
is NaN, not visible, confidence 0.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Optional

import numpy as np
import torch
from PIL import Image

from hyperfeat.correspond.track import settings_from_config, tracker_spec
from hyperfeat.errors import DataError
from hyperfeat.geometry import cells_to_pixels, pixels_to_cells
from hyperfeat.video.frames import frame_describer, resized_size


def _as_frame(frame) -> torch.Tensor:
    """(3, H, W) float in [0, 1] from a tensor, a PIL image or an (H, W, 3) uint8 array."""
    from hyperfeat.images import pil_to_tensor

    if isinstance(frame, Image.Image):
        return pil_to_tensor(frame.convert("RGB"))
    if isinstance(frame, np.ndarray):
        if frame.ndim != 3 or frame.shape[-1] != 3:
            raise DataError(f"a frame array must be (H, W, 3) uint8; got shape {frame.shape}")
        return torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).float() / 255.0
    if isinstance(frame, torch.Tensor) and frame.ndim == 3 and frame.shape[0] == 3:
        return frame.float()
    shape = tuple(frame.shape) if hasattr(frame, "shape") else type(frame).__name__
    raise DataError(f"a frame must be a (3, H, W) tensor in [0, 1], a PIL image or an (H, W, 3) array; got {shape}")


class Tracker:
    """Online tracker over any describer; see the module docstring.

    ``queries`` (N, 3) (t, x, y) in pixels of the frames as given to :meth:`step`; t counts
    frames from 0. ``window`` (default ``video.online_window``) bounds the past descriptors kept.
    ``tracker`` (default ``video.tracker``) names a registered tracker; ``settings`` its settings
    (default: ``video.trackers.<tracker>``).
    """

    def __init__(
        self,
        describer,
        queries=None,
        window: Optional[int] = None,
        tracker: Optional[str] = None,
        settings: Optional[Any] = None,
    ):
        self.describer = describer
        self.describe = frame_describer(describer)
        self.tracker = str(tracker or describer.cfg.video.tracker)
        self.group_class = tracker_spec(self.tracker).group
        self.settings = settings if settings is not None else settings_from_config(describer.cfg, self.tracker)
        self.window = int(window if window is not None else describer.cfg.video.online_window)
        if self.window < 1:
            raise DataError(f"video.online_window must be ≥ 1; got {self.window}")
        self.frame_size = int(describer.cfg.video.frame_size) if describer.cfg.video.get("frame_size") else None
        self.recent: deque = deque(maxlen=self.window)  # (t, (D, h, w) normalised descriptors)
        self.queries = torch.zeros(0, 3)
        self.groups: list[tuple[torch.Tensor, Any]] = []  # (members, point group)
        self.pending: list[int] = []  # query indices whose frame has not come yet
        self.state = torch.zeros(0, 4)  # per query: x, y (cells), visible, confidence
        self.t = -1
        self.size: Optional[tuple[int, int]] = None
        self.grid: Optional[tuple[int, int]] = None
        if queries is not None:
            self.add_queries(queries)

    def add_queries(self, queries) -> None:
        """More (M, 3) queries; a query may start at a future frame or within the last ``window`` frames."""
        queries = torch.as_tensor(queries, dtype=torch.float32).reshape(-1, 3)
        if not torch.isfinite(queries).all():
            raise DataError("queries have non-finite values")
        bad = [q for q in queries.tolist() if q[0] != int(q[0]) or q[0] < 0]
        if bad:
            raise DataError(f"a query's frame t must be an integer ≥ 0; got {bad[0]}")
        oldest = self.recent[0][0] if self.recent else self.t + 1
        early = [q for q in queries.tolist() if q[0] < oldest]
        if early:
            raise DataError(f"query {early[0]} starts at a frame older than the window (frames {oldest}…{self.t} kept)")
        start = self.queries.shape[0]
        self.queries = torch.cat([self.queries, queries])
        self.state = torch.cat(
            [self.state, torch.tensor([[float("nan"), float("nan"), 0.0, 0.0]]).repeat(len(queries), 1)]
        )
        self.pending.extend(range(start, start + len(queries)))
        if self.recent:
            self._start_pending(catch_up=True)

    def _start_pending(self, catch_up: bool = False) -> None:
        """Start the pending queries whose frame is in the window; with ``catch_up`` follow them to now."""
        kept = {t: d for t, d in self.recent}
        ready = [i for i in self.pending if int(self.queries[i, 0]) in kept]
        for t_query in sorted({int(self.queries[i, 0]) for i in ready}):
            members = torch.tensor([i for i in ready if int(self.queries[i, 0]) == t_query])
            cells = self._cells(self.queries[members, 1:])
            group = self.group_class(kept[t_query], cells, self.settings)
            self.state[members] = torch.cat([cells.cpu(), torch.ones(len(members), 2)], 1)
            for t, desc in self.recent:
                if t > t_query:
                    pos, vis, conf = group.step(desc)
                    self.state[members] = torch.stack([pos[:, 0], pos[:, 1], vis.float(), conf], 1).cpu()
            self.groups.append((members, group))
        self.pending = [i for i in self.pending if i not in ready]

    def _cells(self, points: torch.Tensor) -> torch.Tensor:
        width, height = self.size
        bad = [p for p in points.tolist() if not (-0.5 <= p[0] <= width - 0.5 and -0.5 <= p[1] <= height - 0.5)]
        if bad:
            raise DataError(f"query at (x, y)={tuple(bad[0])} is outside the {width}×{height} frame")
        return pixels_to_cells(points.to(self.describer.device), self.size, self.grid)

    @torch.no_grad()
    def step(self, frame) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The next frame → positions (N, 2) xy pixels, visible (N,) bool, confidence (N,)."""
        image = _as_frame(frame)  # (3, H, W)
        size = (int(image.shape[-1]), int(image.shape[-2]))
        if self.size is None:
            self.size = size
        elif size != self.size:
            raise DataError(
                f"frame {self.t + 1} has size {size} (W, H) but the stream started with {self.size}: "
                "every frame of a stream must have one size"
            )
        new = resized_size(size, self.frame_size)
        if new != size:  # the same reading as offline: longer side at video.frame_size (PIL bilinear)
            from hyperfeat.images import pil_to_tensor

            pil = Image.fromarray((image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())
            image = pil_to_tensor(pil.resize(new, Image.BILINEAR))
        desc = torch.nn.functional.normalize(self.describe(image[None].to(self.describer.device))[0].float(), dim=0)
        self.t += 1
        self.grid = tuple(desc.shape[-2:])
        for members, group in self.groups:
            pos, vis, conf = group.step(desc)
            self.state[members] = torch.stack([pos[:, 0], pos[:, 1], vis.float(), conf], 1).cpu()
        self.recent.append((self.t, desc))
        self._start_pending()
        xy = cells_to_pixels(self.state[:, :2], self.size, self.grid)
        for i in range(len(self.queries)):  # at its own frame a query is itself
            if int(self.queries[i, 0]) == self.t:
                xy[i] = self.queries[i, 1:]
        return xy, self.state[:, 2].bool(), self.state[:, 3].clone()
