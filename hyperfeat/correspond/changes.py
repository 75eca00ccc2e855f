"""Changes of state along point tracks.

Tracking says where a point went; its descriptor along the track says what happened to it.
Given per-frame descriptors and point positions, frame after frame, :class:`OnlineChanges`

1. **carries** each point by the motion of its neighbours (``coherent``): the median displacement,
   since the query frame, of its ``neighbours`` nearest points of the same kind (object or
   reference) that are visible. A point further than ``slip_radius`` cells from where they carry
   it has *slipped* (its tracker followed other material) and is read where they carry it; a
   point that *changes* moves with its neighbours while its look changes, and is read in place;
2. samples the (L2-normalised) descriptors at the points and measures each point's **drift**:
   the distance of its look to its query appearance (the mean of its first ``query_window``
   visible frames), each channel in units of its own noise — the median frame-to-frame step of
   that channel over all points in the first ``lookaround`` frames — so that channels that are
   steady while nothing happens weigh more than those that flicker, whatever the describer;
3. removes what is common to the frame: the references' median drift (the *baseline*: exposure,
   white balance, lighting, blur, shake, compression move every point; references are background
   points when a mask says what the object is, else every point), and judges the rest in
   **noise units** ``z``: its jump above the point's recent level divided by ``√(s_t² + σ_n²)``,
   s_t the references' robust spread of the same jump at frame t and σ_n the robust scale of the
   point's own frame-to-frame drift in its first ``lookaround`` frames. The threshold thus
   follows the describer's own noise;
4. a point **changes** when its ``z`` stays above ``0.8 · threshold`` (``GROW_SHARE``) for
   ``persist`` visible frames running, and is kept when it is still above that ``lookaround``
   frames after it crossed (a state persists; a passing shadow or occluder does not); it is
   *strong* when its new level is above ``threshold``. Its change *ends* at the first frame from
   the crossing where it reaches 85 % of its new level, and *starts* at the first frame of the run
   back from that end that stays above the noise (1 unit) and above a fifth of the new level (a
   gradual change: where it began; a small early step, e.g. of motion, before a larger change
   crosses first but is not where it began);
5. a kept change whose new look was already beside the point just before its start (within
   ``NEAR_CELLS`` cells, nearer than ``novelty`` × the change) is **moved material** — a spin, a
   roll, a slip its neighbours shared — not a change: the point is measured from that look on;
6. changed points that are spatial neighbours (query positions within 2.5 lattice spacings, or
   among each other's ``neighbours`` nearest points of the same kind) and whose changes overlap
   in time (within ``tolerance`` frames) form a changed **region** when there are at least
   ``min_points`` of them, one is strong (hysteresis: a region grows from a clear change into
   the weaker ones around it) and their mean jump of look is at least ``min_strength`` drift
   units (a significant but tiny change of very steady points is none) — so a change of part of
   an object is found on that part, and of one object among several on that one, while
   scattered noisy points form nothing; regions whose changes overlap in time are one **event**
   (one moment of change);
7. each event defines a **region** (a point's latest event); the frames of a region before its
   start and from its end on are its two **states**, and the mean descriptors of each (region, state) are **prototypes**
   that label the frames of other clips (:meth:`StatePrototypes.label_frames`,
   :meth:`StateChanges.save`, :func:`load_states`).

Everything is causal with a bounded lag, and memory that does not grow with the clip's length
but for the curves kept for the pictures (``keep_curves``): :func:`analyse_changes` is
:class:`OnlineChanges` fed every frame, so online and offline give the same events.

A point may change several times (watching again from its new level); its region and states are
those of its latest change. Nothing here runs a model: it sees only descriptor tensors.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, fields
from pathlib import Path
from statistics import median_low
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from hyperfeat.errors import DataError
from hyperfeat.geometry import pixels_to_cells

MIN_FRAMES = 3  # fewer frames have no before and after
END_LEVEL = 0.85  # a change ends where its drift reaches this share of its new level
START_LEVEL = 1.0  # ... and starts after the last frame within this many noise units of the level before
START_SHARE = 0.2  # ... or within this share of its new level (a gradual change starts where it leaves the noise)
GROW_SHARE = 0.8  # a point this share of `threshold` above its level may join a region that has one at `threshold`
SCALE_FLOOR = 0.05  # a descriptor channel's noise scale is at least this share of the mean one
NEAR_CELLS = 2  # cells around a point searched for its new look just before its change (see `novelty`)
LINK_SPACINGS = (
    2.5  # changed points closer than this many lattice spacings are neighbours (one unchanged point between)
)


@dataclass
class ChangeSettings:
    """Settings of the state-change analysis (the ``changes`` block of the config; the one home
    of their defaults, checked against ``configs/default.yaml`` by a test)."""

    query_window: int = 3  # frames averaged into a point's query appearance
    reference: str = "auto"  # auto | all | none: which points normalise the drift (auto: background with a mask)
    threshold: float = 6.0  # a point changes when its drift stays this many noise units above its level before
    persist: int = 3  # ... for this many visible frames running (the shortest state)
    lookaround: int = 8  # frames searched back for a start, forward for the new level; also the noise window
    tolerance: int = 2  # changed neighbours whose changes overlap within this many frames form one region
    min_points: int = 3  # a changed region needs this many changed neighbouring points
    coherent: bool = True  # read a point where its neighbours' motion carries it when it slipped
    neighbours: int = 6  # nearest points of the same kind whose motion carries a point
    slip_radius: float = 1.5  # cells: further than this from where its neighbours carry it, a point slipped
    novelty: float = 0.7  # a new look nearer than this share of its distance to the old one to a look beside the point before: moved, not changed (0: off)
    min_strength: float = 0.2  # a changed region's mean jump of look (drift units) is at least this
    tracker: str = "appearance"  # how video_changes tracks: a registered tracker (settings: video.trackers.<name>)

    def __post_init__(self) -> None:
        # the choice settings are checked here, before any frame is described or tracked
        from hyperfeat.correspond.track import TRACKERS

        choices = {"reference": ("auto", "all", "none"), "tracker": tuple(TRACKERS)}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise DataError(
                    f"changes.{name} must be {', '.join(allowed[:-1])} or {allowed[-1]}; got {getattr(self, name)!r}"
                )
        for name in ("query_window", "persist", "lookaround", "min_points", "neighbours"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise DataError(f"changes.{name} must be a whole number ≥ 1; got {value!r}")
        if self.persist > self.lookaround:
            raise DataError(f"changes.persist ({self.persist}) must not exceed changes.lookaround ({self.lookaround})")
        if not 0.0 <= float(self.novelty) <= 1.0:
            raise DataError(
                f"changes.novelty must be in [0, 1] (a share of the change's distance); got {self.novelty!r}"
            )
        if not float(self.min_strength) >= 0:
            raise DataError(f"changes.min_strength must be ≥ 0 drift units; got {self.min_strength!r}")
        if not float(self.threshold) > 0:
            raise DataError(f"changes.threshold must be > 0 noise units; got {self.threshold!r}")

    @classmethod
    def from_config(cls, block) -> "ChangeSettings":
        """From the ``changes`` block (a missing key takes the default here; an unknown one is an error)."""
        from hyperfeat.settings import from_block

        known = {f.name for f in fields(cls)}
        unknown = sorted(set(block or {}) - known)
        if unknown:
            raise DataError(f"unknown changes settings {unknown}; known: {sorted(known)}")
        return from_block(cls, block, where="changes")


@dataclass
class ChangeEvent:
    """One change of state: the points ``points`` (indices into the tracks) changed from
    ``start`` to ``end`` (the first frame in the new state; ``end == start``: sudden);
    ``frame`` = ``start``; ``strength``: mean drift jump of its points (drift units);
    ``score``: their mean new level in noise units; ``region``: the region it defines."""

    index: int
    start: int
    end: int
    points: list[int]
    strength: float
    score: float
    region: int = -1
    point_frames: list[int] = field(default_factory=list)  # each point's own start

    @property
    def frame(self) -> int:
        return self.start

    def to_dict(self) -> dict:
        return {
            "event": self.index,
            "frame": self.start,
            "start": self.start,
            "end": self.end,
            "num_points": len(self.points),
            "strength": round(self.strength, 5),
            "score": round(self.score, 3),
            "region": self.region,
            "points": self.points,
            "point_frames": self.point_frames,
        }


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
    points: list[int] = field(default_factory=list)  # points of each prototype's region

    @property
    def main_region(self) -> int:
        """The changed region with the most points (0 when none changed)."""
        changed = [(n, -r) for r, n in zip(self.region, self.points or [0] * len(self.region)) if r > 0]
        return -max(changed)[1] if changed else 0

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
            raise DataError(
                f"descriptors of dimension {desc.shape[-1]} cannot be labelled by prototypes of "
                f"dimension {self.descriptors.shape[1]}"
            )
        sim = F.normalize(desc, dim=-1) @ self.descriptors.T.to(desc.device)  # (..., S)
        best, index = sim.max(dim=-1)
        return index, best

    def label_frames(
        self, desc: torch.Tensor, masks: Optional[torch.Tensor] = None, region: Optional[int] = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The state of each frame of a clip: desc (T, D, h, w), masks (T, H, W) bool (where the
        thing is; default: every cell), ``region`` (default: :attr:`main_region`) → the
        winning state per frame (T,) (−1: no cell in the mask) and the share of cells it won (T,).
        Each cell votes for the nearest of the region's prototypes."""
        if region is None:
            region = self.main_region
        pick = [i for i, r in enumerate(self.region) if r == region]
        if not pick:
            raise DataError(f"no prototype of region {region}; regions: {sorted(set(self.region))}")
        protos = self.descriptors[pick]  # (S_r, D)
        states = torch.tensor([self.state[i] for i in pick])
        num_frames, dim, h, w = desc.shape
        if dim != protos.shape[1]:
            raise DataError(
                f"descriptors of dimension {dim} cannot be labelled by prototypes of dimension {protos.shape[1]}"
            )
        cells = F.normalize(desc.float(), dim=1).flatten(2).transpose(1, 2)  # (T, h·w, D)
        votes = (cells @ protos.T.to(cells)).argmax(-1)  # (T, h·w)
        if masks is None:
            inside = torch.ones(num_frames, h * w, dtype=torch.bool)
        else:
            inside = F.interpolate(masks[:, None].float(), size=(h, w), mode="area")[:, 0].flatten(1) >= 0.5  # (T, h·w)
        out = torch.full((num_frames,), -1, dtype=torch.long)
        share = torch.zeros(num_frames)
        for t in range(num_frames):
            v = votes[t][inside[t]]
            if len(v):
                counts = torch.bincount(v, minlength=len(pick))
                out[t] = states[int(counts.argmax())]
                share[t] = float(counts.max()) / len(v)
        return out, share

    def to_dict(self) -> dict:
        return {
            "descriptors": self.descriptors.cpu(),
            "region": list(self.region),
            "state": list(self.state),
            "points": list(self.points),
        }


