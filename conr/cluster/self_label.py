"""The self-labelling stage: a cluster head trained on each cluster's most confident
members, under the training views, then every image relabelled by it.

The seed partition's confident members are mostly right; a classifier trained on
them under strong augmentation learns what those members share and so also labels
the uncertain rest, often better than the partition it started from (SCAN's and
SPICE's last step). It starts from a copy of the trained network (the features the
clusters were found in) with a new linear head; the trained network itself is left
as it is. Whether its partition is kept is decided by the final stage's rule, like
every other candidate: a seed that merges classes teaches the head the merge, and
the rule then keeps the seed.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["confident_members", "margin_confidence", "self_label", "KEEP_SHARE"]

KEEP_SHARE = 0.5  # the most confident half of each cluster trains the head


def margin_confidence(x: np.ndarray, labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """1 − d_own / d_next of every row to the cluster means of ``labels`` (Euclidean):
    1 at the own centre, 0 on the boundary to the next cluster."""
    x = np.asarray(x, dtype=np.float32)
    centers = np.zeros((n_clusters, x.shape[1]), dtype=np.float32)
    np.add.at(centers, labels, x)
    centers /= np.maximum(np.bincount(labels, minlength=n_clusters), 1)[:, None]
    d = ((x[:, None, :] - centers[None]) ** 2).sum(-1) if len(x) * n_clusters < 4_000_000 else \
        np.stack([((x - c) ** 2).sum(1) for c in centers], 1)
    d = np.sqrt(np.maximum(d, 0))
    own = d[np.arange(len(x)), labels]
    d[np.arange(len(x)), labels] = np.inf
    nxt = d.min(1)
    return np.clip(1.0 - own / np.maximum(nxt, 1e-12), 0.0, 1.0).astype(np.float32)


def confident_members(labels: np.ndarray, confidence: np.ndarray, share: float = KEEP_SHARE,
                      at_least: int = 2) -> np.ndarray:
    """Indices of the ``share`` most confident members of every cluster (at least
    ``at_least``, or all of a smaller cluster)."""
    labels = np.asarray(labels)
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        m = min(len(idx), max(at_least, int(math.ceil(share * len(idx)))))
        keep.append(idx[np.argsort(-confidence[idx], kind="stable")[:m]])
    return np.sort(np.concatenate(keep))


class _Head(nn.Module):
    def __init__(self, net: nn.Module, dim: int, n_clusters: int):
        super().__init__()
        self.net, self.head = net, nn.Linear(dim, n_clusters)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(F.normalize(self.net(x).float(), dim=1))


def self_label(feature_net: nn.Module, images: Tensor, labels: np.ndarray, confidence: np.ndarray,
               n_clusters: int, augment, to_input, *, epochs: int, batch_size: int, lr: float = 0.05,
               seed: int = 0, device: torch.device | str = "cpu", flip_average: bool = False,
               share: float = KEEP_SHARE, channels_last: bool = False, backbone_lr_factor: float = 0.2,
               log=None) -> tuple[np.ndarray, np.ndarray]:
    """Train ``copy(feature_net)`` + a linear head on the confident members of
    ``labels`` and relabel every image.

    ``images``: the uint8 images [N, C, H, W] (on ``device``); ``augment(x, generator)``:
    the training views; ``to_input(x)``: the evaluation transform (resize + normalise).
    Returns (labels [N], the head's probability of the own label [N])."""
    device = torch.device(device)
    train_idx = torch.as_tensor(confident_members(labels, confidence, share), device=device)
    targets = torch.as_tensor(np.asarray(labels), dtype=torch.long, device=device)
    net = copy.deepcopy(feature_net).to(device)
    for p in net.parameters():
        p.requires_grad_(True)
    with torch.no_grad():
        net.eval()
        dim = net(to_input(images[:2])).shape[1]
    model = _Head(net, dim, n_clusters).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    b = int(min(batch_size, len(train_idx)))
    steps_per_epoch = max(1, len(train_idx) // b)
    total = max(1, epochs * steps_per_epoch)
    opt = torch.optim.SGD([{"params": net.parameters(), "lr": lr * backbone_lr_factor},
                           {"params": model.head.parameters(), "lr": lr}],
                          momentum=0.9, weight_decay=5e-4)
    base = [g["lr"] for g in opt.param_groups]
    gen = torch.Generator().manual_seed(seed * 7919 + 11)
    aug_gen = torch.Generator(device=device).manual_seed(seed * 7919 + 13)
    step = 0
    model.train()
    for epoch in range(epochs):
        order = train_idx[torch.randperm(len(train_idx), generator=gen).to(device)]
        loss_sum = 0.0
        for i in range(steps_per_epoch):
            idx = order[i * b:(i + 1) * b]
            x = augment(images[idx], aug_gen)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            for g, lr0 in zip(opt.param_groups, base):
                g["lr"] = lr0 * 0.5 * (1 + math.cos(math.pi * step / total))
            loss = F.cross_entropy(model(x), targets[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach())
            step += 1
        if not math.isfinite(loss_sum):
            raise FloatingPointError("the self-labelling loss became NaN/inf; its partition is not used")
        if log is not None and (epoch + 1 == epochs or (epoch + 1) % max(1, epochs // 4) == 0):
            log(f"self-labelling epoch {epoch + 1}/{epochs}: loss {loss_sum / steps_per_epoch:.4f} "
                f"on {len(train_idx)} confident images")
    model.eval()
    probs = []
    with torch.no_grad():
        for chunk in images.split(512):
            x = to_input(chunk)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            p = model(x).softmax(1)
            if flip_average:
                p = 0.5 * (p + model(torch.flip(x, dims=[3])).softmax(1))
            probs.append(p.float().cpu())
    p = torch.cat(probs)
    conf, new = p.max(1)
    return new.numpy().astype(np.int64), conf.numpy().astype(np.float32)
