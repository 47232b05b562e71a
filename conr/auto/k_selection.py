"""K estimated during a fit (``n_clusters="auto"`` or a range): from the features after
CoNR's stage 1 (BYOL, where K plays no part), or of new images for ``CoNR.cluster``; the
choice and the score of every candidate are recorded in the run folder."""
from __future__ import annotations

import json
from pathlib import Path

from ..cluster.kselect import default_k_range, estimate_k, parse_k
from ..engine.run_folder import write_config
from ..io import atomic_write_text

__all__ = ["K_CRITERION", "K_SELECTION_FILE", "read_k_selection", "estimate_selection", "select_k_after_stage1",
           "k_range", "fixed_k"]

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


def select_k_after_stage1(trainer, k_range: tuple[int, int], log=print) -> dict:
    """Train stage 1 (BYOL; K plays no part in it), estimate K from its features,
    record the choice in the run folder and set it for stage 2."""
    cfg = trainer.cfg
    # methods with a stage 2 (CoNR, the ConNR* variants) estimate K where it starts; the others
    # after training
    start = trainer.method.stage2_start()
    stop = start - 1 if start is not None else cfg.train.epochs
    if trainer.epoch < stop:
        seed_mode, cfg.cluster.stage2_seed = cfg.cluster.stage2_seed, "kmeans"  # no seed with a provisional K
        try:
            trainer.fit(until_epoch=stop)
        finally:
            cfg.cluster.stage2_seed = seed_mode
    lo, hi = k_range
    log(f"estimating K in {lo}..{hi} from the features after epoch {trainer.epoch} ({K_CRITERION})")
    found = estimate_selection(trainer.extract_features().cpu().numpy(), (lo, hi), cfg.train.seed)
    k, table = found["k"], found["table"]
    selection = {"k": k, "criterion": K_CRITERION, "k_range": [lo, hi], "epoch": trainer.epoch, "table": table}
    log(f"K = {k} ({K_CRITERION} {max(r[K_CRITERION] for r in table):.3f})")
    cfg.cluster.n_clusters = int(k)
    trainer.cluster_epoch = -1  # cluster again with the chosen K before stage 2
    trainer.until_epoch = None
    if trainer.write:
        atomic_write_text(Path(trainer.run_dir) / K_SELECTION_FILE, json.dumps(selection, indent=1) + "\n")
        write_config(trainer.run_dir, cfg)
    return selection


def k_range(n_clusters, n_images: int) -> tuple[int, int]:
    """The candidates for K: the range given, or the default for ``n_images`` ("auto"),
    capped below the number of images."""
    k = parse_k(n_clusters)
    lo, hi = default_k_range(n_images) if k == "auto" else k
    return lo, min(hi, max(lo, n_images - 1))


def fixed_k(n_clusters, provisional: bool = False, n_images: int | None = None) -> int | None:
    """The K given (an int), else None; ``provisional``: the K that stage 1 monitors
    with while K is still unknown (10 clamped into the range)."""
    k = parse_k(n_clusters)
    if isinstance(k, int):
        return k
    if not provisional:
        return None
    lo, hi = k_range(n_clusters, n_images) if n_images else ((2, 10**9) if k == "auto" else k)
    return int(min(max(10, lo), hi))
