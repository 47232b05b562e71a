"""k-means quality beside scikit-learn: the inertia each reaches, and the time it takes.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python3 benchmarks/kmeans_quality.py [--seeds 5] [--big-seeds 2]

Cases (all rows unit norm, so one objective serves every labelling):
  * ``digits-rp 1797x128``: scikit-learn's digits pixels through a fixed Gaussian random
    projection 64 -> 128 (numpy seed 0), ReLU, L2 normalisation; K = 10.
  * ``blobs50 4312x16``: 50 well-separated Gaussian groups of 5 to 300 samples on the unit
    sphere (tests/test_kmeans.py's hard case; the true partition is the optimum); K = 50.
  * ``synthetic 60000x256``: benchmarks/throughput.py's k-means features (10 noisy
    directions); K = 10.
Each labelling is scored by the cosine inertia, sum of 1 - cos(x, mean of its cluster),
recomputed here in float64 for every method: ``conr`` (kmeans(x, K, n_init=10, seed=s)),
``conr-restarts`` (the same without the relocation search: restarts only) and ``sklearn``
(KMeans(K, n_init=10, random_state=s) on the same unit vectors; its own objective is squared
Euclidean). Prints a table (best, median, worst inertia over the seeds, and the mean seconds)
and writes benchmarks/results/kmeans_quality.json. Times are CPU seconds on this machine with
the thread count it was given; compare rows of one run only.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def digits_rp() -> tuple[np.ndarray, int]:
    from sklearn.datasets import load_digits

    x = load_digits().data @ np.random.default_rng(0).standard_normal((64, 128))
    x = np.maximum(x, 0.0)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), 10


def blobs50() -> tuple[np.ndarray, int]:
    rng = np.random.default_rng(1234)
    sizes = np.exp(rng.uniform(np.log(5), np.log(300), size=50)).astype(int)
    y = np.repeat(np.arange(50), sizes)
    x = rng.standard_normal((50, 16))[y] + 0.1 * rng.standard_normal((y.size, 16))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), 50


def synthetic60k() -> tuple[np.ndarray, int]:
    from benchmarks.throughput import synthetic_features

    x, _ = synthetic_features(60000, 256, 10)
    return x.numpy().astype(np.float32), 10


CASES = {"digits-rp 1797x128": digits_rp, "blobs50 4312x16": blobs50, "synthetic 60000x256": synthetic60k}


def cosine_inertia(x: np.ndarray, labels: np.ndarray) -> float:
    x = x.astype(np.float64)
    total = 0.0
    for c in np.unique(labels):
        m = x[labels == c].mean(0)
        total += float((1.0 - x[labels == c] @ m / np.linalg.norm(m)).sum())
    return total


def run_case(name: str, seeds: int) -> list[dict]:
    from sklearn.cluster import KMeans

    from conr.cluster.kmeans import kmeans

    x, k = CASES[name]()
    xt = torch.from_numpy(x)
    rows = []
    methods = {
        "conr": lambda s: kmeans(xt, k, n_init=10, seed=s).labels.numpy(),
        "conr-restarts": lambda s: kmeans(xt, k, n_init=10, seed=s, relocate=False).labels.numpy(),
        "sklearn": lambda s: KMeans(k, n_init=10, random_state=s).fit(x).labels_,
    }
    for method, fit in methods.items():
        inertias, seconds = [], []
        for s in range(seeds):
            start = time.perf_counter()
            labels = fit(s)
            seconds.append(time.perf_counter() - start)
            inertias.append(cosine_inertia(x, labels))
        rows.append({"case": name, "k": k, "method": method, "seeds": seeds, "inertia": inertias,
                     "best": min(inertias), "median": float(np.median(inertias)), "worst": max(inertias),
                     "mean_seconds": float(np.mean(seconds))})
    best = min(r["best"] for r in rows)
    for r in rows:
        r["seeds_within_0.5pct_of_best"] = sum(v <= best * 1.005 for v in r["inertia"])
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5, help="seeds of the small cases")
    ap.add_argument("--big-seeds", type=int, default=2, help="seeds of the 60000x256 case")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "kmeans_quality.json"))
    args = ap.parse_args(argv)
    rows = []
    for name in CASES:
        rows += run_case(name, args.big_seeds if name.startswith("synthetic") else args.seeds)
    print(f"{'case':22s} {'method':14s} {'best':>10s} {'median':>10s} {'worst':>10s} {'ok/seeds':>9s} {'s/run':>7s}")
    for r in rows:
        print(f"{r['case']:22s} {r['method']:14s} {r['best']:10.3f} {r['median']:10.3f} {r['worst']:10.3f} "
              f"{r['seeds_within_0.5pct_of_best']:>4d}/{r['seeds']:<4d} {r['mean_seconds']:7.2f}")
    meta = {"torch_threads": torch.get_num_threads(), "torch": torch.__version__, "machine": platform.machine(),
            "note": "cosine inertia of each labelling, recomputed in float64; ok = seeds within 0.5 % "
                    "of the case's best inertia"}
    from conr.io import atomic_write_text

    atomic_write_text(Path(args.out), json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
