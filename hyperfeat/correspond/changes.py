"""Changes of state along point tracks.

Tracking says where a point went; its descriptor along the track says what happened to it.
Given per-frame descriptors (T, D, h, w) and tracks (N, T, 2) with visibility (N, T), this
module

1. samples each point's descriptor along its track (bilinear, L2-normalised) → (N, T, D);
2. measures its **drift**: ``1 − cos`` to its *query appearance* (the mean descriptor of its
   first ``query_window`` visible frames from the query frame on) and to a *running reference*
   (an exponential moving average of its past descriptors, momentum ``running_momentum``);
3. **normalises** against reference points (background points when a mask says what the object
   is, else every point), so that a change that hits the whole frame — lighting, exposure,
   white balance, camera shake, motion blur — is not read as a change of state of a point. With
   ``correction: affine`` (default) each frame's descriptors first get the per-channel gain and
   offset that best maps the reference points' descriptors at that frame back onto their query
   appearances (least squares, refitted once without the 25 % worst-fitting references, so an
   object that really changes does not steer it); then, as with ``median``, the median drift of
   the visible references at that frame is subtracted from every point's drift;
4. finds **change points** in each point's normalised drift with PELT (``ruptures``, an L2 cost:
   a change in the mean), penalty ``penalty · σ² · log T`` where σ is the point's own noise
   (median absolute first difference); a change point counts when the mean drift jumps by at
   least ``min_strength`` across it — or, with ``noise_strength`` > 0, by at least
   ``noise_strength`` pooled noise scales: σ_pool, the robust scale (MAD / 0.6745 / √2) of
   the frame-to-frame increments of every analysed point's normalised drift, so that the
   threshold follows the describer's own noise instead of an absolute drift (a describer whose
   drift moves by a few hundredths at a real change has noise of a few thousandths);
5. groups change points of different points that fall within ``tolerance`` frames of each other
   into **events** (frame, points involved, strength) with at least ``min_points`` points, after
   dropping the points whose new look is not new (``novelty``, :func:`novelty_of`: a tracker
   that slips lands on material that was already beside the point);
6. clusters points into **regions** by the events they take part in (region 0: points that never
   change), cuts each region's frames into **state segments** at its events, and averages the
   descriptors of each (region, state) into **prototypes** that can label new frames.

Nothing here runs a model: it sees only descriptor tensors (when
:func:`hyperfeat.video.changes.video_changes` tracks the points itself it uses
:func:`hyperfeat.correspond.tracking.track_appearance` (``tracker: appearance``, default), which
follows a point through its change of state — where a tracker matching only the query's look
loses it — at the price of more slips, or the window tracker (``tracker: query``); measured in
``benchmarks/state_changes.py``; ``standardise`` tracks on per-frame standardised descriptors).
Invisible samples are left out
(NaN drift) and bridged by linear interpolation for the change-point search — unless
``use_occluded``: a tracker that matches appearance calls a point whose appearance changed
"occluded", so its estimated positions are read too; a point still needs ``min_visible``
visible frames to be analysed at all. It is off by default: measured on DAVIS
(``benchmarks/state_changes.py``), reading occluded positions — points that left the frame or
slipped — made more false events than it found changes, once the tracker's motion prior
(``motion_penalty``) keeps a changed point in place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from hyperfeat.correspond.common import _check_descriptors, _check_image_size, sample_descriptors
from hyperfeat.errors import DataError
from hyperfeat.geometry import pixels_to_cells

MIN_FRAMES = 3  # fewer frames have no before and after


@dataclass
class ChangeSettings:
    """Settings of :func:`analyse_changes` (the ``changes`` block of the config)."""

    query_window: int = 3          # frames averaged into a point's query appearance
    running_momentum: float = 0.7  # EMA momentum of the running reference
    reference: str = "auto"        # auto | all | background | none: who normalises the drift
    correction: str = "affine"     # affine | median: how the reference points normalise (see module doc)
    penalty: float = 4.0           # PELT penalty factor (× σ² · log T)
    noise_floor: float = 0.01      # lower bound of σ, in drift units
    min_strength: float = 0.1      # smallest jump of mean normalised drift that counts (noise_strength 0)
    noise_strength: float = 25.0   # > 0: a jump counts at this many pooled noise scales instead (see module doc)
    min_segment: int = 3           # shortest state segment, frames
    tolerance: int = 2             # change points within this many frames form one event
    min_points: int = 7            # an event needs this many points (or all of them, if fewer)
    member_ratio: float = 0.0      # > 0: an event keeps only points jumping ≥ this × its members' upper-quartile jump
    novelty: float = 0.05          # > 0: an event keeps only points whose new look was not already nearby (see novelty_of)
    novelty_radius: int = 2        # cells around the point, in the frame before its change, searched for its new look
    min_visible: int = 3           # a point is analysed when visible in at least this many frames
    tracker: str = "appearance"    # query (track_points) | appearance (track_appearance): how video_changes tracks
    standardise: bool = False      # track on per-frame standardised descriptors (standardise_frames)
    template_update: float = 0.5   # appearance tracker: weight of the previous frame's look in the template
    velocity: float = 1.0          # appearance tracker: constant-velocity prediction (0: search around the last position)
    motion_penalty: float = 1.0    # tracker motion prior when video_changes tracks (similarity − this · (d / radius)²)
    reacquire: bool = False        # query tracker: let it jump to a far better match (video.reacquire_margin)
    use_occluded: bool = False     # also read descriptors where the tracker says occluded (see module doc)

    def __post_init__(self) -> None:
        # the choice settings are checked here, before any frame is described or tracked
        choices = {"reference": ("auto", "all", "background", "none"), "correction": ("affine", "median"),
                   "tracker": ("appearance", "query")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise DataError(f"changes.{name} must be {', '.join(allowed[:-1])} or {allowed[-1]}; "
                                f"got {getattr(self, name)!r}")
        if not 0.0 <= float(self.novelty) <= 2.0:
            raise DataError(f"changes.novelty must be in [0, 2] (a 1 − cosine; 0: off); got {self.novelty!r}")
        if not isinstance(self.novelty_radius, int) or isinstance(self.novelty_radius, bool) or self.novelty_radius < 0:
            raise DataError(f"changes.novelty_radius must be a whole number of cells ≥ 0; got {self.novelty_radius!r}")
        if not 0.0 <= float(self.member_ratio) <= 1.0:
            raise DataError(f"changes.member_ratio must be in [0, 1] (0: keep every point of an event); "
                            f"got {self.member_ratio!r}")

    @classmethod
    def from_config(cls, block) -> "ChangeSettings":
        values = dict(block) if block is not None else {}
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise DataError(f"unknown changes settings {unknown}; known: {sorted(known)}")
        return cls(**values)


@dataclass
class ChangeEvent:
    """One change of state: at ``frame`` (the first frame of the new state) the points
    ``points`` (indices into the tracks) changed; ``strength``: mean jump of their normalised
    drift (positive: away from the query appearance); ``region``: the region it defines."""

    index: int
    frame: int
    points: list[int]
    strength: float
    region: int = -1
    point_frames: list[int] = field(default_factory=list)  # each point's own change frame

    def to_dict(self) -> dict:
        return {"event": self.index, "frame": self.frame, "num_points": len(self.points),
                "strength": round(self.strength, 5), "region": self.region, "points": self.points,
                "point_frames": self.point_frames}


@dataclass
class StateSegment:
    """Frames [start, end) of ``region`` spent in state ``state`` (0: as at the query)."""

    region: int
    state: int
    start: int
    end: int
    prototype: int  # index into StatePrototypes


@dataclass
class StatePrototypes:
    """Mean descriptors (S, D) (L2-normalised) of each (region, state); ``names`` "region r / state s"."""

    descriptors: torch.Tensor
    region: list[int]
    state: list[int]

    @property
    def names(self) -> list[str]:
        return [f"region {r} / state {s}" for r, s in zip(self.region, self.state)]

    def label(self, descriptors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Descriptors (..., D) or one frame's map (D, h, w) → nearest prototype index and its
        cosine similarity, each (...) or (h, w)."""
        desc = descriptors.float()
        if desc.ndim == 3 and desc.shape[0] == self.descriptors.shape[1]:
            desc = desc.permute(1, 2, 0)  # (h, w, D)
        if desc.shape[-1] != self.descriptors.shape[1]:
            raise DataError(f"descriptors of dimension {desc.shape[-1]} cannot be labelled by prototypes of "
                            f"dimension {self.descriptors.shape[1]}")
        sim = F.normalize(desc, dim=-1) @ self.descriptors.T.to(desc.device)  # (..., S)
        best, index = sim.max(dim=-1)
        return index, best


