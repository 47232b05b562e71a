"""Spectral clustering of the joint graph: would it cut the features' and the input's graph
together better than UMAP + GMM does, above all where clusters are small?

The joint candidate (``umap_gmm/joint``, conr/cluster/final.py) lays the fuzzy intersection of
the features' and the input's neighbour graphs out with UMAP and fits a Gaussian mixture there.
With 10 members a cluster (ORL's 40 people) a mixture has few points a component, where a graph
cut needs none of that: spectral clustering of the same graph (scikit-learn,
``affinity="precomputed"``) is the obvious other way to read it. This replays both, and the
fuzzy union's graph, on the end features of the whole default runs that
``benchmarks/joint_union.py`` keeps (benchmarks/.cache/joint_union/*.npz), with the features'
own spectral candidate beside them (the best candidate on ORL in the suite's runs). One UMAP
layout, seed 0; the labels are read only to score (ACC).

    python benchmarks/joint_spectral.py        # about a minute on 2 cores

Writes benchmarks/results/joint_spectral.{json,md}. Run it alone.
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
OUT = ROOT / "benchmarks" / "results" / "joint_spectral"
COLUMNS = ("umap_gmm/joint", "spectral/joint", "spectral/union", "spectral/features")


def graph_spectral(graph, n_clusters: int, seed: int = 0) -> np.ndarray:
    """Spectral clustering (scikit-learn) of a symmetric sparse affinity ``graph``: labels [N]."""
    from sklearn.cluster import SpectralClustering

    from conr.cluster.spectral import eigen_solver

    with warnings.catch_warnings():  # a graph in pieces is fine: the pieces are clusters
        warnings.simplefilter("ignore")
        return SpectralClustering(n_clusters, affinity="precomputed", assign_labels="kmeans", random_state=seed,
                                  eigen_solver=eigen_solver(graph.shape[0])).fit_predict(graph)


def replay(path: Path, seed: int = 0) -> dict:
    """ACC of each way of reading the run kept at ``path`` (its end features)."""
    import torch

    from joint_union import view_graphs

    from conr.cluster.final import FinalStage, unit_rows
    from conr.cluster.manifold import intersect_graphs, union_graphs
    from conr.cluster.spectral import spectral_labels
    from conr.ops.metrics import evaluate

    z = np.load(path, allow_pickle=False)
    y, k, inputs = z["truth"], int(z["k"]), z["inputs"]
    feats = unit_rows(z["end"])
    nn, g_feats, g_input = view_graphs(feats, inputs, k, seed)
    labels = {
        "umap_gmm/joint": FinalStage(inputs, k, seed, consensus_runs=1, input_name=str(z["input_name"]))
        .joint_candidate(feats).labels,
        "spectral/joint": graph_spectral(intersect_graphs(g_feats, g_input), k, seed),
        "spectral/union": graph_spectral(union_graphs(g_feats, g_input), k, seed),
        "spectral/features": spectral_labels(feats, k, seed),
    }
    acc = {name: round(float(evaluate(torch.as_tensor(y), torch.as_tensor(lab))["acc"]), 4)
           for name, lab in labels.items()}
    return {"run": path.stem, "n": int(len(y)), "k": k, "members": round(len(y) / k, 1), "neighbors": nn, "acc": acc}


def main() -> int:
    from joint_union import kept_runs, replay_each, write_results

    paths = kept_runs()
    if not paths:
        return 1
    rows = replay_each(paths, replay)
    lines = ["Spectral clustering of the joint graph against the joint candidate (`python benchmarks/joint_spectral.py`): "
             "ACC on the end features of the runs `benchmarks/joint_union.py` keeps, one layout, seed 0.", "",
             "| run | N | members a cluster | " + " | ".join(COLUMNS) + " |", "|---|---|---|" + "---|" * len(COLUMNS)]
    for r in rows:
        best = max(r["acc"].values())
        lines.append(f"| {r['run']} | {r['n']} | {r['members']:g} | " + " | ".join(
            (f"**{r['acc'][c]:.3f}**" if r["acc"][c] == best else f"{r['acc'][c]:.3f}") for c in COLUMNS) + " |")
    lines.append("| mean | | | " + " | ".join(f"{np.mean([r['acc'][c] for r in rows]):.3f}" for c in COLUMNS) + " |")
    write_results(OUT, {"command": "python benchmarks/joint_spectral.py", "runs": rows}, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
