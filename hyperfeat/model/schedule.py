"""The timestep plan: which UNet calls are made, at which timestep, and under which label.

The DDIM numbers are built here (beta 0.00085 → 0.012, scaled_linear, 1000 steps,
steps_offset=0), never read from a pipeline's scheduler config: SD 1.5 ships steps_offset=1,
which would shift every timestep by one.

Inversion (paper default), with ``seq`` the DDIM timesteps ascending (0, 20, …, 980 for N=50)
and ``seq_next = [-1] + seq[:-1]``: step i calls the UNet on the current latent at
t = seq_next[i] (so step 0 is t = -1 on the clean latent, alpha = 1) and labels that call
N-1-i; then, with a = ᾱ[t] (1 for t = -1) and a' = ᾱ[seq[i]]:
x0 = (x − √(1−a)·ε)/√a, x ← √a'·x0 + √(1−a')·ε.

Generation runs the same numbers the other way: step i calls the UNet at t = seq[N-1-i]
(980, 960, …, 0), labels it i, and moves to t' = seq_next[N-1-i].

Noise mode uses the inversion's timestep for each label, but makes each x_t directly from the
clean latent, x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε, all labels in one batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from diffusers import DDIMScheduler

BETA_START = 0.00085


BETA_END = 0.012


NUM_TRAIN_TIMESTEPS = 1000


def make_scheduler() -> DDIMScheduler:
    """The DDIM scheduler of the reference, built from its numbers."""
    return DDIMScheduler(
        beta_start=BETA_START,
        beta_end=BETA_END,
        beta_schedule="scaled_linear",
        num_train_timesteps=NUM_TRAIN_TIMESTEPS,
        steps_offset=0,
        clip_sample=False,
        set_alpha_to_one=False,
    )


def alphas_cumprod() -> torch.Tensor:
    """ᾱ_t for t = 0 … 999, float32: cumprod(1 − β)."""
    betas = make_scheduler().betas  # (1000,) float32
    return torch.cumprod(1.0 - betas, dim=0)


def ddim_timesteps(num_steps: int) -> list[int]:
    """DDIM timesteps of an N-step plan, ascending (0, 20, …, 980 for N=50)."""
    scheduler = make_scheduler()
    scheduler.set_timesteps(num_steps)
    return sorted(int(t) for t in scheduler.timesteps)


@dataclass(frozen=True)
class Step:
    """One UNet call: its timestep ``t`` (−1 means the clean latent), the timestep the
    update moves to, and the label it is saved under."""

    t: int
    t_next: int
    label: int


def alpha_at(alphas: torch.Tensor, t: int) -> torch.Tensor:
    """ᾱ_t, with ᾱ_{-1} = 1 (the clean latent)."""
    return torch.ones((), dtype=alphas.dtype) if t < 0 else alphas[t]


def inversion_steps(num_steps: int) -> list[Step]:
    seq = ddim_timesteps(num_steps)
    seq_next = [-1] + seq[:-1]
    return [Step(t=seq_next[i], t_next=seq[i], label=num_steps - 1 - i) for i in range(num_steps)]


def generation_steps(num_steps: int) -> list[Step]:
    seq = ddim_timesteps(num_steps)
    seq_next = [-1] + seq[:-1]
    return [Step(t=seq[num_steps - 1 - i], t_next=seq_next[num_steps - 1 - i], label=i) for i in range(num_steps)]


def label_timesteps(num_steps: int, labels: Sequence[int]) -> list[int]:
    """The inversion timestep of each label: label k ↦ seq_next[N-1-k]."""
    by_label = {s.label: s.t for s in inversion_steps(num_steps)}
    return [by_label[k] for k in labels]


def steps_needed(steps: list[Step], save_labels: Sequence[int]) -> list[Step]:
    """The plan cut after the last step whose label is saved (later calls feed nothing kept)."""
    wanted = set(save_labels)
    last = max(i for i, s in enumerate(steps) if s.label in wanted)
    return steps[: last + 1]


def ddim_update(x: torch.Tensor, eps: torch.Tensor, a: torch.Tensor, a_next: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM move (eta = 0) from ᾱ = a to ᾱ = a_next given the noise estimate."""
    x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
    return a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps


def add_noise(x0: torch.Tensor, noise: torch.Tensor, alphas: torch.Tensor, timesteps: Sequence[int]) -> torch.Tensor:
    """x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε for each t: (B, C, h, w) → (S·B, C, h, w), timestep-major."""
    out = []
    for t in timesteps:
        a = alpha_at(alphas, t).to(x0.device)
        out.append(a.sqrt() * x0 + (1 - a).sqrt() * noise)
    return torch.cat(out)