@dataclass
class StateChanges:
    """The result of :func:`analyse_changes`. Per point n and frame t (NaN where occluded):

    ``drift_query`` (N, T): 1 − cos to the query appearance; ``drift_running`` (N, T): 1 − cos to
    the running reference; ``drift`` (N, T): the query drift after the global correction by the
    reference points (``is_reference`` (N,)) minus ``baseline`` (T,), their median. ``analysed`` (N,): points
    visible in enough frames to be judged. ``events``: the changes found (empty: none);
    ``regions`` (N,) int: 0 never changed, r ≥ 1 changed at the events of region r;
    ``point_states`` (N, T) int: prototype index per point and frame; ``segments`` per region;
    ``message``: a one-line account (e.g. why no change was found).
    """

    queries: torch.Tensor
    tracks: torch.Tensor
    visible: torch.Tensor
    is_reference: torch.Tensor
    analysed: torch.Tensor
    drift_query: torch.Tensor
    drift_running: torch.Tensor
    drift: torch.Tensor
    baseline: torch.Tensor
    events: list[ChangeEvent]
    regions: torch.Tensor
    point_states: torch.Tensor
    segments: list[StateSegment]
    prototypes: Optional[StatePrototypes]
    settings: ChangeSettings
    message: str
    threshold: float = float("nan")  # the smallest jump that counted (min_strength or noise_strength · σ_pool)

    @property
    def found(self) -> bool:
        return bool(self.events)

    @property
    def num_frames(self) -> int:
        return int(self.tracks.shape[1])

    def events_table(self) -> list[dict]:
        """One row per event (frame, number of points, strength, region)."""
        return [{"event": e.index, "frame": e.frame, "num_points": len(e.points),
                 "strength": round(e.strength, 5), "region": e.region,
                 "points": " ".join(str(p) for p in e.points)} for e in self.events]

    def to_dict(self) -> dict:
        """JSON-able record (NaN → None)."""
        def rows(x: torch.Tensor) -> list:
            arr = x.detach().cpu().numpy().astype(float)
            return [[None if not math.isfinite(v) else round(v, 5) for v in r] for r in arr]

        return {
            "message": self.message,
            "num_points": int(self.tracks.shape[0]),
            "num_frames": self.num_frames,
            "events": [e.to_dict() for e in self.events],
            "regions": self.regions.tolist(),
            "segments": [vars(s) for s in self.segments],
            "prototypes": self.prototypes.names if self.prototypes is not None else [],
            "queries": self.queries.tolist(),
            "is_reference": self.is_reference.tolist(),
            "analysed": self.analysed.tolist(),
            "baseline": [None if not math.isfinite(v) else round(v, 5) for v in self.baseline.tolist()],
            "drift": rows(self.drift),
            "drift_query": rows(self.drift_query),
            "drift_running": rows(self.drift_running),
            "point_states": self.point_states.tolist(),
            "settings": vars(self.settings),
            "threshold": None if not math.isfinite(self.threshold) else round(self.threshold, 6),
        }


