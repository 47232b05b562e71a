"""Tests of conr.ops.boundary (spec 4b, 4c) against loop references and hand-made cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conr.ops.boundary import boundary_ratio, keep_mask, relaxed_fraction


# ---------------------------------------------------------------- reference (spec 4b)
def reference_ratios(feats: np.ndarray, centers: np.ndarray, labels: np.ndarray):
    """(code, paper) ratios by explicit loops in float64."""
    feats = np.asarray(feats, dtype=np.float64)
    centers = np.asarray(centers, dtype=np.float64)
    code, paper = [], []
    for i in range(feats.shape[0]):
        d = [math.sqrt(float(np.sum((feats[i] - centers[c]) ** 2))) for c in range(centers.shape[0])]
        own = d[int(labels[i])]
        nxt = min(d[c] for c in range(centers.shape[0]) if c != int(labels[i]))
        code.append(own / nxt)
        paper.append(1.0 - (nxt - own) / max(own, nxt))
    return np.array(code), np.array(paper)


def _random_case(b=50, d=8, k=5, seed=0):
    rng = np.random.default_rng(seed)
    feats = rng.standard_normal((b, d))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    # k-means-like centres: means of unit vectors (not re-normalised).
    centers = rng.standard_normal((k, d)) * 0.5
    # Labels: mostly nearest centre, some deliberately wrong (ratio > 1).
    dist = np.linalg.norm(feats[:, None, :] - centers[None], axis=2)
    labels = dist.argmin(1)
    wrong = rng.random(b) < 0.3
    labels[wrong] = rng.integers(0, k, size=int(wrong.sum()))
    return feats.astype(np.float32), centers.astype(np.float32), labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_boundary_ratio_matches_loop_reference(seed):
    feats, centers, labels = _random_case(seed=seed)
    code_ref, paper_ref = reference_ratios(feats, centers, labels)
    code = boundary_ratio(torch.from_numpy(feats), torch.from_numpy(centers), torch.from_numpy(labels))
    paper = boundary_ratio(torch.from_numpy(feats), torch.from_numpy(centers), torch.from_numpy(labels),
                           variant="paper")
    assert code.shape == (50,) and paper.shape == (50,)
    np.testing.assert_allclose(code.numpy(), code_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(paper.numpy(), paper_ref, rtol=1e-5, atol=1e-6)
    assert (code_ref > 1).any() and (code_ref < 1).any()  # both regimes exercised


@pytest.mark.parametrize("seed", [3, 4])
def test_code_and_paper_variants_same_order(seed):
    feats, centers, labels = _random_case(b=64, seed=seed)
    code = boundary_ratio(torch.from_numpy(feats), torch.from_numpy(centers), torch.from_numpy(labels),
                          variant="code").numpy()
    paper = boundary_ratio(torch.from_numpy(feats), torch.from_numpy(centers), torch.from_numpy(labels),
                           variant="paper").numpy()
    assert np.unique(code).size == code.size  # distinct values: argsort is unambiguous
    np.testing.assert_array_equal(np.argsort(code), np.argsort(paper))
    # Equal where d_own <= d_next.
    below = code <= 1
    np.testing.assert_allclose(code[below], paper[below], rtol=1e-5)
    # And the filter they drive is identical.
    for frac in (0.5, 0.8, 1.0):
        for rule in ("code", "paper"):
            assert torch.equal(keep_mask(torch.from_numpy(code), frac, rule),
                               keep_mask(torch.from_numpy(paper), frac, rule))


def test_boundary_ratio_hand_made_2d():
    """Centres (0,0), (4,0), (0,10).
    f=(1,0) label 0: d_own=1, d_next=3 -> code 1/3, paper 1-(3-1)/3 = 1/3.
    f=(3,0) label 0: d_own=3, d_next=1 -> code 3,   paper 1-(1-3)/3 = 5/3.
    f=(0,8) label 2: d_own=2, d_next=8 -> code 1/4, paper 1/4.
    f=(2,0) label 1: d_own=2, d_next=2 -> code 1,   paper 1.
    f=(0,6) label 0: d_own=6, d_next=4 (to c2) -> code 3/2, paper 1-(4-6)/6 = 4/3."""
    centers = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 10.0]])
    feats = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 8.0], [2.0, 0.0], [0.0, 6.0]])
    labels = torch.tensor([0, 0, 2, 1, 0])
    code = boundary_ratio(feats, centers, labels, variant="code")
    paper = boundary_ratio(feats, centers, labels, variant="paper")
    torch.testing.assert_close(code, torch.tensor([1 / 3, 3.0, 0.25, 1.0, 1.5]))
    torch.testing.assert_close(paper, torch.tensor([1 / 3, 5 / 3, 0.25, 1.0, 4 / 3]))
    # Both ratios are scale-free: blowing the whole picture up by 100 changes nothing.
    torch.testing.assert_close(boundary_ratio(100 * feats, 100 * centers, labels, variant="code"), code)
    torch.testing.assert_close(boundary_ratio(100 * feats, 100 * centers, labels, variant="paper"), paper)


def test_boundary_ratio_default_is_code():
    centers = torch.tensor([[0.0, 0.0], [4.0, 0.0]])
    feats = torch.tensor([[3.0, 0.0]])
    labels = torch.tensor([0])
    torch.testing.assert_close(boundary_ratio(feats, centers, labels), torch.tensor([3.0]))


def test_boundary_ratio_errors():
    feats = torch.randn(5, 3)
    with pytest.raises(ValueError):
        boundary_ratio(feats, torch.randn(1, 3), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError):
        boundary_ratio(feats, torch.randn(3, 3), torch.zeros(5, dtype=torch.long), variant="nope")


# ---------------------------------------------------------------- relaxed_fraction (4c)
@pytest.mark.parametrize("epoch,expected", [(800, 0.8), (801, 0.804), (825, 0.9), (849, 0.996),
                                            (850, 1.0), (851, 1.0), (900, 1.0), (1000, 1.0)])
def test_relaxed_fraction_code_defaults(epoch, expected):
    assert relaxed_fraction(epoch, 800, 850, 0.8) == pytest.approx(expected, abs=1e-12)


def test_relaxed_fraction_linear_reference():
    for t0, t_end, fr0 in [(800, 1000, 0.8), (10, 20, 0.7), (0, 7, 0.0), (5, 6, 0.9), (3, 40, 1.0)]:
        for epoch in range(t0, t_end + 30):
            want = min(1.0, fr0 + (1.0 - fr0) * (epoch - t0) / (t_end - t0))
            got = relaxed_fraction(epoch, t0, t_end, fr0)
            assert isinstance(got, float)
            assert got == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("t_end", [800, 799, 0])
def test_relaxed_fraction_no_window(t_end):
    for epoch in (800, 801, 900):
        assert relaxed_fraction(epoch, 800, t_end, 0.8) == 1.0


# ---------------------------------------------------------------------- keep_mask (4c)
def reference_keep_code(ratios, fraction):
    b = len(ratios)
    n = int(fraction * b)
    if n == 0:
        return [False] * b
    cut = sorted(ratios)[n - 1]
    return [r < cut for r in ratios]


def reference_keep_paper(ratios, fraction):
    b = len(ratios)
    n = int(fraction * b)
    order = sorted(range(b), key=lambda i: (ratios[i], i))
    keep = set(order[:n])
    return [i in keep for i in range(b)]


def test_keep_mask_hand_made_distinct():
    r = torch.tensor([0.5, 0.1, 0.9, 0.3, 0.7])
    # fraction 0.6 -> n = 3 -> cut = 3rd smallest = 0.5 -> keep {0.1, 0.3}.
    assert keep_mask(r, 0.6, "code").tolist() == [False, True, False, True, False]
    # paper: the 3 smallest {0.1, 0.3, 0.5}.
    assert keep_mask(r, 0.6, "paper").tolist() == [True, True, False, True, False]
    # fraction 1: code still drops the largest; paper keeps all.
    assert keep_mask(r, 1.0, "code").tolist() == [True, True, False, True, True]
    assert keep_mask(r, 1.0, "paper").tolist() == [True] * 5
    # default rule is the code's
    assert keep_mask(r, 1.0).tolist() == [True, True, False, True, True]


def test_keep_mask_hand_made_ties():
    r = torch.tensor([0.2, 0.1, 0.2, 0.3, 0.5, 0.2])
    # n = int(0.5*6) = 3, sorted = .1 .2 .2 .2 .3 .5 -> cut .2 -> keep only .1
    assert keep_mask(r, 0.5, "code").tolist() == [False, True, False, False, False, False]
    # paper: exactly 3 -> .1 and the first two .2 by position (indices 0, 2)
    assert keep_mask(r, 0.5, "paper").tolist() == [True, True, True, False, False, False]
    # n = 5 -> cut .3 -> keep .1 and all .2
    assert keep_mask(r, 5 / 6, "code").tolist() == [True, True, True, False, False, True]
    # all equal: code keeps nobody, paper keeps exactly n
    eq = torch.full((8,), 0.4)
    assert not keep_mask(eq, 1.0, "code").any()
    assert int(keep_mask(eq, 0.5, "paper").sum()) == 4


def test_keep_mask_floor_of_fraction():
    r = torch.arange(10, dtype=torch.float32)
    # 0.79 * 10 -> 7 (floor): code keeps values < 6 (6 anchors), paper keeps 7.
    assert int(keep_mask(r, 0.79, "code").sum()) == 6
    assert int(keep_mask(r, 0.79, "paper").sum()) == 7
    assert keep_mask(r, 0.79, "paper").tolist() == [True] * 7 + [False] * 3


@pytest.mark.parametrize("rule", ["code", "paper"])
def test_keep_mask_fraction_zero_keeps_nothing(rule):
    r = torch.rand(16)
    m = keep_mask(r, 0.0, rule)
    assert m.dtype == torch.bool and m.shape == (16,)
    assert not m.any()
    # fraction so small that floor(fr*B) = 0
    assert not keep_mask(r, 0.05, rule).any()


@pytest.mark.parametrize("rule", ["code", "paper"])
def test_keep_mask_random_vs_reference(rule):
    rng = np.random.default_rng(0)
    ref = reference_keep_code if rule == "code" else reference_keep_paper
    for trial in range(60):
        b = int(rng.integers(1, 40))
        # coarse values so that ties are frequent
        ratios = (rng.integers(0, 8, size=b) / 4.0).astype(np.float32)
        fraction = float(rng.choice([0.0, 0.25, 0.5, 0.7, 0.8, 0.9, 1.0, rng.random()]))
        got = keep_mask(torch.from_numpy(ratios), fraction, rule)
        assert got.dtype == torch.bool
        assert got.tolist() == ref(ratios.tolist(), fraction), (trial, ratios, fraction)


def test_keep_mask_errors():
    r = torch.rand(5)
    with pytest.raises(ValueError):
        keep_mask(r, 0.5, "nope")
