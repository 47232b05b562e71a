"""Loss functions against explicit loops written from spec sections 2 and 4d."""
import math

import pytest
import torch

from conr.losses import byol_loss, neighborhood_loss


def _cos(a, b):
    return float(a @ b / (a.norm() * b.norm()))


def test_byol_loss_hand_case():
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    z = torch.tensor([[1.0, 1.0], [0.0, -1.0]])
    # cos = 1/sqrt(2) and -1 -> loss = -2 * mean
    expected = -2 * (1 / math.sqrt(2) - 1) / 2
    assert byol_loss(p, z).item() == pytest.approx(expected, abs=1e-6)


def test_byol_loss_no_gradient_into_target():
    p = torch.randn(4, 3, requires_grad=True)
    z = torch.randn(4, 3, requires_grad=True)
    byol_loss(p, z).backward()
    assert p.grad is not None and z.grad is None


@pytest.mark.parametrize("use_keep", [False, True])
def test_neighborhood_loss_matches_loop(use_keep):
    g = torch.Generator().manual_seed(0)
    b, d, k = 7, 5, 3
    pred = torch.randn(b, d, generator=g)
    targets = torch.randn(b, d, generator=g)
    nbrs = torch.randint(0, b, (b, k), generator=g)
    keep = torch.tensor([True, False, True, True, False, True, True]) if use_keep else None
    total = 0.0
    for i in range(b):
        if keep is not None and not keep[i]:
            continue
        for j in nbrs[i].tolist():
            total += _cos(pred[i], targets[j])
    expected = -2.0 * total / (b * k)  # dropped anchors still count in the B*k denominator
    assert neighborhood_loss(pred, targets, nbrs, keep).item() == pytest.approx(expected, abs=1e-5)


def test_neighborhood_loss_with_self_only_is_byol():
    g = torch.Generator().manual_seed(1)
    pred, targets = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    own = torch.arange(6).unsqueeze(1)
    assert neighborhood_loss(pred, targets, own).item() == pytest.approx(byol_loss(pred, targets).item(), abs=1e-6)