# ---------------------------------------------------------------------------------------------
# pieces


def sample_along_tracks(desc: torch.Tensor, tracks: torch.Tensor, image_size: Sequence[int],
                        normalise: bool = True) -> torch.Tensor:
    """desc (T, D, h, w), tracks (N, T, 2) xy pixels of ``image_size`` (W, H) → (N, T, D)
    bilinear samples (L2-normalised when ``normalise``)."""
    num_frames, _, h, w = desc.shape
    cells = pixels_to_cells(tracks.float(), tuple(image_size), (h, w))  # (N, T, 2)
    scale = cells.new_tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)])
    grid = (cells * scale - 1.0).permute(1, 0, 2)[:, :, None, :]  # (T, N, 1, 2)
    out = F.grid_sample(desc, grid, mode="bilinear", padding_mode="border", align_corners=True)  # (T, D, N, 1)
    out = out[..., 0].permute(2, 0, 1)  # (N, T, D)
    return F.normalize(out, dim=-1) if normalise else out


def drift_curves(feats: torch.Tensor, visible: torch.Tensor, query_frames: torch.Tensor,
                 query_window: int, momentum: float) -> tuple[torch.Tensor, torch.Tensor]:
    """feats (N, T, D), visible (N, T), query_frames (N,) → drift to the query appearance and to
    the running reference, each (N, T) with NaN where occluded."""
    num_points, num_frames, _ = feats.shape
    vis = visible.float()
    frames = torch.arange(num_frames, device=feats.device)
    after = frames[None, :] >= query_frames[:, None]  # (N, T)
    order = torch.cumsum((vis * after).long(), dim=1)
    window = after & visible & (order <= max(1, query_window))
    window[torch.arange(num_points), query_frames] = True  # the query frame always counts
    query_app = F.normalize((feats * window[..., None]).sum(dim=1), dim=-1)  # (N, D)
    drift_q = 1.0 - (feats * query_app[:, None]).sum(-1)  # (N, T)

    drift_r = torch.full((num_points, num_frames), float("nan"), device=feats.device)
    ref = feats[:, 0].clone()
    seen = visible[:, 0].clone()
    for t in range(1, num_frames):
        cos = (feats[:, t] * ref).sum(-1)
        drift_r[:, t] = torch.where(seen & visible[:, t], 1.0 - cos, torch.full_like(cos, float("nan")))
        upd = visible[:, t]
        blended = F.normalize(momentum * ref + (1 - momentum) * feats[:, t], dim=-1)
        ref = torch.where((upd & seen)[:, None], blended, torch.where(upd[:, None], feats[:, t], ref))
        seen = seen | upd
    nan = torch.full_like(drift_q, float("nan"))
    return torch.where(visible, drift_q, nan), drift_r