def load_states(path) -> StatePrototypes:
    """Prototypes saved by :meth:`StateChanges.save` → :class:`StatePrototypes`."""
    from hyperfeat.io import safe_torch_load

    path = Path(path)
    if not path.is_file():
        raise DataError(f"states file not found: {path}")
    data = safe_torch_load(path)
    try:
        return StatePrototypes(
            torch.as_tensor(data["descriptors"]).float(),
            [int(r) for r in data["region"]],
            [int(s) for s in data["state"]],
            [int(n) for n in data.get("points", [])],
        )
    except (KeyError, TypeError) as err:
        raise DataError(f"{path} is not a saved states file (descriptors, region, state): {err}") from None


@dataclass
class StateChanges:
    """The result of the analysis. Per point n and frame t (NaN where not read):

    ``drift`` (N, T): the distance to the query appearance, each channel in its noise units,
    minus ``baseline`` (T,), the references' median; ``score`` (N, T): the same in noise units;
    ``slipped`` (N, T): where the point's track disagreed with its neighbours' motion (and was
    read where they carry it, ``tracks``); ``analysed`` (N,): points read in enough frames to be
    judged. ``events``: the changes found (empty: none); ``regions`` (N,) int: 0 never changed,
    r ≥ 1 changed at event r − 1, −1 not analysed; ``point_states`` (N, T) int: prototype index per
    point and frame (−1: between a start and an end, or not read); ``segments`` per region;
    ``message``: a one-line account (e.g. why no change was found).
    """

    queries: torch.Tensor
    tracks: torch.Tensor
    visible: torch.Tensor
    is_reference: torch.Tensor
    analysed: torch.Tensor
    drift: torch.Tensor
    score: torch.Tensor
    baseline: torch.Tensor
    slipped: torch.Tensor
    events: list[ChangeEvent]
    regions: torch.Tensor
    point_states: torch.Tensor
    segments: list[StateSegment]
    prototypes: Optional[StatePrototypes]
    settings: ChangeSettings
    message: str

    @property
    def found(self) -> bool:
        return bool(self.events)

    @property
    def num_frames(self) -> int:
        return int(self.tracks.shape[1])

    @property
    def threshold(self) -> float:
        return float(self.settings.threshold)

    def save(self, path) -> Path:
        """Write the learnt states (prototypes of each region before/after its event) for
        :func:`load_states` / ``hyperfeat changes --states``."""
        from hyperfeat.io import atomic_save

        if self.prototypes is None:
            raise DataError("no state to save: no point was analysed")
        atomic_save(self.prototypes.to_dict(), path)
        return Path(path)

    def events_table(self) -> list[dict]:
        """One row per event (start, end, number of points, strength, region)."""
        return [
            {
                "event": e.index,
                "frame": e.start,
                "start": e.start,
                "end": e.end,
                "num_points": len(e.points),
                "strength": round(e.strength, 5),
                "score": round(e.score, 3),
                "region": e.region,
                "points": " ".join(str(p) for p in e.points),
            }
            for e in self.events
        ]

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
            "score": rows(self.score),
            "slipped": self.slipped.int().tolist(),
            "point_states": self.point_states.tolist(),
            "settings": vars(self.settings),
        }


