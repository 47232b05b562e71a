"""The engine's parts seen from outside (conr/engine/): the schedules, the public step the
time budget times, and the one way a saved model is loaded."""
from pathlib import Path

import pytest
import torch

from conr.config import load_config
from conr.engine import CHECKPOINT_NAME, Trainer, lr_at
from conr.engine.schedules import keep_fraction

QUIET = dict(log=lambda *a: None)
TINY = ["model.width=8", "model.hidden_dim=64", "model.proj_dim=32", "train.batch_size=64", "data.subset=256",
        "train.epochs=2", "stage2.start_epoch=1", "stage2.t_end=2", "cluster.eval_every=1", "cluster.n_init=1",
        "run.progress=false", "run.tensorboard=false", "train.warmup_epochs=1", "train.threads=1"]


def test_keep_fraction_on_hand_made_cases():
    from conr.config import Stage2Config

    s2 = Stage2Config(boundary_filter=False, relax=True, fr0=0.8, start_epoch=1, t_end=3)
    assert keep_fraction(s2, 2) == 1.0                      # no filter: every image kept
    s2.boundary_filter, s2.relax = True, False
    assert keep_fraction(s2, 2) == 0.8                      # no relaxation: fr0 throughout
    s2.relax = True                                         # linear from fr0 at t0 to 1 at t_end
    assert keep_fraction(s2, 2) == pytest.approx(0.9) and keep_fraction(s2, 3) == pytest.approx(1.0)


def test_public_step_updates_at_the_scheduled_rate():
    trainer = Trainer(load_config("digits", TINY), write=False, **QUIET)
    before = [p.detach().clone() for p in trainer.method.parameters()]
    idx = torch.arange(64)
    gen = torch.Generator().manual_seed(0)
    loss, ctx = trainer.step(trainer.images[idx], idx, epoch=1, iteration=2, generator=gen)
    assert loss.ndim == 0 and torch.isfinite(loss)
    # warm-up of 1 epoch = 4 iterations (256 / 64): the rate at iteration 2 is 3/4 of the base rate
    base = trainer.cfg.train.lr * 64 / 256
    assert ctx.stats["lr"] == pytest.approx(base * 3 / 4) == pytest.approx(lr_at(2, 8, 4, base))
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.method.parameters()))


def test_measure_costs_times_the_step_and_leaves_no_trace():
    from conr.auto.budget import measure_costs

    trainer = Trainer(load_config("digits", TINY), write=False, **QUIET)
    state = {k: v.clone() for k, v in trainer.method.state_dict().items()}
    costs = measure_costs(trainer, steps=2)
    assert costs.step_seconds > 0 and costs.cluster_seconds > 0 and costs.iters_per_epoch == 4
    after = trainer.method.state_dict()
    assert all(torch.equal(state[k], after[k]) for k in state)
    assert trainer.pseudo_labels is None and trainer.last_features is None and trainer.cluster_epoch == -1


def test_a_saved_model_loads_with_or_without_its_images(tmp_path: Path):
    cfg = load_config("digits", TINY + [f"run.out_dir={tmp_path}", "run.name=r"])
    trained = Trainer(cfg, **QUIET)
    trained.fit()
    run = tmp_path / "r"
    with_data = Trainer.from_checkpoint(run, **QUIET)
    weights_only = Trainer.from_checkpoint(run / CHECKPOINT_NAME, images=False, **QUIET)
    assert len(with_data.data) == 256 and with_data.epoch == 2 and with_data.run_dir == run
    assert weights_only.run_dir == run and weights_only.data.channels == trained.data.channels
    assert torch.equal(with_data.pseudo_labels.cpu(), trained.pseudo_labels.cpu())
    assert weights_only.pseudo_labels is None  # the clustering belongs to the run's images only
    images = trained.data.images[:32]
    expected = trained.extract_features(images)
    assert torch.allclose(with_data.extract_features(images), expected, atol=1e-6)
    assert torch.allclose(weights_only.extract_features(images), expected, atol=1e-6)