def global_correction(feats: torch.Tensor, readable: torch.Tensor, is_reference: torch.Tensor,
                      query_frames: torch.Tensor) -> torch.Tensor:
    """feats (N, T, D) (not normalised: a gain must stay a gain) → (N, T, D) with, per frame t, the per-channel affine map a_t ⊙ f + b_t
    fitted on the reference points (their frame-t descriptor → their query-frame descriptor)
    applied to every point, then L2-normalised. Frames with fewer than 4 readable references
    are left as they are."""
    num_points, num_frames, _ = feats.shape
    target = feats[torch.arange(num_points), query_frames]  # (N, D)
    out = feats.clone()
    # (descriptor maps of a describer are compared by cosine: scale-free, so fitting the raw
    # values is right, and the result is normalised at the end)
    for t in range(num_frames):
        use = readable[:, t] & is_reference
        for _ in range(2):
            if int(use.sum()) < 4:
                break
            x, y = feats[use, t], target[use]  # (M, D)
            mx, my = x.mean(0), y.mean(0)
            var = ((x - mx) ** 2).mean(0)
            gain = ((x - mx) * (y - my)).mean(0) / var.clamp_min(1e-8)
            gain = torch.where(var > 1e-8, gain, torch.ones_like(gain))
            offset = my - gain * mx
            fitted = feats[:, t] * gain + offset  # (N, D)
            resid = ((fitted - target) ** 2).sum(-1)  # (N,)
            cut = torch.quantile(resid[use], 0.75)
            out[:, t] = fitted
            use = use & (resid <= cut)
    return F.normalize(out, dim=-1)


def reference_baseline(drift: torch.Tensor, is_reference: torch.Tensor) -> torch.Tensor:
    """(N, T) drift, (N,) bool → (T,) median over the visible reference points (0 where none)."""
    ref = drift[is_reference]  # (M, T)
    if ref.shape[0] == 0:
        return torch.zeros(drift.shape[1], device=drift.device)
    base = torch.nanmedian(ref, dim=0).values
    return torch.nan_to_num(base, nan=0.0)


def _interpolate_nans(signal: np.ndarray) -> np.ndarray:
    good = np.isfinite(signal)
    if good.all():
        return signal
    idx = np.arange(len(signal))
    return np.interp(idx, idx[good], signal[good])


def pooled_noise(drift: np.ndarray) -> float:
    """(N, T) drift (NaN: missing) → the robust scale of its frame-to-frame increments pooled
    over every point and frame (MAD / 0.6745 / √2: the σ of i.i.d. noise on a flat signal);
    0 when no two neighbouring samples are finite."""
    diffs = np.diff(np.asarray(drift, dtype=np.float64), axis=1).ravel()
    diffs = diffs[np.isfinite(diffs)]
    if diffs.size == 0:
        return 0.0
    return float(np.median(np.abs(diffs - np.median(diffs)))) / 0.6745 / math.sqrt(2)


