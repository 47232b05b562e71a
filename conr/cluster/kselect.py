"""Choosing the number of clusters K without labels.

:func:`estimate_k` scores every K of a range on a feature matrix and returns the
best one with the whole table (for the report's plot). Three criteria, all pure
functions of the features (plain numpy / scikit-learn / scipy):

* ``"silhouette"`` (default): k-means (k-means++ seeds, a few restarts) on the
  L2-normalised features for every K, then the mean silhouette with cosine
  distances on a seeded subsample; the K of the largest mean silhouette wins.
  Chosen by measurement (benchmarks/kselect.py, docs/k-selection.md).
* ``"eigengap"``: the spectrum of the normalised Laplacian of the symmetric
  k-nearest-neighbour graph; the K after which the gap lambda_{K+1} - lambda_K is
  largest wins (K connected groups give K eigenvalues near 0).
* ``"stability"``: k-means on pairs of overlapping random subsamples (80 % each);
  the mean adjusted Rand index of the two partitions on their common samples; the
  most stable K wins (ties: the larger K).

Features are L2-normalised first (the learned features are compared by cosine).
"""
from __future__ import annotations

import warnings

import numpy as np

__all__ = ["estimate_k", "parse_k", "default_k_range", "k_scores", "CRITERIA"]

CRITERIA = ("silhouette", "eigengap", "stability")
MAX_SAMPLES = 3000  # subsample for the scores (the k-means of a K use up to 4x as many)


def parse_k(text) -> int | str | tuple[int, int]:
    """``--k`` / ``n_clusters`` as given: an int >= 2, ``"auto"`` (None too) or a range
    ``"A..B"`` / ``(A, B)`` (inclusive, 2 <= A <= B). Raises ValueError naming the form."""
    if text is None or (isinstance(text, str) and text.strip().lower() == "auto"):
        return "auto"
    if isinstance(text, (tuple, list, range)):
        vals = list(text)
        if len(vals) < 2 or not all(isinstance(v, (int, np.integer)) for v in vals):
            raise ValueError(f"K range {text!r}: give two integers (lowest, highest)")
        lo, hi = int(min(vals)), int(max(vals))
    elif isinstance(text, (int, np.integer)) and not isinstance(text, bool):
        if text < 2:
            raise ValueError(f"K={text}: clustering needs K >= 2")
        return int(text)
    else:
        s = str(text).strip()
        if s.isdigit():
            return parse_k(int(s))
        parts = s.split("..")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"K {text!r}: give a number (8), 'auto', or a range of candidates like 5..30")
        lo, hi = int(parts[0]), int(parts[1])
    if lo < 2 or hi < lo:
        raise ValueError(f"K range {lo}..{hi}: needs 2 <= lowest <= highest")
    return lo, hi


