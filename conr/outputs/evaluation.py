"""Evaluation of a saved run (``conr eval``) and the neighbour-purity analysis of
paper Figure 2 (``conr purity``), both on the target features of a checkpoint.

The scores follow the paper's protocol (spec 3): target features of the whole
clustered set under the test transform, L2-normalised, k-means with the run's
cluster settings and seed, NMI / ACC / ARI against the ground truth. Added: the
weighted kNN monitor of the reference code (k = 20, votes exp(sim / 0.07),
leave-one-out on the clustered set), neighbour purity for several K inside
training-size batches (Euclidean and ConAff, with and without the boundary filter)
and the confusion matrix after the best cluster-to-class map.
"""
from __future__ import annotations

import csv
import time
from pathlib import Path

import torch

from ..ops.metrics import best_cluster_map, confusion, evaluate, knn_accuracy
from .analysis import purity_curve

__all__ = ["evaluate_checkpoint", "checkpoint_purity", "write_purity", "plot_purity", "DEFAULT_PURITY_KS"]

DEFAULT_PURITY_KS = (1, 5, 10, 20, 50, 100)


def _purity_settings(trainer, ks, batch_size, k1, k2, keep_fraction):
    s = trainer.cfg.stage2
    n = len(trainer.data)
    bs = int(batch_size or min(trainer.cfg.train.batch_size, n))
    bs = min(bs, n)
    ks = [int(k) for k in (ks or DEFAULT_PURITY_KS) if 1 <= int(k) < bs]
    if not ks:
        raise ValueError(f"no purity K fits a batch of {bs}; give smaller K")
    return (ks, bs, s.k1 if k1 is None else int(k1), s.k2 if k2 is None else int(k2),
            s.fr0 if keep_fraction is None else float(keep_fraction))


def checkpoint_purity(trainer, ks=None, batch_size: int | None = None, k1: int | None = None,
                      k2: int | None = None, keep_fraction: float | None = None, n_batches: int | None = None,
                      with_filter: bool = True, seed: int | None = None) -> dict:
    """Neighbour purity against K of a trainer's current features (Figure 2).

    Neighbourhoods are searched inside random batches of the run's training batch size
    (as in training); k1/k2 default to the run's stage-2 values. With ``with_filter``
    the features are clustered (the run's k-means) and each mode is also scored over the
    anchors the boundary filter keeps at ``keep_fraction`` (default: the run's fr0).
    Returns {"ks", "batch_size", "k1", "k2", "keep_fraction", "curves": {mode: [...]},
    "clustering": {nmi, acc, ari, ...}}."""
    if not trainer.data.has_labels:
        raise ValueError("neighbour purity needs ground-truth labels; this data has none")
    ks, bs, k1, k2, fr = _purity_settings(trainer, ks, batch_size, k1, k2, keep_fraction)
    record = trainer.cluster_step()  # features + k-means: the pseudo-labels and centres of the filter
    feats = trainer.last_features
    extra = {}
    if with_filter:
        extra = dict(centers=trainer.centers, pseudo_labels=trainer.pseudo_labels, keep_fraction=fr,
                     keep_rule=trainer.cfg.stage2.keep_rule)
    curves = purity_curve(feats, trainer.data.labels.to(feats.device), ks, batch_size=bs, k1=k1, k2=k2,
                          n_batches=n_batches, seed=trainer.cfg.train.seed if seed is None else seed, **extra)
    return {"ks": ks, "batch_size": bs, "k1": k1, "k2": k2, "keep_fraction": fr if with_filter else None,
            "curves": curves, "clustering": {k: record[k] for k in ("nmi", "acc", "ari") if k in record}}


def write_purity(result: dict, path: str | Path, name: str | None = None) -> Path:
    """One CSV row per K: K, then one column per mode (fractions); ``name`` adds a first column."""
    from ..io import atomic_write_text
    import io

    modes = list(result["curves"])
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow((["row"] if name is not None else []) + ["K"] + modes)
    for j, k in enumerate(result["ks"]):
        w.writerow(([name] if name is not None else []) + [k] + [f"{result['curves'][m][j]:.6f}" for m in modes])
    return atomic_write_text(path, buf.getvalue())