def change_points(signal: np.ndarray, settings: ChangeSettings,
                  min_jump: Optional[float] = None) -> list[tuple[int, float]]:
    """Change points of a 1-D drift signal (T,) (NaN: missing) → [(frame, jump)], ``frame`` the
    first frame of the new segment, ``jump`` the mean after minus the mean before (neighbouring
    segments); only jumps of at least ``min_jump`` (default ``min_strength``) in size."""
    import ruptures

    x = _interpolate_nans(signal.astype(np.float64))
    num = len(x)
    min_size = max(1, int(settings.min_segment))
    if num < 2 * min_size:
        return []
    own = pooled_noise(x[None])
    sigma = max(own, settings.noise_floor)
    pen = settings.penalty * sigma ** 2 * math.log(num)
    bkps = ruptures.Pelt(model="l2", min_size=min_size, jump=1).fit(x[:, None]).predict(pen=pen)
    edges = [0] + [int(b) for b in bkps]  # the last is num
    out = []
    for i in range(1, len(edges) - 1):
        before = x[edges[i - 1]:edges[i]].mean()
        after = x[edges[i]:edges[i + 1]].mean()
        jump = float(after - before)
        if abs(jump) >= (settings.min_strength if min_jump is None else min_jump):
            out.append((edges[i], jump))
    return out


def novelty_of(desc: torch.Tensor, tracks: torch.Tensor, size: tuple[int, int], point: int, frame: int,
               settings: ChangeSettings) -> float:
    """How new a point's look after its change at ``frame`` is: 1 − the best cosine between its
    descriptor at ``frame`` + 1 and the cells within ``novelty_radius`` of where it was at ``frame``
    − ``tolerance`` − 1 (before the change, outside the event's frames). desc (T, D, h, w)
    L2-normalised, tracks (N, T, 2) pixels of a ``size`` (W, H) frame.

    A real change of state brings a look that was not there before (paint, a new texture); a
    tracker that slips lands on material that was already beside the point, and reads as a
    change of the same size. The test tells them apart without knowing the truth, at a price: a
    part removed reveals what was already behind it, and that looks like a slip."""
    num_frames, _, h, w = desc.shape
    after, before = min(frame + 1, num_frames - 1), max(frame - int(settings.tolerance) - 1, 0)
    cells = pixels_to_cells(tracks[point], size, (h, w))  # (T, 2)
    look = sample_descriptors(desc[after], cells[after][None])[0]  # (D,)
    cx, cy = cells[before].round().long().tolist()
    r = int(settings.novelty_radius)
    window = desc[before][:, max(cy - r, 0):max(cy + r + 1, 1), max(cx - r, 0):max(cx + r + 1, 1)]  # (D, ≤2r+1, ≤2r+1)
    if window.numel() == 0:  # the point was off the frame: nothing was there
        return 2.0
    return 1.0 - float((look @ window.flatten(1)).max())


def group_events(point_changes: dict[int, list[tuple[int, float]]], num_analysed: int,
                 settings: ChangeSettings, min_jump: Optional[float] = None,
                 novelty: Optional[Callable[[int, int], float]] = None) -> list[ChangeEvent]:
    """Change points of many points → events: repeatedly the frame with most change points within
    ``tolerance`` becomes an event holding every change point within ``tolerance`` of it (one per
    point, the strongest); kept when it has ``min(min_points, num_analysed)`` points and their
    mean jump is at least ``min_jump`` (default ``min_strength``) in size. With ``member_ratio`` > 0
    the members whose jump is under ``member_ratio`` × the upper quartile of the members' jumps are
    dropped first: points beside a changed object (whose descriptor support overlaps it) or noise
    that happens to fall in the event's frames jump far less than the object itself. With
    ``settings.novelty`` > 0 and ``novelty(point, frame)`` (:func:`novelty_of`), the members whose
    new look is less new than that are dropped next."""
    min_jump = settings.min_strength if min_jump is None else min_jump
    items = [(f, n, s) for n, lst in point_changes.items() for f, s in lst]
    need = max(1, min(int(settings.min_points), num_analysed))
    tol = int(settings.tolerance)
    events: list[ChangeEvent] = []
    while items:
        frames = np.array([f for f, _, _ in items])
        counts = [(np.abs(frames - f) <= tol).sum() for f in frames]
        best = int(np.argmax(counts))
        centre = int(frames[best])
        members = [it for it in items if abs(it[0] - centre) <= tol]
        items = [it for it in items if abs(it[0] - centre) > tol]
        per_point: dict[int, tuple[int, float]] = {}
        for f, n, s in members:
            if n not in per_point or abs(s) > abs(per_point[n][1]):
                per_point[n] = (f, s)
        if settings.member_ratio > 0 and per_point:
            mags = np.abs(np.array([s for _, s in per_point.values()]))
            floor = float(settings.member_ratio) * float(np.quantile(mags, 0.75))
            per_point = {n: fs for n, fs in per_point.items() if abs(fs[1]) >= floor}
        if settings.novelty > 0 and novelty is not None and len(per_point) >= need:
            per_point = {n: fs for n, fs in per_point.items() if novelty(n, fs[0]) >= settings.novelty}
        if len(per_point) < need:
            continue
        pts = sorted(per_point)
        frame = int(np.median([per_point[n][0] for n in pts]))
        strength = float(np.mean([per_point[n][1] for n in pts]))
        if abs(strength) < min_jump:  # points jumping every which way: noise, not a state
            continue
        events.append(ChangeEvent(0, frame, pts, strength, point_frames=[int(per_point[n][0]) for n in pts]))
    events.sort(key=lambda e: e.frame)
    for i, e in enumerate(events):
        e.index = i
    return events


