"""Tests of HaDis, SimSiam, MoCo v2 and their ConNR* variants (spec sections 5, 6).

Every loss is checked against a number worked out here independently: by hand
for the tiny cases, or by a plain Python loop written from the spec text, never
by calling the module's own helpers.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conr.losses import (cluster_centers, hsd_loss, hsd_mining, moco_infonce, moco_neighborhood_infonce,
                                prototype_contrast_loss, prototype_loss, simsiam_loss, simsiam_neighborhood_loss)

NEW_METHODS = ("hadis", "simsiam", "simsiam_connr", "moco", "moco_connr")


def _t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def _cos(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _unit(rows) -> np.ndarray:
    x = np.asarray(rows, float)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ------------------------------------------------------------------------ SimSiam
def test_simsiam_loss_by_hand():
    p = _t([[1.0, 0.0], [1.0, 1.0]])
    z = _t([[0.0, 2.0], [3.0, 3.0]])
    # cos = 0 and 1 -> D = -(0 + 1) / 2
    assert float(simsiam_loss(p, z)) == pytest.approx(-0.5)


def test_simsiam_loss_stops_gradient_into_z():
    p = _t([[1.0, 0.5]]).requires_grad_()
    z = _t([[0.2, 1.0]]).requires_grad_()
    simsiam_loss(p, z).backward()
    assert z.grad is None and p.grad is not None


def test_simsiam_neighborhood_loss_matches_loop():
    p = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
    z = [[1.0, 1.0], [0.0, 2.0], [-1.0, 0.0]]
    nbrs = [[0, 1], [1, 2], [2, 0]]
    keep = [True, False, True]
    expected = 0.0
    for i in range(3):
        for j in nbrs[i]:
            expected += -(1.0 if keep[i] else 0.0) * _cos(p[i], z[j])
    expected /= 3 * 2  # mean over all B*k slots, dropped anchors count as zero
    got = simsiam_neighborhood_loss(_t(p), _t(z), torch.tensor(nbrs), torch.tensor(keep))
    assert float(got) == pytest.approx(expected)
    # by hand: anchor 0: cos(p0, z0) = cos 45°, cos(p0, z1) = cos 90°; anchor 1 dropped;
    # anchor 2: cos(p2, z2) = cos 135°, cos(p2, z0) = cos 0° -> -(1/√2 + 0 - 1/√2 + 1) / 6
    assert expected == pytest.approx(-1 / 6)


# --------------------------------------------------------------------------- MoCo
def test_moco_infonce_matches_loop():
    q = _unit([[1.0, 0.0], [0.6, 0.8]])
    k = _unit([[0.8, 0.6], [0.0, 1.0]])
    queue = _unit([[-1.0, 0.0], [0.0, -1.0], [1.0, 1.0]])
    T = 0.2
    expected = 0.0
    for i in range(2):
        pos = math.exp(q[i] @ k[i] / T)
        neg = sum(math.exp(q[i] @ n / T) for n in queue)
        expected += -math.log(pos / (pos + neg))
    expected /= 2
    assert float(moco_infonce(_t(q), _t(k), _t(queue), T)) == pytest.approx(expected)


def test_moco_neighborhood_infonce_matches_loop():
    q = _unit([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    k = _unit([[0.8, 0.6], [0.0, 1.0], [1.0, 0.1]])
    queue = _unit([[-1.0, 0.0], [0.0, -1.0]])
    nbrs = [[0, 2], [1, 0], [2, 1]]
    keep = [True, True, False]
    T = 0.5
    expected = 0.0
    for i in range(3):
        if not keep[i]:
            continue
        neg = sum(math.exp(q[i] @ n / T) for n in queue)
        for j in nbrs[i]:  # each neighbour is a positive against the queue's negatives only
            pos = math.exp(q[i] @ k[j] / T)
            expected += -math.log(pos / (pos + neg))
    expected /= 3 * 2
    got = moco_neighborhood_infonce(_t(q), _t(k), _t(queue), T, torch.tensor(nbrs), torch.tensor(keep))
    assert float(got) == pytest.approx(expected)


def test_moco_connr_with_own_key_only_is_moco():
    g = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(6, 4, generator=g), dim=1)
    k = torch.nn.functional.normalize(torch.randn(6, 4, generator=g), dim=1)
    queue = torch.nn.functional.normalize(torch.randn(5, 4, generator=g), dim=1)
    own = torch.arange(6).unsqueeze(1)
    assert torch.allclose(moco_neighborhood_infonce(q, k, queue, 0.2, own), moco_infonce(q, k, queue, 0.2))


# ---------------------------------------------------------------------------- HSD
def _circle(deg) -> np.ndarray:
    r = np.radians(np.asarray(deg, float))
    return np.stack([np.cos(r), np.sin(r)], axis=1)


def _chord(a_deg, b_deg) -> float:
    return 2.0 * abs(math.sin(math.radians(a_deg - b_deg) / 2.0))


TEACHER_DEG = [0.0, 4.0, 30.0, 100.0, 180.0]
STUDENT_DEG = [10.0, 2.0, 25.0, 60.0, 170.0]


def _hsd_reference(t: np.ndarray, s: np.ndarray, tau: float):
    """Spec 6, one anchor at a time with plain loops."""
    b = len(t)
    d_t = [[float(np.linalg.norm(t[i] - t[j])) for j in range(b)] for i in range(b)]
    d = [[float(np.linalg.norm(t[i] - s[j])) for j in range(b)] for i in range(b)]
    total, picks = 0.0, []
    for i in range(b):
        negs = [j for j in range(b) if d_t[i][j] > d[i][i]]
        rest = [j for j in range(b) if j not in negs]
        an = min(negs, key=lambda j: d[i][j]) if negs else None
        ap = max(rest, key=lambda j: d[i][j])
        w_an = max(d_t[i][an] - d[i][an], 0.0) if negs else 0.0
        w_ap = max(d[i][ap] - d_t[i][ap], 0.0)
        l0 = w_an * (d[i][an] if negs else 0.0) / tau
        l1 = w_ap * d[i][ap] / tau
        total += -l0 + math.log(math.exp(l0) + math.exp(l1))
        picks.append((an, ap, w_an, w_ap))
    return total / b, picks


def test_hsd_mining_known_hardest_pairs():
    t, s = _circle(TEACHER_DEG), _circle(STUDENT_DEG)
    m = hsd_mining(_t(t), _t(s))
    # anchor 0 (teacher at 0°, its student at 10°, D[0,0] = chord 10°): teacher 1 at 4° is
    # closer than that (a positive); teachers 2, 3, 4 are negatives, and of the students
    # 2 (25°), 3 (60°), 4 (170°) the nearest to t_0 is student 2. Among the positives {0, 1}
    # the farthest student from t_0 is its own (10° vs 2°).
    assert int(m["an"][0]) == 2 and int(m["ap"][0]) == 0
    assert float(m["w_an"][0]) == pytest.approx(_chord(30, 0) - _chord(25, 0), abs=1e-9)
    assert float(m["w_ap"][0]) == pytest.approx(_chord(10, 0), abs=1e-5)  # D_t[0,0] = 0 (up to the clamp)
    # anchor 1 (t at 4°, own student at 2°): everybody else is a negative; the nearest
    # student is student 0 at 10° (6° away), which is farther than teacher 0, so w_an = 0.
    assert int(m["an"][1]) == 0 and int(m["ap"][1]) == 1
    assert float(m["w_an"][1]) == 0.0
    # anchor 2 (t at 30°, own student at 25°): all others negatives, nearest student is 0 (20° away)
    assert int(m["an"][2]) == 0
    assert float(m["w_an"][2]) == pytest.approx(_chord(30, 0) - _chord(30, 10), abs=1e-9)
    _, picks = _hsd_reference(t, s, 0.5)
    assert [p[0] for p in picks] == m["an"].tolist()
    assert [p[1] for p in picks] == m["ap"].tolist()


def test_hsd_loss_matches_loop_and_grad_only_to_student():
    t, s = _circle(TEACHER_DEG), _circle(STUDENT_DEG)
    expected, _ = _hsd_reference(t, s, 0.5)
    teacher, student = _t(t).requires_grad_(), _t(s).requires_grad_()
    loss = hsd_loss(teacher, student, 0.5)
    assert float(loss.detach()) == pytest.approx(expected, abs=1e-6)
    loss.backward()
    assert teacher.grad is None and student.grad is not None and torch.isfinite(student.grad).all()


def test_hsd_anchor_without_negative_gives_zero_logit():
    t = _circle([0.0, 90.0])
    s = -t  # every own student is at distance 2: no teacher is farther, so no negatives
    m = hsd_mining(_t(t), _t(s))
    assert not m["has_neg"].any()
    assert (m["w_an"] == 0).all()
    # logits [0, w_ap·D[i,ap]/τ] with ap = the farthest student = own (distance 2), w_ap = 2 - 0
    l1 = 2.0 * 2.0 / 0.5
    assert float(hsd_loss(_t(t), _t(s), 0.5)) == pytest.approx(math.log(1 + math.exp(l1)), abs=1e-5)


# ---------------------------------------------------------------------- prototypes
def test_cluster_centers_l1_mean_then_unit_norm():
    x = _t([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0]])
    centers, present = cluster_centers(x, torch.tensor([0, 0, 2]), 3)
    assert present.tolist() == [True, False, True]
    assert torch.allclose(centers[0], _t([1 / math.sqrt(2), 1 / math.sqrt(2)]))
    assert torch.allclose(centers[1], _t([0.0, 0.0]))
    assert torch.allclose(centers[2], _t([0.6, 0.8]))


def test_prototype_loss_with_absent_cluster_by_hand():
    # three clusters, cluster 1 has no sample in the batch
    q = _t([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    k = _t([[1.0, 0.0], [1.0, 0.0], [0.0, -1.0]])
    labels = torch.tensor([0, 0, 2])
    # online centres: c0 = (1, 1)/√2, c2 = (-1, 0); target centres: (1, 0), (0, -1)
    r = 1 / math.sqrt(2)
    T = 0.5
    loss0 = -(r / T) + math.log(math.exp(r / T) + math.exp(-r / T))   # pos c0·k0, neg c0·c2
    loss2 = -(0.0 / T) + math.log(math.exp(0.0) + math.exp(-r / T))   # pos c2·k2 = 0, neg c2·c0
    expected = (loss0 + loss2) / 2                                      # mean over the 2 present clusters
    assert float(prototype_loss(q, k, labels, 3, T)) == pytest.approx(expected)
    # the ProPos code's variant fills the absent column with the logit -10 instead
    loss0c = -(r / T) + math.log(math.exp(r / T) + math.exp(-r / T) + math.exp(-10))
    loss2c = math.log(1.0 + math.exp(-r / T) + math.exp(-10))
    assert float(prototype_loss(q, k, labels, 3, T, absent_logit=-10.0)) == pytest.approx((loss0c + loss2c) / 2)


def test_prototype_contrast_gradient_only_to_online_centres():
    qc = torch.nn.functional.normalize(torch.randn(4, 3, dtype=torch.float64), dim=1).requires_grad_()
    kc = torch.nn.functional.normalize(torch.randn(4, 3, dtype=torch.float64), dim=1).requires_grad_()
    present = torch.tensor([True, True, False, True])
    loss = prototype_contrast_loss(qc, kc, present, 0.5)
    loss.backward()
    assert kc.grad is None
    assert torch.isfinite(qc.grad).all() and float(qc.grad[2].abs().sum()) == 0.0


# ------------------------------------------------------------------ methods, configs
TINY = ["data.image_size=8", "model.backbone=small_cnn", "model.width=4", "model.hidden_dim=16", "model.proj_dim=8",
        "train.batch_size=16", "train.epochs=2", "train.warmup_epochs=1", "train.device=cpu", "run.progress=false",
        "stage2.start_epoch=1", "stage2.k=3", "stage2.k1=4", "stage2.k2=2", "stage2.t_end=2", "cluster.n_clusters=3",
        "cluster.max_iter=20", "simsiam.proj_hidden_dim=16", "simsiam.proj_dim=16", "simsiam.pred_hidden_dim=4",
        "moco.dim=8", "moco.queue_size=24", "hadis.warmup_epochs=1", "hadis.resample=true"]


def _tiny_data(n: int = 32):
    from conr.data import ImageData

    g = torch.Generator().manual_seed(0)
    return ImageData(images=torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g),
                     labels=torch.arange(n) % 3, name="random", normalization="auto")


@pytest.mark.parametrize("method", NEW_METHODS)
def test_method_trains_on_tiny_images(method):
    from conr.config import load_config
    from conr.engine import Trainer

    cfg = load_config(None, TINY + [f"method={method}"])
    trainer = Trainer(cfg, data=_tiny_data(), write=False, log=lambda *a: None)
    result = trainer.fit()
    assert len(result.history) == 2  # 2 epochs x 2 steps: epoch 2 is stage 2 / after the warm-up
    for rec in result.history:
        assert math.isfinite(rec["loss"])
    assert torch.isfinite(result.features).all()
    if method.endswith("_connr"):
        assert result.history[1]["stage"] == 2 and "batch_kept" in result.history[1]
    if method == "hadis":
        assert result.history[1]["batch_proto"] > 0 and result.history[0]["batch_proto"] == 0


def _ctx(epoch: int, b: int):
    from conr.methods import StepContext

    return StepContext(epoch=epoch, iteration=0, total_iterations=10, indices=torch.arange(b))


@pytest.mark.parametrize("base,variant", [("simsiam", "simsiam_connr"), ("moco", "moco_connr")])
def test_connr_with_k1_equals_baseline(base, variant):
    from conr.config import load_config
    from conr.methods import build_method

    over = TINY + ["stage2.k=1", "stage2.boundary_filter=false"]
    torch.manual_seed(0)
    m_base = build_method(load_config(None, over + [f"method={base}"]), 3)
    torch.manual_seed(0)
    m_var = build_method(load_config(None, over + [f"method={variant}"]), 3)
    g = torch.Generator().manual_seed(1)
    v1, v2 = torch.randn(16, 3, 8, 8, generator=g), torch.randn(16, 3, 8, 8, generator=g)
    loss_base = m_base.training_loss(v1, v2, _ctx(2, 16))
    loss_var = m_var.training_loss(v1, v2, _ctx(2, 16))  # epoch 2 > start_epoch 1: the ConNR* loss
    assert m_var.in_stage2(2)
    assert torch.allclose(loss_base, loss_var, atol=1e-6)


def test_hadis_noise_off_in_warmup_and_sampling_weights():
    from conr.config import load_config
    from conr.methods import build_method

    m = build_method(load_config(None, TINY + ["method=hadis", "hadis.latent_std=10.0", "hadis.proto_weight=0"]), 3)
    g = torch.Generator().manual_seed(2)
    v1, v2 = torch.randn(16, 3, 8, 8, generator=g), torch.randn(16, 3, 8, 8, generator=g)
    torch.manual_seed(0)
    a = m.training_loss(v1, v2, _ctx(1, 16))
    torch.manual_seed(1)
    b = m.training_loss(v1, v2, _ctx(1, 16))
    assert torch.equal(a, b)  # warm-up: no noise, so no dependence on the random stream
    torch.manual_seed(1)
    c = m.training_loss(v1, v2, _ctx(2, 16))
    assert not torch.allclose(a, c)  # after the warm-up the σ = 10 noise changes the loss
    w = m.sampling_weights(2, torch.tensor([0, 0, 0, 1]))
    assert torch.allclose(w / w.sum(), torch.tensor([1 / 6, 1 / 6, 1 / 6, 1 / 2], dtype=w.dtype))


def test_registry_lists_all_methods(capsys):
    from conr.cli import main
    from conr.methods import METHODS

    assert set(NEW_METHODS) | {"byol", "conr"} <= set(METHODS)
    for name in NEW_METHODS:
        assert METHODS[name].description
    for argv in (["methods"], ["train", "--list-methods"]):
        assert main(argv) == 0
        out = capsys.readouterr().out
        for name in NEW_METHODS:
            assert name in out


def test_shipped_method_configs_load():
    from conr.config import load_config, packaged_config_dir

    names = sorted(p.name for p in packaged_config_dir().glob("*.yaml")
                   if p.name.startswith(("hadis_", "simsiam", "moco")))
    assert len(names) >= 14
    for name in names:
        cfg = load_config(Path(packaged_config_dir()) / name)
        assert cfg.method in NEW_METHODS


def test_conr_same_cluster_with_every_sample_alone_is_the_instance_loss():
    """Each sample its own pseudo-cluster: every neighbour is replaced by the sample itself,
    so CoNR's stage-2 loss is BYOL's instance loss (the neighbourhood "self"); with one
    shared pseudo-cluster nothing is replaced and the ConAff loss stands."""
    from conr.config import load_config
    from conr.methods import StepContext, build_method

    over = TINY + ["method=conr", "stage2.boundary_filter=false"]
    g = torch.Generator().manual_seed(1)
    v1, v2 = torch.randn(16, 3, 8, 8, generator=g), torch.randn(16, 3, 8, 8, generator=g)

    def loss(extra, labels):
        torch.manual_seed(0)
        m = build_method(load_config(None, over + extra), 3)
        ctx = StepContext(epoch=2, iteration=0, total_iterations=10, indices=torch.arange(16), pseudo_labels=labels)
        return m.training_loss(v1, v2, ctx), ctx.stats

    alone, shared = torch.arange(16), torch.zeros(16, dtype=torch.long)
    instance, _ = loss(["stage2.neighborhood=self"], None)
    same_alone, stats = loss(["stage2.same_cluster=true"], alone)
    assert torch.allclose(same_alone, instance, atol=1e-6)
    assert float(stats["same_cluster"]) == 0.0
    conaff, _ = loss([], None)
    same_shared, stats = loss(["stage2.same_cluster=true"], shared)
    assert torch.allclose(same_shared, conaff, atol=1e-6)
    assert float(stats["same_cluster"]) == 1.0
    assert not torch.allclose(conaff, instance, atol=1e-4)
