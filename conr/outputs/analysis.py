"""Analyses of a feature space that the paper plots: neighbour purity against the
neighbourhood size for Euclidean and ConAff neighbourhoods, with and without the
boundary filter (paper Figure 2)."""
from __future__ import annotations

import torch
from torch import Tensor

from ..ops.boundary import boundary_ratio, keep_mask
from ..ops.neighbors import conaff_neighbors, euclidean_neighbors

__all__ = ["purity_curve"]


@torch.no_grad()
def purity_curve(feats: Tensor, labels: Tensor, ks, batch_size: int = 512, k1: int = 10, k2: int = 2,
                 modes=("euclidean", "conaff"), centers: Tensor | None = None,
                 pseudo_labels: Tensor | None = None, keep_fraction: float | None = None,
                 keep_rule: str = "code", n_batches: int | None = None, seed: int = 0) -> dict[str, list[float]]:
    """Mean share of an anchor's K-1 nearest other samples that share its true label.

    The dataset is cut into random batches of ``batch_size`` (the neighbourhood is
    searched inside a batch, as in training); for every K in ``ks`` the purity of
    the first K neighbours (self excluded) is pooled over all anchors. When
    ``centers``, ``pseudo_labels`` and ``keep_fraction`` are given, each mode is also
    reported as "<mode>+filter", counting only the anchors the boundary filter keeps.

    Returns {mode: [purity for K in ks]} (fractions).
    """
    feats = torch.nn.functional.normalize(feats.float(), dim=1)
    labels = torch.as_tensor(labels).long().to(feats.device)
    ks = [int(k) for k in ks]
    kmax = max(ks)
    if kmax + 1 > batch_size:
        raise ValueError(f"largest K={kmax} needs a batch larger than {kmax}; raise batch_size={batch_size}")
    n = feats.shape[0]
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=g).to(feats.device)
    n_full = n // batch_size
    if n_batches is not None:
        n_full = min(n_full, n_batches)
    if n_full == 0:
        raise ValueError(f"batch_size={batch_size} exceeds the {n} samples")
    use_filter = centers is not None and pseudo_labels is not None and keep_fraction is not None
    sums = {}
    counts = {}
    for b in range(n_full):
        idx = order[b * batch_size:(b + 1) * batch_size]
        f, y = feats[idx], labels[idx]
        keep = None
        if use_filter:
            ratios = boundary_ratio(f, centers.to(f.device), pseudo_labels.to(f.device)[idx])
            keep = keep_mask(ratios, keep_fraction, keep_rule)
        for mode in modes:
            if mode == "conaff":
                nb = conaff_neighbors(f, kmax + 1, k1, k2)
            elif mode == "euclidean":
                nb = euclidean_neighbors(f, kmax + 1)
            else:
                raise ValueError(f"unknown mode {mode!r}; use euclidean or conaff")
            anchors = torch.arange(nb.shape[0], device=nb.device).unsqueeze(1)
            others = nb != anchors
            # the first K non-self neighbours of every row
            rank = others.long().cumsum(1)
            same = (y[nb] == y.unsqueeze(1)) & others
            variants = [(mode, torch.ones_like(y, dtype=torch.bool))]
            if keep is not None:
                variants.append((f"{mode}+filter", keep))
            for name, rows in variants:
                for j, k in enumerate(ks):
                    sel = (rank <= k) & others & rows.unsqueeze(1)
                    sums.setdefault(name, [0.0] * len(ks))[j] += float((same & sel).sum())
                    counts.setdefault(name, [0.0] * len(ks))[j] += float(sel.sum())
    return {name: [s / c if c else float("nan") for s, c in zip(sums[name], counts[name])] for name in sums}