def _regions_and_states(events: list[ChangeEvent], feats: torch.Tensor, visible: torch.Tensor,
                        analysed: torch.Tensor):
    num_points, num_frames, _ = feats.shape
    signature: list[tuple[int, ...]] = [() for _ in range(num_points)]
    for e in events:
        for n in e.points:
            signature[n] = signature[n] + (e.index,)
    keys = sorted({s for n, s in enumerate(signature) if analysed[n] and s},
                  key=lambda s: (-sum(1 for x in signature if x == s), s))
    region_of = {s: r + 1 for r, s in enumerate(keys)}
    regions = torch.tensor([region_of.get(s, 0) for s in signature], dtype=torch.long)
    regions[~analysed.cpu()] = -1
    for e in events:  # an event's region: where most of its points ended up
        votes = regions[e.points]
        votes = votes[votes > 0]
        e.region = int(torch.mode(votes).values) if len(votes) else 0

    segments: list[StateSegment] = []
    protos: list[torch.Tensor] = []
    proto_region: list[int] = []
    proto_state: list[int] = []
    point_states = torch.full((num_points, num_frames), -1, dtype=torch.long)
    for r in range(0, len(keys) + 1):
        members = (regions == r).nonzero()[:, 0]
        if len(members) == 0:
            continue
        cuts = [0] + sorted({events[i].frame for i in (keys[r - 1] if r > 0 else ())}) + [num_frames]
        for s in range(len(cuts) - 1):
            start, end = cuts[s], cuts[s + 1]
            if end <= start:
                continue
            sel = visible[members, start:end]  # (m, L)
            block = feats[members, start:end]  # (m, L, D)
            if sel.any():
                proto = F.normalize((block * sel[..., None]).sum(dim=(0, 1)), dim=-1)
            else:
                proto = F.normalize(block.sum(dim=(0, 1)), dim=-1)
            index = len(protos)
            protos.append(proto.cpu())
            proto_region.append(r)
            proto_state.append(s)
            segments.append(StateSegment(region=r, state=s, start=start, end=end, prototype=index))
            point_states[members, start:end] = index
    prototypes = StatePrototypes(torch.stack(protos), proto_region, proto_state) if protos else None
    return regions, point_states, segments, prototypes


# ---------------------------------------------------------------------------------------------
# the analysis


