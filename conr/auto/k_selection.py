"""K estimated during a fit (``n_clusters="auto"`` or a range): from the features after
CoNR's stage 1 (BYOL, where K plays no part), or of new images for ``CoNR.cluster``; the
choice and the score of every candidate are recorded in the run folder."""
from __future__ import annotations

import json
from pathlib import Path

from ..cluster.kselect import estimate_k
from ..engine.run_folder import write_config
from ..io import atomic_write_text

__all__ = ["K_CRITERION", "K_SELECTION_FILE", "read_k_selection", "estimate_selection", "select_k_after_stage1"]

K_CRITERION = "silhouette"          # how n_clusters="auto" picks K (benchmarks/kselect.py measured the others)
K_SELECTION_FILE = "k_selection.json"  # in the run folder: the chosen K and the score of every candidate


def read_k_selection(run_dir) -> dict | None:
    """The K estimate a run recorded (``k_selection.json``), or None."""
    path = Path(run_dir) / K_SELECTION_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def estimate_selection(features, k_range: tuple[int, int], seed: int) -> dict:
    """K in ``k_range`` for ``features`` [N, D] (numpy) by :data:`K_CRITERION`: the record
    ``{"k", "criterion", "k_range", "table"}``."""
    lo, hi = k_range
    k, table = estimate_k(features, (lo, hi), seed=seed, criterion=K_CRITERION)
    return {"k": int(k), "criterion": K_CRITERION, "k_range": [lo, hi], "table": table}


def select_k_after_stage1(trainer, k_range: tuple[int, int], log=print, stage2_for_k=None) -> dict:
    """Train stage 1 (BYOL; K plays no part in it; the trainer was made with
    ``k_provisional=True``, so stage 2 is not seeded with the provisional K), estimate K
    from its features, record the choice in the run folder, and let the trainer go on with
    it (:meth:`~conr.engine.Trainer.set_n_clusters`); ``stage2_for_k(K)``: stage 2's fields
    that follow K (the run record's :meth:`~conr.auto.record.RunRecord.neighbourhood_for`).
    Returns the K record."""
    # methods with a stage 2 (CoNR, the ConNR* variants) estimate K where it starts; the others
    # after training
    start = trainer.method.stage2_start()
    stop = start - 1 if start is not None else trainer.cfg.train.epochs
    if trainer.epoch < stop:
        trainer.fit(until_epoch=stop)
    lo, hi = k_range
    log(f"estimating K in {lo}..{hi} from the features after epoch {trainer.epoch} ({K_CRITERION})")
    found = estimate_selection(trainer.extract_features().cpu().numpy(), (lo, hi), trainer.cfg.train.seed)
    k, table = found["k"], found["table"]
    selection = {"k": k, "criterion": K_CRITERION, "k_range": [lo, hi], "epoch": trainer.epoch, "table": table}
    log(f"K = {k} ({K_CRITERION} {max(r[K_CRITERION] for r in table):.3f})")
    trainer.set_n_clusters(k, stage2_for_k(k) if stage2_for_k is not None else None)
    if trainer.write:
        atomic_write_text(Path(trainer.run_dir) / K_SELECTION_FILE, json.dumps(selection, indent=1) + "\n")
        write_config(trainer.run_dir, trainer.cfg, trainer.notes)
    return selection
