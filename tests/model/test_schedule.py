"""The timestep plan against the numbers of docs/ARCHITECTURE.md, computed independently."""

import torch
from diffusers import DDIMScheduler

from hyperfeat.model import schedule


def test_alphas_are_scaled_linear_cumprod():
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float32) ** 2
    expected = torch.cumprod(1 - betas, dim=0)
    assert torch.allclose(schedule.alphas_cumprod(), expected)


def test_ddim_timesteps_have_no_offset():
    assert schedule.ddim_timesteps(50) == list(range(0, 1000, 20))
    # SD 1.5's own scheduler config has steps_offset=1, which shifts every timestep by one
    shipped = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)
    shipped.set_timesteps(50)
    assert sorted(int(t) for t in shipped.timesteps) == list(range(1, 1000, 20))


def test_inversion_steps_labels_and_timesteps():
    steps = schedule.inversion_steps(50)
    assert len(steps) == 50
    assert steps[0] == schedule.Step(t=-1, t_next=0, label=49)  # clean latent, alpha 1
    assert steps[1] == schedule.Step(t=0, t_next=20, label=48)
    assert steps[-1] == schedule.Step(t=960, t_next=980, label=0)
    for i, step in enumerate(steps):
        assert step.label == 49 - i
        assert step.t == (-1 if i == 0 else 20 * (i - 1))
    paper = [49, 45, 40, 35, 30, 25, 20, 15, 10, 5, 0]
    assert schedule.label_timesteps(50, paper) == [-1, 60, 160, 260, 360, 460, 560, 660, 760, 860, 960]


def test_one_step_is_clean_latent():
    assert schedule.inversion_steps(1) == [schedule.Step(t=-1, t_next=0, label=0)]


def test_generation_steps_run_downwards():
    steps = schedule.generation_steps(50)
    assert [s.t for s in steps[:3]] == [980, 960, 940]
    assert steps[-1] == schedule.Step(t=0, t_next=-1, label=49)
    assert [s.label for s in steps] == list(range(50))


def test_plan_is_cut_after_last_saved_label():
    steps = schedule.inversion_steps(50)
    assert len(schedule.steps_needed(steps, [49, 45])) == 5
    assert len(schedule.steps_needed(steps, [0])) == 50


def test_ddim_update_matches_formula():
    x, eps = torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2)
    a, a_next = torch.tensor(0.9), torch.tensor(0.7)
    x0 = (x - (1 - 0.9) ** 0.5 * eps) / 0.9**0.5
    expected = 0.7**0.5 * x0 + (1 - 0.7) ** 0.5 * eps
    assert torch.allclose(schedule.ddim_update(x, eps, a, a_next), expected, atol=1e-6)
    # from the clean latent (alpha 1) the first move is plain noising with eps
    assert torch.allclose(
        schedule.ddim_update(x, eps, torch.tensor(1.0), a_next), 0.7**0.5 * x + 0.3**0.5 * eps, atol=1e-6
    )
