"""Faithfulness to the runs behind the published numbers (issue 12): the LR schedule,
k-means restarts, HaDis blur, per-GPU BatchNorm groups, config provenance and
``conr train --print-config``. References are written here by hand from spec 2-7."""
from __future__ import annotations

import math

import pytest
import torch

from conr.config import ConfigError, load_config
from conr.train import lr_at

# ----------------------------------------------------------------------------- LR schedule

T, W, BASE = 1000, 50, 0.1


def official_lr(epoch: int, step: int, iters: int) -> float:
    """The official code's LR at step ``step`` (0-based) of the 1-based ``epoch``: n_iter
    counts from 1, e = n_iter / iters_per_epoch; linear warm-up base·e/W, then
    0.5·base·(1 + cos(π·(e − W)/T))."""
    n_iter = (epoch - 1) * iters + step + 1
    e = n_iter / iters
    if e < W:
        return BASE * e / W
    return 0.5 * BASE * (1 + math.cos(math.pi * (e - W) / T))


def to_zero_lr(epoch: int, iters: int) -> float:
    """First step of ``epoch`` under a cosine that reaches 0 at T, after the warm-up."""
    done = (epoch - 1) * iters
    return 0.5 * BASE * (1 + math.cos(math.pi * (done - W * iters) / ((T - W) * iters)))


@pytest.mark.parametrize("iters", [1, 7, 97])
@pytest.mark.parametrize("epoch", [1, 50, 801, 1000])
def test_lr_follows_the_official_cosine(epoch, iters):
    total, warm = T * iters, W * iters
    for step in (0, iters // 2, iters - 1):
        it = (epoch - 1) * iters + step
        assert lr_at(it, total, warm, BASE) == pytest.approx(official_lr(epoch, step, iters), rel=1e-12, abs=1e-15)
        assert lr_at(it, total, warm, BASE, "official_cosine") == lr_at(it, total, warm, BASE)


def test_official_cosine_figures_of_the_spec():
    iters = 97
    total, warm = T * iters, W * iters
    first = lambda e: (e - 1) * iters  # noqa: E731
    # spec 2: never 0, 0.00064 at epoch 1000; the warm-up ends at the full base LR
    assert lr_at(first(1000), total, warm, BASE) == pytest.approx(0.00064, abs=5e-6)
    assert lr_at(total - 1, total, warm, BASE) > 5e-4
    assert lr_at(warm - 1, total, warm, BASE) == pytest.approx(BASE)
    assert lr_at(0, total, warm, BASE) == pytest.approx(BASE / warm)
    # issue 12: cosine-to-0 is 0.72, 0.50, 0.28 x the official LR at epochs 801, 901, 951
    for epoch, ratio in ((801, 0.72), (901, 0.50), (951, 0.28)):
        zero = lr_at(first(epoch), total, warm, BASE, "cosine_to_zero")
        assert zero == pytest.approx(to_zero_lr(epoch, iters), rel=1e-9)
        assert zero / lr_at(first(epoch), total, warm, BASE) == pytest.approx(ratio, abs=0.01)
    assert lr_at(total - 1, total, warm, BASE, "cosine_to_zero") < 1e-8


def test_lr_schedule_config_key():
    assert load_config(None).train.lr_schedule == "official_cosine"
    assert load_config("cifar10").train.lr_schedule == "official_cosine"
    with pytest.raises(ConfigError, match="train.lr_schedule"):
        load_config(None, ["train.lr_schedule=cosine"])
    with pytest.raises(ValueError, match="train.lr_schedule"):
        lr_at(100, 10, 1, 0.1, "linear")


@pytest.mark.parametrize("schedule", ["official_cosine", "cosine_to_zero"])
def test_trainer_steps_the_configured_schedule(schedule):
    from conr.train import Trainer

    cfg = load_config("digits", ["model.width=4", "model.hidden_dim=32", "model.proj_dim=16", "data.subset=256",
                                 "train.batch_size=64", "train.epochs=3", "train.warmup_epochs=1",
                                 "method=byol", "cluster.n_init=1",
                                 "cluster.eval_every=10", "run.progress=false", "run.tensorboard=false",
                                 f"train.lr_schedule={schedule}", "train.lr=0.2"])
    trainer = Trainer(cfg, write=False, log=lambda *a: None)
    seen = []
    orig = trainer.optimizer.step

    def step(*a, **k):
        seen.append(trainer.optimizer.param_groups[0]["lr"])
        return orig(*a, **k)

    trainer.optimizer.step = step
    trainer.fit(until_epoch=2)
    iters, base = 4, 0.2 * 64 / 256
    mult = trainer.method.lr_multipliers(1)[trainer.optimizer.param_groups[0]["name"]]
    for it, lr in enumerate(seen):
        e = (it + 1) / iters
        if e < 1 or (schedule == "cosine_to_zero" and it < iters):
            want = base * e
        elif schedule == "official_cosine":
            want = 0.5 * base * (1 + math.cos(math.pi * (e - 1) / 3))
        else:
            want = 0.5 * base * (1 + math.cos(math.pi * (it - iters) / (2 * iters)))
        assert lr == pytest.approx(want * mult, rel=1e-9), it
