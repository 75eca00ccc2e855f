"""Test-time adaptation: a few self-supervised steps on the very video being analysed.

The frozen backbone runs once over the video's frames; its raw maps stay in memory (float16,
CPU) and a *copy* of the aggregation network is trained on clips of them with the contrastive
random walk (:func:`hyperfeat.train.losses.cycle_walk_loss`), as DINO-Tracker adapts its
features to its one video. Nothing but that copy changes: the backbone and the describer's own
network are left as they were.

The walk: plain (t → t+k → t) or mirrored (the last step lands on the first frame computed from
its left–right mirror image, home being the mirrored cell: descriptors of position alone fail
it). :func:`adapt_mirrored` picks the walk the network was trained with, or the mirrored one for a
network not trained on a walk. Measured on the video-training benchmark
(``benchmarks/video_training.py``, tiny backbone, held-out synthetic DAVIS clips, 3 seeds, 20
steps at lr 1e-3; AJ %, none → plain → mirrored): untrained 2.4 → 3.0 → 3.4, trained on tracks
3.6 → 3.7 → 4.2; a network trained on the plain walk 3.83 → 3.84 → 3.6 (one seed): the mirrored
walk pulls it away from what it learned.

Learning rate: the default 1e-3 (AdamW, 20 steps). At 3e-3 the walk loss falls further but the
video-trained networks track no better or slightly worse (plain walk: supervised 3.6, walk-trained
3.8); an untrained network gains a little more (plain walk 3.2). Tried and not better: lr 3e-4
(3 seeds), an L2 pull to the initial weights, adapting only the mixing weights (one seed).

Objectives (``AdaptSettings.objective``): ``walk`` (the above); ``warp``: warped copies of the
video's own frames (:func:`warped_copies`: homography + colour jitter of ``warps`` frames spread over
the video, their raw maps from one more backbone pass each), trained by the correspondence loss
against the frames they came from: self-supervised, the warp is the exact truth; ``walk+warp``:
their sum. :func:`adapt_objective` picks the walk for a network trained on the walk (or when a walk
``mirror`` is asked for) and ``warp`` for any other network. Measured on the classical backbone
(``benchmarks/classical_learning.py --tapvid-learn``: real TAP-Vid-DAVIS, untrained network, memory
tracker), chosen on 6 validation clips of the train half (AJ %, untrained 23.3): warp 10 steps at
lr 1e-3 23.4, 20 at 3e-3 23.8, 40 at 3e-3 24.8; the mirrored walk at lr 1e-4 changed nothing on the
held-out clips, at 1e-3 lowered AJ. Held out (9 clips, see ``benchmarks/README.md``), warp 40 steps at
lr 3e-3 raises AJ and δ_avg of the clip adapted to. So the default lr is per objective
(:data:`LEARNING_RATES`: walk 1e-3, warp 3e-3).

Memory: T frames × S timesteps × C channels × R² floats (2 bytes each), twice that with the
mirrored walk. The tiny backbone at 32² is ~1 MB a frame; SD 1.5 with the paper's 11 timesteps at 64² is ~370 MB a frame, so for
real backbones adapt on ``max_frames`` frames (spread evenly over the video) or a one-step plan.

Only torch and the loss are imported here (no Lightning): the inference API calls it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any, Optional

import numpy as np
import torch

from hyperfeat.data.videos.temporal import CLIP_DATASETS, draw_gap
from hyperfeat.errors import HyperfeatError
from hyperfeat.train.losses import correspondence_loss, cycle_walk_loss

# the warps of the warp objective: as the synthetic training pairs of the benchmarks (hyperfeat.data.pairs.synthetic)
WARP_GEOMETRY = dict(rotation=15.0, scale=(0.85, 1.15), translation=0.2, perspective=0.03)
WARP_JITTER = dict(brightness=0.2, contrast=0.2, color=0.1)


@dataclass
class AdaptResult:
    """The adapted network (eval mode), the loss of every step, and the walk loss of a fixed
    set of clips of the video before and after adapting (``clips``: their frame indices)."""

    network: torch.nn.Module
    losses: list[float] = field(default_factory=list)
    loss_before: float = float("nan")
    loss_after: float = float("nan")
    clips: list[list[int]] = field(default_factory=list)
    mirror: bool = False  # the walks ended on the mirrored first frame
    objective: str = "walk"
    warp_before: float = float("nan")  # the warp loss of every warped copy (objectives with warp)
    warp_after: float = float("nan")


OBJECTIVES = ("walk", "warp", "walk+warp")
LEARNING_RATES = {"walk": 1e-3, "warp": 3e-3, "walk+warp": 1e-3}  # each objective's default lr (module docstring)


@dataclass(frozen=True)
class AdaptSettings:
    """steps, lr (AdamW; None: the objective's :data:`LEARNING_RATES`), clip_length and max_stride of
    the clips, clips per step, the walk's temperature / pool / edge dropout, seed, ``max_frames``
    (None: every frame), ``mirror`` (the walk's home), ``objective`` (None: :func:`adapt_objective`),
    and the warp objective's ``warps`` (copies made), ``warp_pairs`` (copies a step),
    ``warp_weight`` (its weight beside the walk in ``walk+warp``) and ``warp_temperature`` (its
    correspondence loss's logit temperature)."""

    steps: int = 20
    lr: Optional[float] = None  # None: LEARNING_RATES of the objective (module docstring)
    clip_length: int = 4
    max_stride: int = 4
    clips_per_step: int = 2
    temperature: float = 0.07
    pool: int = 2
    edge_dropout: float = 0.0
    seed: int = 0
    max_frames: Optional[int] = None
    mirror: Optional[bool] = None  # end each walk on the mirrored first frame (None: see adapt_mirrored)
    objective: Optional[str] = None  # walk | warp | walk+warp; None: see adapt_objective
    warps: int = 8  # warped copies of the video's frames made for the warp objective
    warp_weight: float = 1.0  # walk + warp_weight · warp loss (walk+warp)
    warp_pairs: int = 4  # warped copies per step
    warp_temperature: float = 0.07  # logit temperature of the warp objective's correspondence loss

    def check(self) -> None:
        if int(self.steps) < 0 or (self.lr is not None and not float(self.lr) > 0):
            raise HyperfeatError(f"adaptation needs steps >= 0 and lr > 0; got steps={self.steps}, lr={self.lr}")
        if int(self.clip_length) < 2 or int(self.max_stride) < 1 or int(self.clips_per_step) < 1:
            raise HyperfeatError(
                f"adaptation needs clip_length >= 2, max_stride >= 1 and clips_per_step >= 1; got "
                f"{self.clip_length}, {self.max_stride} and {self.clips_per_step}"
            )
        if self.objective is not None and self.objective not in OBJECTIVES:
            raise HyperfeatError(f"adaptation objective must be one of {', '.join(OBJECTIVES)}; got {self.objective!r}")
        if "warp" in str(self.objective) and (int(self.warps) < 1 or not float(self.warp_weight) > 0):
            raise HyperfeatError(
                f"the warp objective needs warps >= 1 and warp_weight > 0; got {self.warps} and {self.warp_weight}"
            )
        if not float(self.warp_temperature) > 0:
            raise HyperfeatError(f"adaptation needs warp_temperature > 0; got {self.warp_temperature}")

    @property
    def walks(self) -> bool:
        return "walk" in str(self.objective)

    @property
    def warped(self) -> bool:
        return "warp" in str(self.objective)

    def resolved(self, describer: Any) -> "AdaptSettings":
        """These settings with the objective (:func:`adapt_objective`) and the learning rate (``lr``, else
        :data:`LEARNING_RATES` of the objective) filled in."""
        objective = adapt_objective(describer, self)
        lr = float(self.lr) if self.lr is not None else LEARNING_RATES[objective]
        return replace(self, objective=objective, lr=lr)


def video_raw_maps(
    describer: Any, frames: torch.Tensor, max_frames: Optional[int] = None, mirrored: bool = False
) -> tuple[torch.Tensor, list[int]]:
    """Raw maps (T', S, C, R, R) float16 on the CPU of frames (T, 3, H, W) in [0, 1] (each
    resized to L × L by :func:`hyperfeat.video.frames.frames_to_backbone`), and which frames they
    are (every frame, or ``max_frames`` spread evenly); ``mirrored``: of the left–right mirrored
    frames."""
    total = int(frames.shape[0])
    picked = list(range(total))
    if max_frames and total > int(max_frames):
        picked = sorted({int(round(v)) for v in np.linspace(0, total - 1, int(max_frames))})
    from hyperfeat.video.frames import frames_to_backbone

    size = int(describer.load_size)
    batch_size = int(describer.cfg.features.batch_size)
    out = []
    with torch.no_grad():
        for start in range(0, len(picked), batch_size):
            batch = frames_to_backbone(frames[picked[start : start + batch_size]], size)  # (b, 3, L, L) in [-1, 1]
            if mirrored:
                batch = batch.flip(-1)
            out.append(describer.extractor.run(batch.to(describer.device)).to("cpu", torch.float16))
    return torch.cat(out), picked


def adapt_mirrored(describer: Any, settings: AdaptSettings) -> bool:
    """Whether the adaptation walk ends on the mirrored first frame (:func:`cycle_walk_loss`'s
    ``mirrored_home``): ``settings.mirror`` when given; else the walk the network was trained with
    when it was trained on one (``data=video_folder``: plain, or mirrored with
    ``data.mirrored_home``), and the mirrored walk for any other network (untrained, semantic,
    trained on tracks). Measured in ``benchmarks/video_training.py`` (tiny backbone, held-out
    synthetic DAVIS clips): the mirrored walk lifts an untrained and a track-trained network
    further than the plain one, and pulls a plain-walk network away from what it learned."""
    if settings.mirror is not None:
        return bool(settings.mirror)
    meta = getattr(describer, "meta", None)
    data = None if meta is None else meta.config.get("data")
    if data is not None and str(data.get("name")) in CLIP_DATASETS:
        return bool(data.get("mirrored_home", False))
    return True


def adapt_objective(describer: Any, settings: AdaptSettings) -> str:
    """What the adaptation minimises: ``settings.objective`` when given; else the walk when the walk is
    asked for (``settings.mirror`` given) or the network was trained on one (``data=video_folder``),
    and the warp objective (warped copies of the video's own frames) for any other network
    (untrained, semantic, trained on tracks): on real TAP-Vid-DAVIS clips it raised the tracking of
    the clip adapted to, the walk did not (module docstring)."""
    if settings.objective is not None:
        return str(settings.objective)
    if settings.mirror is not None:
        return "walk"
    meta = getattr(describer, "meta", None)
    data = None if meta is None else meta.config.get("data")
    if data is not None and str(data.get("name")) in CLIP_DATASETS:
        return "walk"
    return "warp"


def _clip_indices(rng: np.random.Generator, num_frames: int, settings: AdaptSettings) -> list[int]:
    length = min(int(settings.clip_length), num_frames)
    start, stride = draw_gap(rng, num_frames, int(settings.max_stride), span=length - 1)
    return [start + k * stride for k in range(length)]


def _walk(
    network: torch.nn.Module,
    raw: torch.Tensor,
    clips: list[list[int]],
    settings: AdaptSettings,
    device: torch.device,
    dropout: float,
    generator: Optional[torch.Generator] = None,
    raw_mirrored: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    index = torch.tensor(clips)  # (B, K)
    maps = raw[index.flatten()].to(device).float()  # (B·K, S, C, R, R)
    desc = network(maps).unflatten(0, tuple(index.shape))  # (B, K, D, R, R)
    home = None if raw_mirrored is None else network(raw_mirrored[index[:, 0]].to(device).float())  # (B, D, R, R)
    return cycle_walk_loss(desc, settings.temperature, settings.pool, dropout, generator, mirrored_home=home)


@dataclass
class WarpedCopies:
    """Warped copies of frames of a video with exact correspondence: copy k is of raw map
    ``index[k]``; ``raw`` (W, S, C, R, R) float16 their raw maps; ``points_a`` / ``points_b``
    (W, N, 2) an 8 × 8 grid in the L × L frame and where the warp took it; ``valid`` (W, N) landed
    inside."""

    index: torch.Tensor
    raw: torch.Tensor
    points_a: torch.Tensor
    points_b: torch.Tensor
    valid: torch.Tensor


def warped_copies(describer: Any, frames: torch.Tensor, picked: list[int], count: int, seed: int) -> WarpedCopies:
    """``count`` warped copies (homography + colour jitter, :data:`WARP_GEOMETRY`, :data:`WARP_JITTER`)
    of frames of ``frames`` (T, 3, H, W) in [0, 1], spread evenly over ``picked`` (the frames the raw
    maps are of), and the backbone's raw maps of each (self-supervision: the warp is the truth)."""
    from hyperfeat.data.pairs.synthetic import apply_homography, draw_warp, photometric, source_points, warp_image
    from hyperfeat.video.frames import frames_to_backbone

    size = int(describer.load_size)
    rng = np.random.default_rng([int(seed), 2])
    index = sorted(int(round(v)) for v in np.linspace(0, len(picked) - 1, int(count)))
    images, points_a, points_b, valid = [], [], [], []
    for i in index:
        image = frames_to_backbone(frames[picked[i] : picked[i] + 1], size)[0]  # (3, L, L) in [-1, 1]
        warp = draw_warp(rng, size, WARP_GEOMETRY, WARP_JITTER)
        images.append(warp_image(photometric((image + 1.0) / 2.0, warp), warp.homography) * 2.0 - 1.0)
        grid = source_points(rng, size, 64, "grid")  # (N, 2)
        moved = apply_homography(warp.homography, grid)
        points_a.append(torch.as_tensor(grid, dtype=torch.float32))
        points_b.append(torch.as_tensor(moved, dtype=torch.float32))
        valid.append(torch.as_tensor(((moved >= 0.0) & (moved <= size - 1.0)).all(axis=1)))
    batch_size = int(describer.cfg.features.batch_size)
    stacked, raw = torch.stack(images), []
    with torch.no_grad():
        for start in range(0, len(stacked), batch_size):
            raw.append(describer.extractor.run(stacked[start : start + batch_size].to(describer.device)))
    return WarpedCopies(
        torch.tensor(index),
        torch.cat(raw).to("cpu", torch.float16),
        torch.stack(points_a),
        torch.stack(points_b),
        torch.stack(valid),
    )


def _warp_loss(
    network: torch.nn.Module,
    raw: torch.Tensor,
    copies: WarpedCopies,
    chosen: torch.Tensor,
    load: int,
    device,
    temperature: float,
) -> torch.Tensor:
    """The correspondence loss of the warped copies ``chosen`` against their frames."""
    maps = torch.cat([raw[copies.index[chosen]], copies.raw[chosen]]).to(device).float()
    desc_a, desc_b = network(maps).chunk(2)  # (b, D, R, R) each
    return correspondence_loss(
        desc_a,
        desc_b,
        copies.points_a[chosen],
        copies.points_b[chosen],
        copies.valid[chosen],
        load_size=load,
        temperature=temperature,
    )


def adapt_network(
    describer: Any,
    frames: Optional[torch.Tensor],
    settings: AdaptSettings = AdaptSettings(),
    progress: bool = False,
    raw: Optional[torch.Tensor] = None,
    raw_mirrored: Optional[torch.Tensor] = None,
) -> AdaptResult:
    """Train a copy of ``describer.network`` on the video ``frames`` (T, 3, H, W) in [0, 1] by
    ``settings.objective``: the cycle walk, the correspondence loss of warped copies of the video's
    frames (:func:`warped_copies`), or their sum; ``raw``: the frames' raw maps from
    :func:`video_raw_maps`, if already made (then ``frames`` may be None for the walk; the warps
    need the frames, every frame's raw map), and ``raw_mirrored`` those of the mirrored frames (used
    when :func:`adapt_mirrored` says so)."""
    from tqdm.auto import tqdm

    settings.check()
    settings = settings.resolved(describer)
    settings.check()
    picked = None
    if raw is None:
        raw, picked = video_raw_maps(describer, frames, settings.max_frames)
    if raw.shape[0] < 2:
        raise HyperfeatError(f"adaptation needs a video of at least 2 frames; got {raw.shape[0]}")
    if settings.warped and frames is None:
        raise HyperfeatError(f"the {settings.objective!r} adaptation warps the frames: pass them, or objective='walk'")
    if picked is None and settings.warped:
        if int(frames.shape[0]) != int(raw.shape[0]):
            raise HyperfeatError(f"raw maps of {raw.shape[0]} frames for {frames.shape[0]} frames: pass every frame's")
        picked = list(range(int(raw.shape[0])))
    if not adapt_mirrored(describer, settings) or (not settings.walks and raw_mirrored is None):
        raw_mirrored = None  # the warp objective alone: the walk loss before / after is the plain walk's
    elif raw_mirrored is None:
        if frames is None:
            raise HyperfeatError(
                "the mirrored adaptation walk needs the frames or raw_mirrored (the mirrored frames' raw "
                "maps); pass one, or mirror=False"
            )
        raw_mirrored, _ = video_raw_maps(describer, frames, settings.max_frames, mirrored=True)
    if raw_mirrored is not None and raw_mirrored.shape != raw.shape:
        raise HyperfeatError(
            f"raw_mirrored must have the raw maps' shape {tuple(raw.shape)}; got {tuple(raw_mirrored.shape)}"
        )
    device, load, t_warp = describer.device, int(describer.load_size), float(settings.warp_temperature)
    copies = warped_copies(describer, frames, picked, settings.warps, settings.seed) if settings.warped else None
    network = copy.deepcopy(describer.network).to(device)
    for p in network.parameters():
        p.requires_grad_(True)
    rng = np.random.default_rng([int(settings.seed), 1])
    held = [_clip_indices(rng, raw.shape[0], settings) for _ in range(8)]  # fixed clips: the before/after loss
    result = AdaptResult(network, clips=held, mirror=raw_mirrored is not None, objective=settings.objective)
    every = None if copies is None else torch.arange(len(copies.index))

    def measure(before: bool) -> None:
        with torch.no_grad():
            walk = float(_walk(network, raw, held, settings, device, 0.0, raw_mirrored=raw_mirrored))
            warp = (
                float("nan") if copies is None else float(_warp_loss(network, raw, copies, every, load, device, t_warp))
            )
        if before:
            result.loss_before, result.warp_before = walk, warp
        else:
            result.loss_after, result.warp_after = walk, warp

    network.eval()
    measure(before=True)
    optimiser = torch.optim.AdamW(network.parameters(), lr=float(settings.lr), weight_decay=0.0)
    generator = torch.Generator().manual_seed(int(settings.seed))
    network.train()
    for step in tqdm(range(int(settings.steps)), desc="adapting to the video", unit="step", disable=not progress):
        loss = torch.zeros((), device=device)
        if settings.walks:
            clips = [_clip_indices(rng, raw.shape[0], settings) for _ in range(int(settings.clips_per_step))]
            dropout = float(settings.edge_dropout)
            loss = loss + _walk(network, raw, clips, settings, device, dropout, generator, raw_mirrored)
        if copies is not None:
            chosen = torch.as_tensor(rng.choice(len(copies.index), min(int(settings.warp_pairs), len(copies.index))))
            weight = float(settings.warp_weight) if settings.walks else 1.0
            loss = loss + weight * _warp_loss(network, raw, copies, chosen, load, device, t_warp)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        result.losses.append(float(loss.detach()))
    network.eval()
    for p in network.parameters():
        p.requires_grad_(False)
    measure(before=False)
    return result