# ---------------------------------------------------------------------------------------------
# pieces


def _check_size(image_size: Sequence[int]) -> tuple[int, int]:
    size = tuple(int(v) for v in image_size)
    if len(size) != 2 or min(size) < 1:
        raise DataError(f"image_size must be (W, H) positive; got {image_size!r}")
    return size  # type: ignore[return-value]


def sample_along_tracks(
    desc: torch.Tensor, tracks: torch.Tensor, image_size: Sequence[int], normalise: bool = True
) -> torch.Tensor:
    """desc (T, D, h, w), tracks (N, T, 2) xy pixels of ``image_size`` (W, H) → (N, T, D)
    bilinear samples (L2-normalised when ``normalise``)."""
    _, _, h, w = desc.shape
    cells = pixels_to_cells(tracks.float(), tuple(image_size), (h, w))  # (N, T, 2)
    scale = cells.new_tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)])
    grid = (cells * scale - 1.0).permute(1, 0, 2)[:, :, None, :]  # (T, N, 1, 2)
    out = F.grid_sample(desc.float(), grid, mode="bilinear", padding_mode="border", align_corners=True)  # (T, D, N, 1)
    out = out[..., 0].permute(2, 0, 1)  # (N, T, D)
    return F.normalize(out, dim=-1) if normalise else out


