"""The correspondence loss against a straightforward per-pair, per-point computation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hyperfeat.errors import DataError
from hyperfeat.train.losses import correspondence_loss

LOAD = 64


def _cell(point: list[float], load_size: int, h: int, w: int) -> int:
    """Independent: scale to the grid, Python round (half to even), clip, flatten y·w + x."""
    x = min(max(round(point[0] * w / load_size), 0), w - 1)
    y = min(max(round(point[1] * h / load_size), 0), h - 1)
    return y * w + x


def _reference_loss(desc_a, desc_b, points_a, points_b, valid, load_size, temperature=0.07):
    """One cross-entropy per valid point and direction, with plain loops."""
    terms_ab, terms_ba = [], []
    for i in range(desc_a.shape[0]):
        a = desc_a[i].flatten(1)  # (D, h·w)
        b = desc_b[i].flatten(1)
        a, b = a / a.norm(dim=0, keepdim=True), b / b.norm(dim=0, keepdim=True)
        for k in range(points_a.shape[1]):
            if not valid[i, k]:
                continue
            ia = _cell(points_a[i, k].tolist(), load_size, *desc_a.shape[2:])
            ib = _cell(points_b[i, k].tolist(), load_size, *desc_b.shape[2:])
            logits_ab = (a[:, ia] @ b) / temperature
            logits_ba = (b[:, ib] @ a) / temperature
            terms_ab.append(F.cross_entropy(logits_ab[None], torch.tensor([ib])))
            terms_ba.append(F.cross_entropy(logits_ba[None], torch.tensor([ia])))
    return (torch.stack(terms_ab).mean() + torch.stack(terms_ba).mean()) / 2


def _batch(seed: int = 0, b: int = 3, n: int = 5, d: int = 16, h: int = 8, w: int = 8):
    g = torch.Generator().manual_seed(seed)
    desc_a, desc_b = torch.randn(b, d, h, w, generator=g), torch.randn(b, d, h, w, generator=g)
    points_a = torch.rand(b, n, 2, generator=g) * (LOAD - 1)
    points_b = torch.rand(b, n, 2, generator=g) * (LOAD - 1)
    valid = torch.rand(b, n, generator=g) > 0.3
    valid[:, 0] = True
    return desc_a, desc_b, points_a, points_b, valid


def test_loss_equals_reference_loop_pooled_over_points():
    desc_a, desc_b, points_a, points_b, valid = _batch()
    valid[0] = torch.tensor([True, False, False, False, False])  # pairs with 1 and 5 valid points
    valid[1] = True
    loss = correspondence_loss(desc_a, desc_b, points_a, points_b, valid, LOAD)
    assert torch.allclose(loss, _reference_loss(desc_a, desc_b, points_a, points_b, valid, LOAD), atol=1e-5)
    # pooled over points, not a mean of per-pair losses
    per_pair = [
        correspondence_loss(
            desc_a[i : i + 1], desc_b[i : i + 1], points_a[i : i + 1], points_b[i : i + 1], valid[i : i + 1], LOAD
        )
        for i in range(3)
    ]
    assert not torch.allclose(loss, torch.stack(per_pair).mean(), atol=1e-3)


def test_loss_with_non_square_grids_and_other_temperature():
    g = torch.Generator().manual_seed(5)
    desc_a, desc_b = torch.randn(2, 8, 4, 6, generator=g), torch.randn(2, 8, 5, 3, generator=g)
    points_a, points_b = torch.rand(2, 4, 2, generator=g) * 64, torch.rand(2, 4, 2, generator=g) * 64
    valid = torch.ones(2, 4, dtype=torch.bool)
    loss = correspondence_loss(desc_a, desc_b, points_a, points_b, valid, 64, temperature=0.5)
    ref = _reference_loss(desc_a, desc_b, points_a, points_b, valid, 64, temperature=0.5)
    assert torch.allclose(loss, ref, atol=1e-5)


def test_loss_is_symmetric_in_the_two_images():
    desc_a, desc_b, points_a, points_b, valid = _batch(seed=1)
    ab = correspondence_loss(desc_a, desc_b, points_a, points_b, valid, LOAD)
    ba = correspondence_loss(desc_b, desc_a, points_b, points_a, valid, LOAD)
    assert torch.allclose(ab, ba, atol=1e-6)


def test_invalid_points_are_ignored_even_when_garbage():
    desc_a, desc_b, points_a, points_b, valid = _batch(seed=2)
    loss = correspondence_loss(desc_a, desc_b, points_a, points_b, valid, LOAD)
    junk_a, junk_b = points_a.clone(), points_b.clone()
    junk_a[~valid] = float("nan")
    junk_b[~valid] = -1e6
    assert torch.allclose(correspondence_loss(desc_a, desc_b, junk_a, junk_b, valid, LOAD), loss)


def test_no_valid_point_gives_zero_with_graph_and_bad_shapes_raise():
    desc_a, desc_b, points_a, points_b, valid = _batch(seed=3)
    desc_a.requires_grad_(True)
    zero = correspondence_loss(desc_a, desc_b, points_a, points_b, torch.zeros_like(valid), LOAD)
    zero.backward()
    assert zero.item() == 0.0 and desc_a.grad is not None
    with pytest.raises(DataError, match="points_a"):
        correspondence_loss(desc_a, desc_b, points_a[..., :1], points_b, valid, LOAD)


def test_a_few_gradient_steps_lower_the_loss():
    torch.manual_seed(0)
    desc_a = torch.nn.Parameter(torch.randn(1, 8, 6, 6))
    desc_b = torch.nn.Parameter(torch.randn(1, 8, 6, 6))
    points_a = torch.tensor([[[5.0, 5.0], [40.0, 10.0], [60.0, 60.0], [20.0, 50.0]]])
    points_b = torch.tensor([[[50.0, 8.0], [12.0, 30.0], [30.0, 30.0], [63.0, 0.0]]])
    valid = torch.ones(1, 4, dtype=torch.bool)
    opt = torch.optim.Adam([desc_a, desc_b], lr=0.05)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = correspondence_loss(desc_a, desc_b, points_a, points_b, valid, LOAD)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
