"""Whether mirrored images look like members of the set: the flip rule.

A horizontal flip is a training view only when a mirrored image is still what it
was: true of faces, objects and scenes, false of digits and letters (a mirrored 2
or 7 is no digit). :func:`mirror_overlap` measures it on the pixels, without
labels: for a sample of images, the share of an image's 10 nearest other images
(in the first 50 principal components of the pixels) that are also among the 10
nearest of its mirror. A mirrored face or object lands among the same images as
the original (faces, COIL-20 objects and CIFAR-10 photos: 0.17–0.32); a mirrored
digit lands elsewhere (scikit-learn's digits: 0.04). Random neighbours would share
about 10 / N. ``benchmarks/results/mirror.json`` holds the measurements.
"""
from __future__ import annotations

import warnings

import numpy as np

__all__ = ["mirror_overlap", "flips_allowed", "MIRROR_OVERLAP_MIN", "NEIGHBORS"]

MIRROR_OVERLAP_MIN = 0.1  # flips allowed when a mirror shares at least this share of the original's neighbours
NEIGHBORS = 10
SAMPLE = 1000


def _rows(images: np.ndarray) -> np.ndarray:
    x = images.reshape(len(images), -1).astype(np.float32)
    return x / 255.0 if x.max() > 1.0 else x


def mirror_overlap(images, seed: int = 0, sample: int = SAMPLE, k: int = NEIGHBORS) -> float:
    """Mean over up to ``sample`` images of |N_k(image) ∩ N_k(mirror)| / k, where N_k
    are the k nearest *other* images of the set in its pixels' PCA space (50
    components). ``images``: uint8 or float [N, C, H, W] (or [N, H, W])."""
    from sklearn.decomposition import PCA
    from sklearn.neighbors import NearestNeighbors

    images = np.asarray(images)
    n = len(images)
    k = int(min(k, n - 2))
    if k < 1:
        return 1.0
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(n, size=min(n, sample), replace=False))
    ref = _rows(images)
    mirrored = _rows(np.ascontiguousarray(images[pick][..., ::-1]))
    dims = int(min(50, ref.shape[1], n - 1))
    with warnings.catch_warnings():  # identical images: PCA's explained-variance ratio divides by 0
        warnings.simplefilter("ignore", RuntimeWarning)
        pca = PCA(dims, random_state=seed).fit(ref)
    nn = NearestNeighbors(n_neighbors=k + 1).fit(pca.transform(ref))
    _, near_orig = nn.kneighbors(pca.transform(ref[pick]))
    _, near_mirr = nn.kneighbors(pca.transform(mirrored))
    shares = []
    for i, a, b in zip(pick, near_orig, near_mirr):
        a = [j for j in a if j != i][:k]
        b = [j for j in b if j != i][:k]
        shares.append(len(set(a) & set(b)) / k)
    return float(np.mean(shares))


def flips_allowed(images, seed: int = 0) -> tuple[bool, float]:
    """(mirrored images look like members of the set, the measured overlap)."""
    share = mirror_overlap(images, seed)
    return share >= MIRROR_OVERLAP_MIN, share