def _robust_scale(values: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """1.4826 · MAD along ``dim``, NaN ignored (NaN where fewer than 2 finite values)."""
    med = torch.nanmedian(values, dim=dim, keepdim=True).values
    mad = torch.nanmedian((values - med).abs(), dim=dim).values * 1.4826
    enough = torch.isfinite(values).sum(dim) >= 2
    return torch.where(enough, mad, torch.full_like(mad, float("nan")))


def neighbour_lists(xy: torch.Tensor, kind: torch.Tensor, k: int) -> torch.Tensor:
    """xy (N, 2) query positions, kind (N,) bool → (N, k) indices of each point's k nearest other
    points of the same kind (−1 where there are fewer)."""
    num = xy.shape[0]
    dist = torch.cdist(xy.float(), xy.float())  # (N, N)
    dist = dist.masked_fill(kind[:, None] != kind[None, :], float("inf"))
    dist.fill_diagonal_(float("inf"))
    k_eff = min(k, max(num - 1, 0))
    out = torch.full((num, k), -1, dtype=torch.long)
    if k_eff == 0:
        return out
    d, idx = dist.topk(k_eff, dim=1, largest=False)
    out[:, :k_eff] = torch.where(torch.isfinite(d), idx, torch.full_like(idx, -1))
    return out


def _overlapping(starts: torch.Tensor, ends: torch.Tensor, tolerance: int) -> torch.Tensor:
    """starts, ends (P,) frames of P spans → (P, P) bool: spans i and j overlap, or come within
    ``tolerance`` frames of each other."""
    return (starts[:, None] - tolerance <= ends[None, :]) & (starts[None, :] - tolerance <= ends[:, None])


def _components(link: torch.Tensor) -> list[list[int]]:
    """Connected components of a symmetric (P, P) bool adjacency → lists of indices, each sorted."""
    parent = list(range(link.shape[0]))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in link.nonzero().tolist():
        ri, rj = root(i), root(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = {}
    for i in range(link.shape[0]):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())


@dataclass
class _Record:
    """A point's change while it is being judged."""

    point: int
    crossing: int
    start: int
    end: int = -1
    jump: float = 0.0
    score: float = 0.0
    strong: bool = False  # `threshold` noise units above (else only GROW_SHARE of it: it may join a region)


# ---------------------------------------------------------------------------------------------
# the analysis


class OnlineChanges:
    """The analysis, one frame at a time, with bounded memory: ``update`` takes frame t's
    descriptors (D, h, w), the points' tracked positions (N, 2) xy and visibility (N,), and returns
    the events completed by then; ``finish`` completes the rest and returns the
    :class:`StateChanges` (the same as :func:`analyse_changes` on the same frames).

    ``queries`` (N, 3) (t, x, y) in pixels of an ``image_size`` (W, H) frame; ``is_reference``
    (N,) bool: the points that normalise the drift (default: every point; ``settings.reference``
    none: no normalisation). ``keep_curves``: keep the (N, T) curves for the pictures (off: memory
    independent of the clip's length)."""

    def __init__(
        self,
        queries: torch.Tensor,
        image_size: Sequence[int],
        is_reference: Optional[torch.Tensor] = None,
        settings: Optional[ChangeSettings] = None,
        keep_curves: bool = True,
    ):
        self.settings = s = settings or ChangeSettings()
        self.size = _check_size(image_size)
        self.queries = torch.as_tensor(queries, dtype=torch.float32).cpu()
        if self.queries.ndim != 2 or self.queries.shape[1] != 3:
            raise DataError(f"queries must be (N, 3) rows of (t, x, y); got {tuple(self.queries.shape)}")
        num = self.queries.shape[0]
        if num == 0:
            raise DataError("no point to analyse: the tracks are empty")
        if is_reference is None or s.reference == "all":
            is_reference = torch.ones(num, dtype=torch.bool)
        self.is_reference = torch.as_tensor(is_reference, dtype=torch.bool).cpu().clone()
        if self.is_reference.shape != (num,):
            raise DataError(f"is_reference must be ({num},), one flag per query; got {tuple(self.is_reference.shape)}")
        if s.reference == "none":
            self.is_reference[:] = False
        self.num = num
        # the points that may change: those that are not references when some are not (the
        # object's points of a mask: its background only normalises), else every point
        self.candidates = (
            ~self.is_reference
            if bool((~self.is_reference).any()) and bool(self.is_reference.any())
            else torch.ones(num, dtype=torch.bool)
        )
        self.query_frames = self.queries[:, 0].long()
        self.keep_curves = keep_curves
        self.neighbours = neighbour_lists(self.queries[:, 1:], self.is_reference, s.neighbours)  # (N, k)
        # spatial neighbours of the grouping: within LINK_SPACINGS lattice spacings, or among each
        # other's `neighbours` nearest points of the same kind (sparse points, e.g. annotated tracks)
        dist = torch.cdist(self.queries[:, 1:], self.queries[:, 1:])  # (N, N)
        spacing = dist.clone().fill_diagonal_(float("inf")).min(1).values
        radius = LINK_SPACINGS * float(spacing[torch.isfinite(spacing)].median()) if num > 1 else 0.0
        knn = torch.zeros(num, num, dtype=torch.bool)
        rows = torch.arange(num)[:, None].expand_as(self.neighbours)
        ok = self.neighbours >= 0
        knn[rows[ok], self.neighbours[ok]] = True
        self.near = (dist <= radius) | knn | knn.T  # (N, N)
        self.t = 0
        self.last = -1  # the frame in the buffers' last column
        self.window = 2 * s.lookaround + 1  # frames of z kept: a start's run back, a new level forward
        self.settle = 2 * s.lookaround + s.persist + 1  # frames after which a point's state at a frame is known
        self.start_xy = torch.full((num, 2), float("nan"))
        self.app_sum: Optional[torch.Tensor] = None  # (N, D) sum of the first query_window looks
        self.app_count = torch.zeros(num, dtype=torch.long)
        self.prev_drift = torch.full((num,), float("nan"))
        self.noise = torch.full((num, s.lookaround), float("nan"))  # the point's first increments
        self.noise_count = torch.zeros(num, dtype=torch.long)
        self.z = torch.full((num, self.window), float("nan"))  # z of frames t − window + 1 … t
        self.r = torch.full((num, self.window), float("nan"))  # drift beyond the frame's common part
        self.level = torch.full((num, self.window), float("nan"))  # each frame's recent level before it
        self.scale = torch.full((num, self.window), float("nan"))  # each frame's noise scale
        self.feats: list[Optional[torch.Tensor]] = []  # (N, D) corrected looks of the last `settle` frames
        # the frames a change's start may lie after (its new look is looked for there): (D, h, w)
        # float16 normalised descriptors and (N, 2) where each point was read, the last one frame `last`
        self.maps: deque[torch.Tensor] = deque(maxlen=self.window + 1)
        self.places: deque[torch.Tensor] = deque(maxlen=self.window + 1)
        self.vis_hist: list[torch.Tensor] = []
        self.status = torch.zeros(num, dtype=torch.long)  # 0 watching, 1 confirmed (judged `lookaround` frames later)
        self.records: dict[int, _Record] = {}
        self.pool: list[_Record] = []  # kept records not yet in an event
        self.events: list[ChangeEvent] = []
        self.event_of = torch.full((num,), -1, dtype=torch.long)
        self.own_start = torch.full((num,), -1, dtype=torch.long)  # a kept change's start and end per point
        self.own_end = torch.full((num,), -1, dtype=torch.long)
        self.read_count = torch.zeros(num, dtype=torch.long)
        self.prev_look: Optional[torch.Tensor] = None  # (N, D) the last frame's looks, while calibrating
        self.prev_vis: Optional[torch.Tensor] = None
        self.step_sum: Optional[torch.Tensor] = None  # (D,) sum of the frames' median channel steps
        self.step_count = 0
        self.channel_scale: torch.Tensor = torch.ones(1)  # (D,) each channel's frame-to-frame noise
        self.proto_sum: Optional[torch.Tensor] = None  # (N, 2, D): each point's looks before and after
        self.proto_count = torch.zeros(num, 2)
        self.curves: dict[str, list[torch.Tensor]] = {k: [] for k in ("drift", "score", "slipped", "tracks", "visible")}
        self.baseline: list[float] = []

    # ------------------------------------------------------------------ per frame
    def _carry(self, xy: torch.Tensor, visible: torch.Tensor, cell: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions (N, 2) → positions carried by the neighbours' motion where a point slipped, and
        the slipped flags (N,)."""
        started = torch.isfinite(self.start_xy[:, 0])
        moves = xy - self.start_xy  # (N, 2)
        nb = self.neighbours  # (N, k)
        ok = (nb >= 0) & (visible & started)[nb.clamp_min(0)]
        nb_moves = moves[nb.clamp_min(0)]  # (N, k, 2)
        nb_moves = torch.where(ok[..., None], nb_moves, torch.full_like(nb_moves, float("nan")))
        median = torch.nanmedian(nb_moves, dim=1).values  # (N, 2)
        enough = ok.sum(1) >= max(2, (ok.shape[1] + 1) // 2)
        carried = self.start_xy + median
        slipped = started & enough & visible & ((xy - carried).norm(dim=1) > self.settings.slip_radius * cell)
        out = torch.where(slipped[:, None], carried, xy)
        return out, slipped

    def _calibrate(self, look: torch.Tensor, vis: torch.Tensor) -> None:
        """Each descriptor channel's noise: the median over the points of its frame-to-frame step,
        averaged over the first ``lookaround`` frames (then fixed). Drift is measured in these
        units, so a channel that barely moves while nothing happens (the colour of a patch) counts
        for more than one that flickers (the texture around it) — whatever the describer."""
        if self.prev_look is not None and self.step_count < self.settings.lookaround:
            both = vis & self.prev_vis
            if int(both.sum()) >= 4:
                step = (look[both] - self.prev_look[both]).abs().median(0).values  # (D,)
                self.step_sum = step if self.step_sum is None else self.step_sum + step
                self.step_count += 1
                scale = self.step_sum / self.step_count
                mean = float(scale.mean())
                # relative: the drift keeps the chord distance's size, only its channels are weighed
                self.channel_scale = scale.clamp_min(SCALE_FLOOR * mean + 1e-12) / max(mean, 1e-12)
        if self.step_count < self.settings.lookaround:
            self.prev_look, self.prev_vis = look, vis
        else:
            self.prev_look = self.prev_vis = None

    def update(self, desc: torch.Tensor, positions: torch.Tensor, visible: torch.Tensor) -> list[ChangeEvent]:
        """Frame t: desc (D, h, w), positions (N, 2) xy pixels, visible (N,) bool → events completed now."""
        s = self.settings
        t = self.t
        dim, h, w = desc.shape
        xy = torch.as_tensor(positions, dtype=torch.float32).cpu().clone()
        vis = torch.as_tensor(visible, dtype=torch.bool).cpu().clone()
        if xy.shape != (self.num, 2) or vis.shape != (self.num,):
            raise DataError(
                f"frame {t}: positions must be ({self.num}, 2) and visible ({self.num},); "
                f"got {tuple(xy.shape)} and {tuple(vis.shape)}"
            )
        at_query = self.query_frames == t
        vis = (vis & (self.query_frames <= t)) | at_query
        self.start_xy[at_query] = xy[at_query]
        slipped = torch.zeros(self.num, dtype=torch.bool)
        if s.coherent:
            cell = 0.5 * (self.size[0] / w + self.size[1] / h)  # pixels per descriptor cell
            xy, slipped = self._carry(xy, vis, cell)
        look = sample_along_tracks(desc.float().cpu()[None], xy[:, None], self.size)[:, 0]  # (N, D) normalised
        if self.app_sum is None:
            self.app_sum = torch.zeros(self.num, dim)
            self.proto_sum = torch.zeros(self.num, 2, dim)
        started = self.query_frames <= t
        refs = self.is_reference & vis & started
        take = vis & (self.app_count < s.query_window)
        self.app_sum[take] += look[take]
        self.app_count += take.long()
        self._calibrate(look, vis)
        diff = (look - F.normalize(self.app_sum, dim=-1)) / self.channel_scale  # (N, D) in channel noise units
        drift = diff.norm(dim=-1)  # (N,)
        drift = torch.where(vis, drift, torch.full_like(drift, float("nan")))
        ref_drift = drift[refs]
        base = float(ref_drift.median()) if len(ref_drift) else 0.0
        r = drift - base  # (N,) drift beyond the frame's common part
        recent = self.r[:, -s.lookaround :]
        level = torch.nanmedian(recent, dim=1).values  # (N,) the point's recent level ...
        level = torch.where(torch.isfinite(recent).sum(1) >= s.persist, level, torch.full_like(level, float("nan")))
        jump = r - level
        ref_jump = jump[refs & torch.isfinite(jump)]
        spread = float(_robust_scale(ref_jump)) if len(ref_jump) >= 4 else 0.0
        inc = r - self.prev_drift
        grow = torch.isfinite(inc) & (self.noise_count < s.lookaround)
        idx = grow.nonzero()[:, 0]
        self.noise[idx, self.noise_count[idx]] = inc[idx]
        self.noise_count += grow.long()
        self.prev_drift = torch.where(vis, r, self.prev_drift)
        own = torch.nan_to_num(_robust_scale(self.noise) / math.sqrt(2), nan=0.0)  # (N,) σ of the point's drift
        scale = torch.sqrt(own**2 + spread**2 + 1e-6)  # (N,)
        z = jump / scale
        self.z = torch.cat([self.z[:, 1:], z[:, None]], 1)
        # ... the frames of the query appearance left out: they resemble it by construction
        kept = torch.where(take, torch.full_like(r, float("nan")), r)
        self.r = torch.cat([self.r[:, 1:], kept[:, None]], 1)
        self.level = torch.cat([self.level[:, 1:], level[:, None]], 1)
        self.scale = torch.cat([self.scale[:, 1:], scale[:, None]], 1)
        self.read_count += vis.long()
        self.feats.append(torch.where(vis[:, None], look, torch.full_like(look, float("nan"))))
        self.vis_hist.append(vis)
        if s.novelty > 0:
            self.maps.append(F.normalize(desc.float().cpu(), dim=0).half())
            self.places.append(xy)
        if self.keep_curves:
            for key, v in (("drift", r), ("score", z), ("slipped", slipped), ("tracks", xy), ("visible", vis)):
                self.curves[key].append(v)
            self.baseline.append(base)
        self.last = t
        self._judge(t, z)
        self.t += 1
        self._settle(self.t - self.settle)
        return self._group(final=False)

    def _frame_of(self, column: int) -> int:
        return self.last - self.window + 1 + column  # the last column holds frame `last`

    def _column_of(self, frame: int) -> int:
        return frame - self.last + self.window - 1

    def _above(self, n: int, col: int) -> torch.Tensor:
        """Point n's drift over the kept frames in noise units above its level before column ``col``."""
        return (self.r[n] - self.level[n, col]) / self.scale[n, col]

    def _judge(self, t: int, z: torch.Tensor) -> None:
        s = self.settings
        weak = GROW_SHARE * s.threshold
        # confirm: the last `persist` readings of a watching point all `weak` noise units above the
        # level before the first of them (strong: all `threshold` above); its start is found when
        # it is concluded, once its new level is known
        watch = (self.status == 0) & (z > weak) & (self.app_count >= s.query_window) & self.candidates
        for n in watch.nonzero()[:, 0].tolist():
            cols = torch.isfinite(self.r[n]).nonzero()[:, 0]
            last = cols[-s.persist :]
            if len(last) < s.persist:
                continue
            first = int(last[0])
            above = self._above(n, first)[last]
            if not bool((above > weak).all()):
                continue
            crossing = self._frame_of(first)
            self.records[n] = _Record(n, crossing, crossing, strong=bool((above > s.threshold).all()))
            self.status[n] = 1
        # keep or drop: `lookaround` frames after the crossing, the point must still be changed
        for n, rec in list(self.records.items()):
            if self.status[n] == 1 and t >= rec.crossing + s.lookaround:
                self._conclude(rec)

    def _conclude(self, rec: _Record) -> None:
        s = self.settings
        n = rec.point
        col = self._column_of(rec.crossing)
        above = self._above(n, col)
        frames = torch.tensor([self._frame_of(c) for c in range(self.window)])
        after = torch.isfinite(above) & (frames >= rec.crossing)
        level_cols = after.nonzero()[:, 0][-s.persist :]
        level = float(above[level_cols].median()) if len(level_cols) else float("nan")
        if not (level > GROW_SHARE * s.threshold):  # went back: a passing shadow, an occluder, a slip — no state
            self.status[n] = 0  # watching again
            del self.records[n]
            return
        rec.strong = level > s.threshold
        # where it ended: the first frame from the crossing at END_LEVEL of the new level; where it began: back
        # from there while the drift stays above the noise and a share of the new level (from the end, not the
        # crossing: a small step before the change, e.g. of motion, crosses early but is not where it began)
        floor = max(START_LEVEL, START_SHARE * level)
        first_frame = int(self.query_frames[n]) + s.query_window
        reached = (torch.isfinite(above) & (frames >= rec.crossing) & (above >= END_LEVEL * level)).nonzero()[:, 0]
        end_col = int(reached[0]) if len(reached) else col
        rec.start = int(frames[end_col])
        for c in reversed(torch.isfinite(above).nonzero()[:, 0].tolist()):
            if c >= end_col:
                continue
            if float(above[c]) > floor and int(frames[c]) >= first_frame:
                rec.start = int(frames[c])
            else:
                break
        moved = self._moved(n, rec.start, [int(frames[c]) for c in level_cols]) if s.novelty > 0 else None
        if moved is not None:  # other material under the point: measured from its new look from now on
            self.app_sum[n] = moved * self.app_count[n]
            self.status[n] = 0
            del self.records[n]
            return
        rec.end = int(frames[end_col])
        rec.score = level
        rec.jump = float(level * self.scale[n, col])
        self.status[n] = 0  # watching again, for a later change from its new level
        if self.own_start[n] >= 0:  # a later change: the state after the earlier one is now the state before
            self.proto_sum[n, 0] += self.proto_sum[n, 1]
            self.proto_count[n, 0] += self.proto_count[n, 1]
            self.proto_sum[n, 1] = 0
            self.proto_count[n, 1] = 0
        self.own_start[n], self.own_end[n] = rec.start, rec.end
        self.pool.append(rec)
        del self.records[n]

    def _look_at(self, n: int, frame: int) -> torch.Tensor:
        """Point n's look (D,) at a frame still in the buffers (NaN where it was not read)."""
        return self.feats[len(self.feats) - 1 - (self.last - frame)][n]

    def _moved(self, n: int, start: int, after: list[int]) -> Optional[torch.Tensor]:
        """Was point n's new look (its mean look over the frames ``after``) already beside it just
        before its change? Yes when its distance to the nearest look within ``NEAR_CELLS`` cells of
        where the point was at ``start − 1`` (leaving out material that had changed by then) is below
        ``novelty`` × its distance to the point's own look there: material moved under the point (a
        spin, a fold, a slip its neighbours shared), it did not change. Returns the new look (D,)
        then, else None. Distances are in the channels' noise units, as the drift's."""
        back = self.last - (start - 1)
        if start < 1 or back >= len(self.maps) or not after:
            return None
        new = F.normalize(torch.nanmean(torch.stack([self._look_at(n, f) for f in after]), dim=0), dim=0)  # (D,)
        old = self._look_at(n, start - 1)
        dense = self.maps[-1 - back].float()  # (D, h, w)
        _, h, w = dense.shape
        places = pixels_to_cells(self.places[-1 - back], self.size, (h, w))  # (N, 2) cells
        if not bool(torch.isfinite(new).all() and torch.isfinite(old).all() and torch.isfinite(places[n]).all()):
            return None
        x, y = places[n].round().long().tolist()
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        near = ((xs - x).abs() <= NEAR_CELLS) & ((ys - y).abs() <= NEAR_CELLS)  # (h, w)
        # ... leaving out material that had changed by then (a state it took is no old look)
        done = (self.own_start >= 0) & (self.own_start < start) & torch.isfinite(places).all(1)
        for cx, cy in places[done].round().long().tolist():
            near[max(0, cy - 1) : cy + 2, max(0, cx - 1) : cx + 2] = False
        patch = dense[:, near].T  # (M, D)
        if len(patch) == 0:
            return None
        nearest = float(((patch - new) / self.channel_scale).norm(dim=1).min())
        own = float(((old - new) / self.channel_scale).norm())
        return new if nearest < self.settings.novelty * own else None

    def _settle(self, frame: int) -> None:
        """Add frame ``frame``'s looks to the prototypes' sums once every point's state there is
        known — 0 before its kept change, 1 from its end on, none in between (a change not yet
        kept starts later) — and forget it."""
        if frame < 0 or not self.feats:
            return
        look, vis = self.feats.pop(0), self.vis_hist.pop(0)  # the oldest kept frame is `frame`
        changed = (self.own_start >= 0) & (frame >= self.own_start)
        state = torch.where(changed, torch.where(frame >= self.own_end, 1, -1), 0)  # (N,) see _state_at
        for which in (0, 1):
            take = vis & (state == which)
            self.proto_sum[take, which] += look[take]
            self.proto_count[take, which] += 1

    def _group(self, final: bool) -> list[ChangeEvent]:
        """Kept records → events, once no later record can join. Records whose points are spatial
        neighbours and whose spans [start, end] overlap (within ``tolerance`` frames) form a
        region; a region of at least ``min_points`` points is a change, and changes whose median
        spans overlap are one event (one moment of change, its points on every changed region)."""
        s = self.settings
        if not self.pool:
            return []
        pool = self.pool
        starts = torch.tensor([rec.start for rec in pool])
        ends = torch.tensor([rec.end for rec in pool])
        points = torch.tensor([rec.point for rec in pool])
        near = self.near[points][:, points]  # (P, P) spatial neighbours
        regions = _components(near & _overlapping(starts, ends, s.tolerance))
        needed = min(s.min_points, int(self.candidates.sum()))  # all of them when fewer may change
        horizon = self.t - 1 - 2 * s.lookaround - s.persist  # a later record starts after this frame

        def ready(members: list[int]) -> bool:
            return final or max(pool[i].end for i in members) + s.tolerance < horizon

        done: set[int] = set()
        changes = []
        for members in regions:
            strong = any(pool[i].strong for i in members)
            strength = sum(pool[i].jump for i in members) / len(members)  # mean jump of its records, drift units
            if len({pool[i].point for i in members}) >= needed and strong and strength >= s.min_strength:
                changes.append(members)
            elif ready(members):
                done.update(members)  # too few points: no change
        spans = torch.tensor(
            [[median_low([pool[i].start for i in m]), median_low([pool[i].end for i in m])] for m in changes]
        ).reshape(-1, 2)
        together = _overlapping(spans[:, 0], spans[:, 1], s.tolerance)
        new: list[ChangeEvent] = []
        groups = [sum((changes[c] for c in group), []) for group in _components(together)]
        for members in sorted(groups, key=lambda m: (min(pool[i].start for i in m), min(pool[i].point for i in m))):
            if not ready(members):
                continue
            done.update(members)
            first: dict[int, _Record] = {}
            for i in sorted(members, key=lambda i: pool[i].start):  # a point twice in one event: its first change
                first.setdefault(pool[i].point, pool[i])
            recs = sorted(first.values(), key=lambda rec: rec.point)
            event = ChangeEvent(
                index=len(self.events),
                start=median_low([rec.start for rec in recs]),
                end=median_low([rec.end for rec in recs]),
                points=[rec.point for rec in recs],
                strength=sum(rec.jump for rec in recs) / len(recs),
                score=sum(rec.score for rec in recs) / len(recs),
                region=len(self.events) + 1,
                point_frames=[rec.start for rec in recs],
            )
            event.end = max(event.end, event.start)
            for rec in recs:
                self.event_of[rec.point] = event.index
            self.events.append(event)
            new.append(event)
        self.pool = [rec for i, rec in enumerate(pool) if i not in done]
        return new

    # ------------------------------------------------------------------ the end
    def finish(self) -> StateChanges:
        """Complete every pending change and return the result."""
        s = self.settings
        num_frames = self.t
        for rec in list(self.records.values()):
            self._conclude(rec)
        self._group(final=True)
        for frame in range(num_frames - len(self.feats), num_frames):
            self._settle(frame)
        analysed = self.read_count >= max(MIN_FRAMES, s.query_window + s.persist)
        regions = torch.where(self.event_of >= 0, self.event_of + 1, torch.zeros_like(self.event_of))
        regions[~analysed] = -1
        protos, proto_region, proto_state, proto_points, segments = [], [], [], [], []
        point_states = torch.full((self.num, num_frames), -1, dtype=torch.long)
        frames = torch.arange(num_frames)
        for r in range(len(self.events) + 1):
            members = (regions == r).nonzero()[:, 0]
            if len(members) == 0:
                continue
            event = self.events[r - 1] if r > 0 else None
            cuts = [(0, num_frames)] if event is None else [(0, event.start), (event.end, num_frames)]
            for state, (a, b) in enumerate(cuts):
                total = self.proto_sum[members, state].sum(0)
                if b <= a or float(self.proto_count[members, state].sum()) == 0:
                    continue
                index = len(protos)
                protos.append(F.normalize(total, dim=0))
                proto_region.append(r)
                proto_state.append(state)
                proto_points.append(len(members))
                segments.append(StateSegment(region=r, state=state, start=a, end=b, prototype=index))
                for n in members.tolist():
                    if event is None:
                        point_states[n] = index
                    else:
                        lo, hi = (0, int(self.own_start[n])) if state == 0 else (int(self.own_end[n]), num_frames)
                        point_states[n, (frames >= lo) & (frames < hi)] = index
        prototypes = StatePrototypes(torch.stack(protos), proto_region, proto_state, proto_points) if protos else None
        nan = torch.full((self.num, num_frames), float("nan"))

        def stack(key: str, empty: torch.Tensor) -> torch.Tensor:
            return torch.stack(self.curves[key], 1) if self.curves[key] else empty

        if self.events:
            message = f"{len(self.events)} change event(s) in {num_frames} frames: " + ", ".join(
                f"frames {e.start}–{e.end} ({len(e.points)} points, {e.score:.1f} noise units)"
                if e.end > e.start
                else f"frame {e.start} ({len(e.points)} points, {e.score:.1f} noise units)"
                for e in self.events
            )
        elif not analysed.any():
            message = (
                f"no change found: no point was read in at least {max(MIN_FRAMES, s.query_window + s.persist)} "
                f"frames (every point occluded)"
            )
        else:
            message = (
                f"no change found: {int(analysed.sum())} points analysed over {num_frames} frames; no "
                f"{min(s.min_points, int(self.candidates.sum()))} neighbouring points stayed {s.threshold:g} noise units "
                f"above their level before with a mean jump of look of {s.min_strength:g} or more"
            )
        return StateChanges(
            queries=self.queries,
            tracks=stack("tracks", torch.full((self.num, num_frames, 2), float("nan"))),
            visible=stack("visible", torch.zeros(self.num, num_frames, dtype=torch.bool)),
            is_reference=self.is_reference,
            analysed=analysed,
            drift=stack("drift", nan),
            score=stack("score", nan),
            baseline=torch.tensor(self.baseline) if self.baseline else torch.full((num_frames,), float("nan")),
            slipped=stack("slipped", torch.zeros(self.num, num_frames, dtype=torch.bool)),
            events=list(self.events),
            regions=regions,
            point_states=point_states,
            segments=segments,
            prototypes=prototypes,
            settings=s,
            message=message,
        )


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
    """States and changes of state of tracked points (:class:`OnlineChanges` fed every frame).

    desc (T, D, h, w) per-frame descriptors; queries (N, 3) (t, x, y); tracks (N, T, 2) xy and
    visible (N, T) in pixels of an ``image_size`` (W, H) frame; ``is_reference`` (N,) bool: the
    points that normalise the drift (default: every point). Fewer than 3 frames raise
    :class:`DataError`.
    """
    if desc.ndim != 4:
        raise DataError(f"descriptors must be (T, D, h, w); got {tuple(desc.shape)}")
    num_frames = desc.shape[0]
    if num_frames < MIN_FRAMES:
        raise DataError(
            f"a change of state needs at least {MIN_FRAMES} frames (a before and an after); got {num_frames}"
        )
    tracks = torch.as_tensor(tracks, dtype=torch.float32).cpu()
    visible = torch.as_tensor(visible, dtype=torch.bool).cpu()
    if tracks.ndim != 3 or tracks.shape[1:] != (num_frames, 2):
        raise DataError(f"tracks must be (N, {num_frames}, 2) xy; got {tuple(tracks.shape)}")
    if tracks.shape[0] == 0:
        raise DataError("no point to analyse: the tracks are empty")
    if visible.shape != tracks.shape[:2]:
        raise DataError(f"visible must be {tuple(tracks.shape[:2])} (N, T); got {tuple(visible.shape)}")
    queries = torch.as_tensor(queries, dtype=torch.float32)
    if queries.shape != (tracks.shape[0], 3):
        raise DataError(f"queries must be ({tracks.shape[0]}, 3) rows of (t, x, y); got {tuple(queries.shape)}")
    online = OnlineChanges(queries, image_size, is_reference, settings)
    for t in range(num_frames):
        online.update(desc[t], tracks[:, t], visible[:, t])
    return online.finish()