@torch.no_grad()
def analyse_changes(
    desc: torch.Tensor,
    queries: torch.Tensor,
    tracks: torch.Tensor,
    visible: torch.Tensor,
    image_size: Sequence[int],
    is_reference: Optional[torch.Tensor] = None,
    settings: Optional[ChangeSettings] = None,
) -> StateChanges:
    """States and changes of state of tracked points.

    desc (T, D, h, w) per-frame descriptors; queries (N, 3) (t, x, y); tracks (N, T, 2) xy and
    visible (N, T) in pixels of an ``image_size`` (W, H) frame (as :func:`track_points` returns
    them); ``is_reference`` (N,) bool: the points whose median drift is subtracted (default, with
    ``settings.reference`` auto or all: every point; none: no normalisation). Fewer than 3 frames
    raise :class:`DataError`; when no point is visible long enough the result says so and holds
    no event.
    """
    settings = settings or ChangeSettings()
    raw = desc
    desc = _check_descriptors(desc)
    size = _check_image_size(image_size)
    num_frames = desc.shape[0]
    if num_frames < MIN_FRAMES:
        raise DataError(f"a change of state needs at least {MIN_FRAMES} frames (a before and an after); "
                        f"got {num_frames}")
    tracks = torch.as_tensor(tracks, dtype=torch.float32).to(desc.device)
    visible = torch.as_tensor(visible, dtype=torch.bool).to(desc.device)
    queries = torch.as_tensor(queries, dtype=torch.float32).to(desc.device)
    if tracks.ndim != 3 or tracks.shape[1:] != (num_frames, 2):
        raise DataError(f"tracks must be (N, {num_frames}, 2) xy; got {tuple(tracks.shape)}")
    num_points = tracks.shape[0]
    if num_points == 0:
        raise DataError("no point to analyse: the tracks are empty")
    if visible.shape != tracks.shape[:2]:
        raise DataError(f"visible must be {tuple(tracks.shape[:2])} (N, T); got {tuple(visible.shape)}")
    if queries.shape != (num_points, 3):
        raise DataError(f"queries must be ({num_points}, 3) rows of (t, x, y); got {tuple(queries.shape)}")
    if is_reference is None or settings.reference == "all":
        is_reference = torch.ones(num_points, dtype=torch.bool)
    is_reference = torch.as_tensor(is_reference, dtype=torch.bool).to(desc.device)
    if settings.reference == "none":
        is_reference = torch.zeros(num_points, dtype=torch.bool, device=desc.device)

    feats = sample_along_tracks(desc, tracks, size)  # (N, T, D)
    query_frames = queries[:, 0].long()
    analysed = visible.sum(dim=1) >= max(MIN_FRAMES, int(settings.min_visible))
    readable = (visible | analysed[:, None]) if settings.use_occluded else visible
    drift_q, drift_r = drift_curves(feats, readable, query_frames, settings.query_window, settings.running_momentum)
    corrected = drift_q
    if settings.correction == "affine" and bool(is_reference.any()):
        raw_feats = sample_along_tracks(raw.float().to(desc.device), tracks, size, normalise=False)
        fixed = global_correction(raw_feats, readable & analysed[:, None], is_reference & analysed, query_frames)
        corrected, _ = drift_curves(fixed, readable, query_frames, settings.query_window, settings.running_momentum)
    baseline = reference_baseline(corrected, is_reference & analysed)  # (T,)
    drift = corrected - baseline[None]

    events: list[ChangeEvent] = []
    min_jump = settings.min_strength
    if not analysed.any():
        message = (f"no change found: every point is occluded in all but at most {int(visible.sum(1).max())} "
                   f"frame(s); at least {max(MIN_FRAMES, int(settings.min_visible))} visible frames are needed")
    else:
        point_changes = {}
        drift_np = drift.cpu().numpy()
        if settings.noise_strength > 0:
            min_jump = settings.noise_strength * pooled_noise(drift_np[analysed.cpu().numpy()])
        for n in analysed.nonzero()[:, 0].tolist():
            found = change_points(drift_np[n], settings, min_jump)
            if found:
                point_changes[n] = found
        events = group_events(point_changes, int(analysed.sum()), settings, min_jump,
                              novelty=lambda n, f: novelty_of(desc, tracks, size, n, f, settings))
        if events:
            message = f"{len(events)} change event(s) in {num_frames} frames: " + ", ".join(
                f"frame {e.frame} ({len(e.points)} points, strength {e.strength:+.3f})" for e in events)
        else:
            message = (f"no change found: {int(analysed.sum())} points analysed over {num_frames} frames; "
                       f"no jump of normalised drift ≥ {min_jump:.4g} shared by "
                       f"{min(settings.min_points, int(analysed.sum()))} points")
    regions, point_states, segments, prototypes = _regions_and_states(events, feats, readable, analysed)
    return StateChanges(
        queries=queries.cpu(), tracks=tracks.cpu(), visible=visible.cpu(), is_reference=is_reference.cpu(),
        analysed=analysed.cpu(), drift_query=drift_q.cpu(), drift_running=drift_r.cpu(), drift=drift.cpu(),
        baseline=baseline.cpu(), events=events, regions=regions, point_states=point_states,
        segments=segments, prototypes=prototypes, settings=settings, message=message, threshold=float(min_jump),
    )