def default_k_range(n_samples: int) -> tuple[int, int]:
    """2 .. min(50, N / 5): at least about five images per cluster."""
    return 2, int(max(2, min(50, n_samples // 5)))


def _normalise(features) -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be a 2-D array [N, D]; got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or inf")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _kmeans_labels(x: np.ndarray, k: int, seed: int, n_init: int = 3) -> np.ndarray:
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(x)


def _silhouette(x: np.ndarray, ks: list[int], seed: int) -> list[float]:
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(seed)
    fit_idx = rng.permutation(len(x))[:4 * MAX_SAMPLES]
    score_idx = fit_idx[:MAX_SAMPLES]
    xs = x[fit_idx]
    dist = 1.0 - np.clip(x[score_idx] @ x[score_idx].T, -1.0, 1.0)
    np.fill_diagonal(dist, 0.0)
    out = []
    for k in ks:
        labels = _kmeans_labels(xs, k, seed)[:len(score_idx)]
        if len(np.unique(labels)) < 2:
            out.append(-1.0)
            continue
        out.append(float(silhouette_score(dist, labels, metric="precomputed")))
    return out


def _eigengap(x: np.ndarray, ks: list[int], seed: int, n_neighbors: int = 10) -> list[float]:
    from scipy.linalg import eigh
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(seed)
    xs = x[rng.permutation(len(x))[:MAX_SAMPLES]]
    n = len(xs)
    nn = min(n_neighbors, n - 1)
    idx = NearestNeighbors(n_neighbors=nn + 1).fit(xs).kneighbors(xs, return_distance=False)[:, 1:]
    a = np.zeros((n, n))
    a[np.repeat(np.arange(n), nn), idx.ravel()] = 1.0
    a = np.maximum(a, a.T)
    d = a.sum(1)
    inv = 1.0 / np.sqrt(np.maximum(d, 1e-12))
    lap = np.eye(n) - inv[:, None] * a * inv[None, :]
    top = min(n - 1, max(ks) + 1)
    vals = eigh(lap, eigvals_only=True, subset_by_index=[0, top])
    # gap after the K-th smallest eigenvalue: lambda_{K+1} - lambda_K (1-based)
    return [float(vals[k] - vals[k - 1]) if k < len(vals) else float("nan") for k in ks]


def _stability(x: np.ndarray, ks: list[int], seed: int, n_pairs: int = 4, frac: float = 0.8) -> list[float]:
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(seed)
    base = rng.permutation(len(x))[:MAX_SAMPLES]
    m = int(frac * len(base))
    pairs = [(np.sort(rng.choice(base, m, replace=False)), np.sort(rng.choice(base, m, replace=False)))
             for _ in range(n_pairs)]
    out = []
    for k in ks:
        scores = []
        for p, (a, b) in enumerate(pairs):
            la = dict(zip(a.tolist(), _kmeans_labels(x[a], k, seed + 2 * p, n_init=1)))
            lb = dict(zip(b.tolist(), _kmeans_labels(x[b], k, seed + 2 * p + 1, n_init=1)))
            common = sorted(set(la) & set(lb))
            scores.append(adjusted_rand_score([la[i] for i in common], [lb[i] for i in common]))
        out.append(float(np.mean(scores)))
    return out


_SCORERS = {"silhouette": _silhouette, "eigengap": _eigengap, "stability": _stability}


def _check_range(k_range, n: int) -> list[int]:
    lo, hi = parse_k(tuple(k_range)) if not isinstance(k_range, str) else parse_k(k_range)
    hi = min(hi, n - 1)
    if hi < lo:
        raise ValueError(f"K range {lo}..{hi}: too few samples ({n}) for the lowest K")
    return list(range(lo, hi + 1))


def k_scores(features, k_range, seed: int = 0, criteria=CRITERIA) -> list[dict]:
    """One row per K of ``k_range`` (inclusive (lo, hi) or "lo..hi"): {"k", <criterion>: score}."""
    from threadpoolctl import threadpool_limits

    x = _normalise(features)
    ks = _check_range(k_range, len(x))
    rows = [{"k": k} for k in ks]
    for name in criteria:
        if name not in _SCORERS:
            raise ValueError(f"unknown K criterion {name!r}; choose one of {CRITERIA}")
        # one BLAS / OpenMP thread: many small k-means runs are 30x faster so on busy cores;
        # a K above the number of distinct points only warns in k-means, and scores low
        with threadpool_limits(1), warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            scores = _SCORERS[name](x, ks, seed)
        for row, v in zip(rows, scores):
            row[name] = v
    return rows


def best_k(table: list[dict], criterion: str) -> int:
    """The K of the highest score (ties: the larger K; NaN never wins)."""
    best, best_v = None, -np.inf
    for row in table:
        v = row[criterion]
        if np.isfinite(v) and v >= best_v:
            best, best_v = row["k"], v
    if best is None:
        raise ValueError(f"no finite {criterion} score in the table")
    return int(best)


def estimate_k(features, k_range=None, seed: int = 0, criterion: str = "silhouette") -> tuple[int, list[dict]]:
    """The number of clusters in ``features`` [N, D] by ``criterion`` over ``k_range``
    (inclusive (lo, hi) or "lo..hi"; default :func:`default_k_range`).
    Returns (K, table): the table has one row per candidate K, {"k", criterion: score}."""
    if criterion not in CRITERIA:
        raise ValueError(f"unknown K criterion {criterion!r}; choose one of {CRITERIA}")
    n = len(features)
    table = k_scores(features, k_range or default_k_range(n), seed, (criterion,))
    return best_k(table, criterion), table
