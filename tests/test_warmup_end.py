"""stage2.warmup_end=signal (conr/engine/warmup_end.py): the rule on hand-made sequences, the
signal against scikit-learn's silhouette, and a trainer whose warm-up the signal ends
(stage 2 moved, seeded at once, kept by a resume)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs
from sklearn.metrics import silhouette_score

from conr.engine import warmup_end
from conr.engine.warmup_end import away_value, move_stage2, should_end


@pytest.mark.parametrize("values, ends", [
    ([0.75], False),                       # one value: nothing to fall from
    ([0.40, 0.75, 0.66], False),           # 0.88 of the best: a wobble
    ([0.40, 0.75, 0.376], False),          # just above half the best
    ([0.40, 0.75, 0.30], True),            # below half: COIL-20 at epoch 128
    ([0.22, 0.30, 0.232], False),          # photos: 0.77 of the best
    ([-0.38, -0.31, -0.45], False),        # the best is not above 0: no layout to fall away from
    ([-0.3, 0.2, 0.09], True),             # the best is the positive one
    ([0.05, 0.0], True),
])
def test_the_rule_on_hand_made_sequences(values, ends):
    assert should_end(values) is ends


def test_away_value_is_sklearns_silhouette_on_the_rows():
    x, y = make_blobs(n_samples=300, centers=4, n_features=5, random_state=0)
    assert away_value(x, y) == pytest.approx(silhouette_score(x, y))
    assert away_value(x, np.zeros(300, dtype=int)) == 0.0    # one cluster: no silhouette


def test_away_value_samples_the_same_rows_every_step(monkeypatch):
    from conr.cluster import final

    x, y = make_blobs(n_samples=400, centers=4, n_features=5, random_state=1)
    monkeypatch.setattr(final, "SILHOUETTE_SAMPLES", 120)
    a, b = away_value(x, y, seed=3), away_value(x, y, seed=3)
    assert a == b == pytest.approx(silhouette_score(x, y, sample_size=120, random_state=3))


def _trainer(tmp_path=None, epochs=12):
    """A small CoNR run on vectors with the vector path's settings (stage 2 after epoch 7)
    and its final stage prepared (the input's layout)."""
    from conr.auto.resolve import vector_settings
    from conr.cluster.stage import build_final_stage
    from conr.data.vectors import VectorData
    from conr.engine.vectors import VectorTrainer

    x, y = make_blobs(n_samples=120, centers=3, n_features=8, random_state=0)
    data = VectorData(images=torch.from_numpy(x.astype(np.float32)), labels=torch.as_tensor(y))
    user = {"method": "conr", "train": {"epochs": epochs, "seed": 0, "device": "cpu", "batch_size": 32},
            "cluster": {"n_clusters": 3, "consensus_runs": 1}, "run": {"progress": False}}
    cfg, _, _ = vector_settings(user, len(data), k=3)
    assert cfg.stage2.warmup_end == "signal" and cfg.stage2.start_epoch == 7
    stage = build_final_stage(data, cfg.cluster, 0)
    stage.prepare()
    return VectorTrainer(cfg, data, final_stage=stage, run_dir=tmp_path, write=tmp_path is not None,
                         log=lambda *a: None)


def test_move_stage2_moves_the_start_and_the_relaxation():
    trainer = _trainer()
    s = trainer.cfg.stage2
    length = s.t_end - s.start_epoch
    move_stage2(trainer, 3)
    assert trainer.cfg.stage2.start_epoch == 3 and trainer.cfg.stage2.t_end == 3 + length
    assert trainer.method.in_stage2(4) and not trainer.method.in_stage2(3)


@pytest.mark.slow  # trains a few epochs and makes the stage-2 seed's candidates
def test_a_falling_signal_starts_stage_2_seeded_and_a_resume_keeps_it(tmp_path, monkeypatch):
    """The signal measured at the stage-1 steps falls below half its best at the second
    check (the values are set by hand, the rest is the trainer's own): stage 2 starts after
    that epoch, seeded by the final stage at once, and a run resumed from its checkpoint
    keeps the moved start."""
    from conr.engine import checkpoint
    from conr.engine.vectors import VectorTrainer

    values = iter([0.6, 0.2, 0.5, 0.5, 0.5, 0.5])
    monkeypatch.setattr(warmup_end, "away_value", lambda *a, **k: next(values))
    trainer = _trainer(tmp_path / "run")
    every = trainer.cfg.cluster.eval_every
    trainer.fit(until_epoch=2 * every)
    assert trainer.warmup_ended == 2 * every and trainer.warmup_values == [0.6, 0.2]
    assert trainer.cfg.stage2.start_epoch == 2 * every and trainer.method.in_stage2(2 * every + 1)
    record = trainer.history[-1]
    assert record["warmup_ended"] is True and record["warmup_away"] == 0.2 and "stage2_seed" in record
    assert trainer.stage2_seeded and trainer.seed_candidates

    again = _trainer(tmp_path / "other")
    checkpoint.restore(again, checkpoint.load_checkpoint(tmp_path / "run" / "checkpoint.pt"), full=True)
    assert again.warmup_ended == 2 * every and again.cfg.stage2.start_epoch == 2 * every
    assert isinstance(again, VectorTrainer) and again.method.in_stage2(2 * every + 1)