def plot_purity(results: dict[str, dict], path: str | Path, title: str = "neighbour purity") -> Path:
    """Purity against K: one line per (source, mode); filtered modes dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for src, res in results.items():
        for mode, ys in res["curves"].items():
            label = mode if len(results) == 1 else f"{src}: {mode}"
            ax.plot(res["ks"], [100 * y for y in ys], marker="o", ms=3,
                    linestyle="--" if mode.endswith("+filter") else "-", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("neighbourhood size K (self excluded)")
    ax.set_ylabel("neighbour purity (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


@torch.no_grad()
def evaluate_checkpoint(trainer, knn_k: int = 20, knn_temperature: float = 0.07, purity_ks=None,
                        purity_batches: int | None = None) -> tuple[dict, torch.Tensor]:
    """The report of ``conr eval`` for a trainer built with Trainer.from_checkpoint, and
    the labels it scored: the run's partition (what its report and ``conr predict`` carry),
    or k-means of the checkpoint's features when the checkpoint holds none (an epoch file). Keys: checkpoint, method, epoch, data, n_images,
    n_clusters, nmi, acc, ari, knn_acc, knn, purity, confusion (rows: true classes in the
    order of ``classes``; column j: the cluster ``confusion_clusters[j]`` mapped to class j,
    of size ``confusion_cluster_sizes[j]``), classes, cluster_sizes (by cluster id),
    seconds (scores absent when the data has no labels)."""
    start = time.perf_counter()
    cfg = trainer.cfg
    record = trainer.cluster_step()
    feats = trainer.last_features
    partition = trainer.run_partition()  # the run's own labels (its final stage), as the report shows them
    pred = partition.labels if partition is not None else trainer.pseudo_labels.cpu()
    K = cfg.cluster.n_clusters
    report = {
        "checkpoint": str(trainer.run_dir) if trainer.run_dir is not None else None,
        "method": cfg.method, "epoch": trainer.epoch,
        "data": {"name": cfg.data.name, "root": cfg.data.root, "split": cfg.data.split,
                 "subset": cfg.data.subset, "image_size": cfg.data.image_size},
        "n_images": len(trainer.data), "n_clusters": K,
        "kmeans": {"metric": cfg.cluster.metric, "n_init": cfg.cluster.n_init, "seed": cfg.train.seed,
                   "iters": record.get("kmeans_iters")},
        "cluster_sizes": torch.bincount(pred, minlength=K).tolist(),
        "labels_from": partition.source if partition is not None else "kmeans (of the checkpoint's features)",
    }
    if trainer.data.n_labelled and not trainer.data.has_labels:
        # some images unlabelled (STL-10 with its 100k): NMI / ACC / ARI and the confusion matrix over
        # the labelled ones ("scored" of them); kNN and purity need every label and are left out
        known = trainer.data.labels >= 0
        y = trainer.data.labels[known]
        report.update(evaluate(trainer.data.labels, pred), scored=trainer.data.n_labelled)
        report["confusion"] = confusion(y, pred[known]).tolist()
        present = sorted(set(y.tolist()))
        names = list(trainer.data.classes)
        report["classes"] = [names[c] if 0 <= c < len(names) else str(c) for c in present]
    if trainer.data.has_labels:
        y = trainer.data.labels
        report.update(evaluate(y, pred), scored=len(y))
        report["knn_acc"] = knn_accuracy(feats, y.to(feats.device), feats, y.to(feats.device), k=knn_k,
                                         temperature=knn_temperature, exclude_self=True)
        report["knn"] = {"k": knn_k, "temperature": knn_temperature, "weighted": True, "leave_one_out": True}
        ks, bs, k1, k2, fr = _purity_settings(trainer, purity_ks, None, None, None, None)
        curves = purity_curve(feats, y.to(feats.device), ks, batch_size=bs, k1=k1, k2=k2,
                              n_batches=purity_batches, seed=cfg.train.seed, centers=trainer.centers,
                              pseudo_labels=trainer.pseudo_labels, keep_fraction=fr,
                              keep_rule=cfg.stage2.keep_rule)
        report["purity"] = {"ks": ks, "batch_size": bs, "k1": k1, "k2": k2, "keep_fraction": fr, **curves}
        report["confusion"] = confusion(y, pred).tolist()
        present = sorted(set(y.tolist()))  # the confusion matrix's row / column order
        names = list(trainer.data.classes)
        report["classes"] = [names[c] if 0 <= c < len(names) else str(c) for c in present]
        # the column j of the confusion matrix is the cluster mapped to class j (None: no cluster was)
        by_class = {cls: clu for clu, cls in best_cluster_map(y, pred).items()}
        report["confusion_clusters"] = [by_class.get(c) for c in present]
        sizes = report["cluster_sizes"]
        report["confusion_cluster_sizes"] = [sizes[c] if c is not None else 0 for c in report["confusion_clusters"]]
    report["seconds"] = time.perf_counter() - start
    return report, pred
