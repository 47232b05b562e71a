"""The paper's figures for any clustered feature space, as PNG bytes (matplotlib,
Agg canvas; no global pyplot state is touched):

* ``tsne``: t-SNE of the features, boundary samples drawn small (paper Fig. 4);
* ``neighbors``: query images with their top-10 Euclidean and ConAff neighbours,
  wrong ones outlined in red (Fig. 1b / 5; wrong = another true label when labels
  are known, else another cluster);
* ``purity``: neighbour purity against K, Euclidean vs ConAff, with and without
  the boundary filter at fr0 (Fig. 2, via :func:`conr.outputs.analysis.purity_curve`);
* ``training``: loss, NMI/ACC/ARI and kept fraction per epoch (Fig. 3c).

:class:`ClusterSnapshot` holds what they need; build it from a trainer
(``ClusterSnapshot.from_trainer``) or a fitted estimator (``from_estimator``).
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..ops.boundary import boundary_ratio, keep_mask
from ..io import atomic_write_bytes, read_jsonl

__all__ = ["ClusterSnapshot", "plot_tsne", "plot_neighbors", "plot_purity", "plot_training", "make_plots",
           "PLOTS", "dedupe_history", "history_from_run"]

PLOTS = ("tsne", "neighbors", "purity", "training")
WRONG = (220, 30, 30)


@dataclass
class ClusterSnapshot:
    """One clustering of one image set, with everything the plots and reports show."""
    images: Tensor | None          # uint8 [N, C, H, W] (None: vectors without pictures)
    features: Tensor               # [N, D] L2-normalised
    labels: Tensor                 # [N] cluster of each image
    centers: Tensor                # [K, D] k-means means (not re-normalised)
    truth: Tensor | None = None    # [N] ground truth (e.g. class sub-folders), None when unknown
    classes: list[str] = field(default_factory=list)
    paths: list[str] | None = None
    history: list[dict] = field(default_factory=list)
    fr0: float = 0.8               # the boundary filter's kept fraction at the start of stage 2
    keep_rule: str = "code"
    ratio_variant: str = "code"
    k1: int = 10
    k2: int = 2
    ratios: Tensor | None = None   # filled in __post_init__
    distances: Tensor | None = None
    boundary: Tensor | None = None  # bool [N]: dropped by the boundary filter at fr0

    def __post_init__(self):
        self.features = self.features.float().cpu()
        self.labels = self.labels.long().cpu()
        self.centers = self.centers.float().cpu()
        if self.truth is not None:
            self.truth = torch.as_tensor(self.truth).long().cpu()
            if not bool((self.truth >= 0).all()):
                self.truth = None
        if self.ratios is None:
            self.ratios = boundary_ratio(self.features, self.centers, self.labels, self.ratio_variant)
        if self.distances is None:
            self.distances = (self.features - self.centers[self.labels]).norm(dim=1)
        if self.boundary is None:
            self.boundary = ~keep_mask(self.ratios, self.fr0, self.keep_rule)

    @property
    def n_clusters(self) -> int:
        return int(self.centers.shape[0])

    def reference(self) -> Tensor:
        """Labels that decide whether two images 'belong together': the truth if known, else clusters."""
        return self.truth if self.truth is not None else self.labels

    @classmethod
    def from_trainer(cls, trainer, history: list[dict] | None = None) -> "ClusterSnapshot":
        """The run's partition (its final stage's labels), or the trainer's current k-means
        clustering when it has none for this data (k-means is run if needed)."""
        if trainer.pseudo_labels is None or trainer.pseudo_labels.shape[0] != len(trainer.data):
            trainer.cluster_step()
        feats = trainer.last_features if trainer.last_features is not None else trainer.extract_features()
        partition = trainer.run_partition()  # the run's final labels when it has them
        labels, centers = (partition.labels, partition.centers) if partition is not None else \
            (trainer.pseudo_labels, trainer.centers)
        return cls._from_parts(trainer.cfg, trainer.data, feats, labels, centers,
                               history if history is not None else trainer.history)

    @classmethod
    def from_estimator(cls, est) -> "ClusterSnapshot":
        """A fitted estimator's clustering, with the boundary ratios and distances it holds."""
        return cls._from_parts(est.config_, est.data_, torch.from_numpy(est.features_),
                               torch.from_numpy(est.labels_), torch.from_numpy(est.cluster_centers_),
                               est.history_, ratios=torch.from_numpy(est.boundary_ratios_),
                               distances=torch.from_numpy(est.distances_))

    @classmethod
    def _from_parts(cls, cfg, data, feats, labels, centers, history, ratios=None, distances=None) -> "ClusterSnapshot":
        s = cfg.stage2
        return cls(images=picture_rows(data), features=feats, labels=labels, centers=centers,
                   truth=data.labels if data.has_labels else None, classes=list(data.classes),
                   paths=data.paths, history=list(history), fr0=s.fr0, keep_rule=s.keep_rule,
                   ratio_variant=s.ratio_variant, k1=s.k1, k2=s.k2, ratios=ratios, distances=distances)


def picture_rows(data) -> Tensor | None:
    """uint8 pictures [N, C, H, W] of a run's rows: its images, an encoder run's thumbnails,
    or None for vectors that have no pictures."""
    if getattr(data, "kind", "images") == "vectors":
        thumbs = getattr(data, "thumbnails", None)
        return None if thumbs is None else thumbs.cpu()
    return data.images.cpu()


# ----------------------------------------------------------------------------- helpers

def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def _placeholder(title: str, why: str) -> bytes:
    fig = _figure(6, 1.5)
    ax = fig.add_subplot(111)
    ax.axis("off")
    ax.set_title(title)
    ax.text(0.5, 0.5, why, ha="center", va="center", fontsize=11, transform=ax.transAxes)
    return _png(fig)


def _colors(k: int):
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if k <= 10 else "tab20" if k <= 20 else "turbo"]
    return [cmap(i / max(1, k - 1)) if k > 20 else cmap(i) for i in range(k)]


def _subset(n: int, m: int, seed: int) -> Tensor:
    if n <= m:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:m].sort().values


def thumbnails(images: Tensor, size: int) -> np.ndarray:
    """uint8 [N, C, H, W] -> uint8 [N, size, size, 3] (grey repeated, resized)."""
    x = images
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-1] != size or x.shape[-2] != size:
        mode = "nearest" if size % x.shape[-1] == 0 and size >= x.shape[-1] else "bilinear"
        kwargs = {} if mode == "nearest" else {"align_corners": False, "antialias": True}
        x = torch.nn.functional.interpolate(x.float(), size=(size, size), mode=mode, **kwargs)
        x = x.round().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


# ----------------------------------------------------------------------------- figures

def plot_tsne(snap: ClusterSnapshot, max_points: int = 3000, seed: int = 0) -> bytes:
    """t-SNE of (a seeded subset of up to ``max_points``) features; boundary samples small."""
    from sklearn.manifold import TSNE

    idx = _subset(len(snap.labels), max_points, seed)
    n = len(idx)
    if n < 5:
        return _placeholder("t-SNE of the features", f"only {n} images: too few for t-SNE")
    x = snap.features[idx].numpy()
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3.0)))
    emb = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
               random_state=seed).fit_transform(x)
    panels = [("clusters", snap.labels[idx].numpy(), snap.n_clusters, [f"cluster {i}" for i in range(snap.n_clusters)])]
    if snap.truth is not None:
        k_true = int(snap.truth.max()) + 1
        names = snap.classes if len(snap.classes) == k_true else [str(i) for i in range(k_true)]
        panels.append(("true labels", snap.truth[idx].numpy(), k_true, names))
    boundary = snap.boundary[idx].numpy()
    fig = _figure(6.5 * len(panels), 6)
    for p, (title, lab, k, names) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), p + 1)
        colors = _colors(k)
        for c in range(k):
            for is_b, size, alpha in ((False, 10, 0.8), (True, 3, 0.9)):
                m = (lab == c) & (boundary == is_b)
                if m.any():
                    ax.scatter(emb[m, 0], emb[m, 1], s=size, color=colors[c], alpha=alpha, linewidths=0,
                               label=names[c] if not is_b else None)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"t-SNE coloured by {title}")
        if k <= 20:
            ax.legend(loc="best", fontsize=7, markerscale=2, framealpha=0.7)
    fig.suptitle(f"{n} of {len(snap.labels)} images; small dots: the {int(snap.boundary.sum())} boundary "
                 f"samples the filter drops at fr0={snap.fr0:g}", fontsize=10)
    return _png(fig)


def neighbor_sets(snap: ClusterSnapshot, k: int = 10, batch: int = 512, seed: int = 0):
    """Top-k Euclidean and ConAff neighbours (self excluded) of every image of a
    seeded batch, as the training step sees them: (batch indices, eu [B, k], ca [B, k])."""
    from ..ops.neighbors import conaff_neighbors, euclidean_neighbors

    idx = _subset(len(snap.labels), batch, seed)
    b = len(idx)
    k = min(k, b - 2)
    if k < 1:
        raise ValueError(f"{b} images are too few for neighbourhoods")
    f = snap.features[idx]
    k1 = min(snap.k1, b)
    k2 = min(snap.k2, k1)
    out = []
    for nb in (euclidean_neighbors(f, k + 1), conaff_neighbors(f, k + 1, k1, k2)):
        rows = torch.arange(b).unsqueeze(1)
        others = nb != rows
        # the first k non-self entries of each row (self is normally first; drop it wherever it is)
        order = torch.argsort((~others).float(), dim=1, stable=True)
        out.append(torch.gather(nb, 1, order)[:, :k])
    return idx, out[0], out[1]


def plot_neighbors(snap: ClusterSnapshot, n_queries: int = 6, k: int = 10, batch: int = 512, seed: int = 0,
                   tile: int = 56) -> bytes:
    """Query images with their top-k Euclidean and ConAff neighbours; wrong ones outlined red."""
    title = "Euclidean vs ConAff neighbours"
    try:
        idx, eu, ca = neighbor_sets(snap, k, batch, seed)
    except ValueError as exc:
        return _placeholder(title, str(exc))
    k = eu.shape[1]
    ref = snap.reference()[idx]
    wrong_eu = ref[eu] != ref.unsqueeze(1)
    wrong_ca = ref[ca] != ref.unsqueeze(1)
    # queries: one seeded random image from each of the first clusters present in the batch
    g = torch.Generator().manual_seed(seed + 1)
    lab = snap.labels[idx]
    queries = []
    for c in torch.unique(lab)[torch.randperm(len(torch.unique(lab)), generator=g)].tolist():
        members = (lab == c).nonzero().flatten()
        queries.append(int(members[torch.randint(len(members), (1,), generator=g)]))
        if len(queries) == n_queries:
            break
    pad, gap, sp = 3, 10, 2  # frame width, gap between queries, white space around each cell
    cell = tile + 2 * (pad + sp)
    width = cell * (k + 1) + gap
    rows = 2 * len(queries)
    mosaic = np.full((rows * cell + (len(queries) - 1) * gap, width, 3), 255, np.uint8)
    thumbs = thumbnails(snap.images[idx], tile)

    def put(r_px, c_px, img, color):
        if color is not None:
            mosaic[r_px + sp:r_px + cell - sp, c_px + sp:c_px + cell - sp] = color
        o = sp + pad
        mosaic[r_px + o:r_px + o + tile, c_px + o:c_px + o + tile] = img

    for qi, q in enumerate(queries):
        top = qi * (2 * cell + gap)
        put(top + cell // 2, 0, thumbs[q], (40, 40, 40))
        for r, (nb, wrong) in enumerate(((eu, wrong_eu), (ca, wrong_ca))):
            for j in range(k):
                put(top + r * cell, cell + gap + j * cell, thumbs[int(nb[q, j])],
                    WRONG if bool(wrong[q, j]) else None)
    fig = _figure(max(6.0, width / 70), max(2.5, mosaic.shape[0] / 70))
    ax = fig.add_axes([0.08, 0.0, 0.92, 0.93])
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    for qi in range(len(queries)):
        top = qi * (2 * cell + gap)
        n_eu, n_ca = int(wrong_eu[queries[qi]].sum()), int(wrong_ca[queries[qi]].sum())
        ax.text(-6, top + cell / 2, f"Euclidean\n{n_eu} wrong", ha="right", va="center", fontsize=8)
        ax.text(-6, top + 1.5 * cell, f"ConAff\n{n_ca} wrong", ha="right", va="center", fontsize=8)
    basis = "another true label" if snap.truth is not None else "another cluster"
    fig.suptitle(f"{title}: query (left), top-{k} neighbours inside a batch of {len(idx)}; red = {basis}.\n"
                 f"Mean wrong among top-{k} over all {len(idx)} anchors: Euclidean "
                 f"{float(wrong_eu.float().sum(1).mean()):.2f}, ConAff {float(wrong_ca.float().sum(1).mean()):.2f}",
                 fontsize=9)
    return _png(fig)


def purity_data(snap: ClusterSnapshot, batch: int = 512, seed: int = 0, max_batches: int = 10):
    from .analysis import purity_curve

    n = len(snap.labels)
    b = min(n, batch)
    ks = [k for k in (1, 2, 3, 5, 10, 20, 30, 50, 100, 200) if k + 1 < b]
    if not ks or b < 4:
        raise ValueError(f"{n} images are too few for a purity curve")
    curves = purity_curve(snap.features, snap.reference(), ks, batch_size=b, k1=min(snap.k1, b),
                          k2=min(snap.k2, snap.k1, b), centers=snap.centers, pseudo_labels=snap.labels,
                          keep_fraction=snap.fr0, keep_rule=snap.keep_rule, n_batches=max_batches, seed=seed)
    return ks, curves, b


def plot_purity(snap: ClusterSnapshot, batch: int = 512, seed: int = 0) -> bytes:
    """Neighbour purity vs K: Euclidean / ConAff, each with and without the boundary filter."""
    title = "Neighbour purity vs neighbourhood size"
    try:
        ks, curves, b = purity_data(snap, batch, seed)
    except ValueError as exc:
        return _placeholder(title, str(exc))
    fig = _figure(7, 4.5)
    ax = fig.add_subplot(111)
    style = {"euclidean": ("tab:blue", "-", "Euclidean"), "conaff": ("tab:red", "-", "ConAff"),
             "euclidean+filter": ("tab:blue", "--", f"Euclidean + boundary filter (fr0={snap.fr0:g})"),
             "conaff+filter": ("tab:red", "--", f"ConAff + boundary filter (fr0={snap.fr0:g})")}
    for name, values in curves.items():
        color, ls, label = style.get(name, ("k", ":", name))
        ax.plot(ks, [100 * v for v in values], ls, color=color, marker="o", ms=3, label=label)
    ax.set_xscale("log")
    ax.set_xticks(ks)
    ax.set_xticklabels([str(k) for k in ks])
    ax.set_xlabel("K (neighbours, self excluded)")
    basis = "true label" if snap.truth is not None else "cluster (no ground truth known)"
    ax.set_ylabel(f"% of neighbours with the anchor's {basis.split(' (')[0]}")
    ax.set_title(f"{title}\n(purity w.r.t. the {basis}; random batches of {b} as in training)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def dedupe_history(history: list[dict]) -> list[dict]:
    """One record per epoch (the last one logged wins), in epoch order."""
    by_epoch = {}
    for r in history:
        if isinstance(r, dict) and "epoch" in r:
            by_epoch[int(r["epoch"])] = r
    return [by_epoch[e] for e in sorted(by_epoch)]


def history_from_run(run_dir: str | Path, fallback: list[dict] | None = None) -> list[dict]:
    """The per-epoch records of a run folder's metrics.jsonl (else ``fallback``)."""
    records = read_jsonl(Path(run_dir) / "metrics.jsonl") if run_dir is not None else []
    return dedupe_history(records or list(fallback or []))


def plot_training(history: list[dict]) -> bytes:
    """Loss (left) and NMI / ACC / ARI and the kept fraction (right) per epoch."""
    hist = dedupe_history(history)
    if not hist:
        return _placeholder("Training curves", "no per-epoch records (metrics.jsonl is empty)")
    epochs = [r["epoch"] for r in hist]
    fig = _figure(6.5, 6.5)
    ax = fig.add_subplot(2, 1, 1)
    ax.plot(epochs, [r.get("loss", np.nan) for r in hist], "-o", ms=3, color="k")
    ax.set_ylabel("training loss")
    ax.set_title("Loss per epoch")
    stage2 = [r["epoch"] for r in hist if r.get("stage") == 2]
    ax2 = fig.add_subplot(2, 1, 2, sharex=ax)
    for a in (ax, ax2):
        if stage2:
            a.axvline(stage2[0] - 0.5, color="gray", ls=":", lw=1)
            a.text(stage2[0] - 0.5, 1.0, " stage 2", transform=a.get_xaxis_transform(), fontsize=8,
                   va="top", color="gray")
        a.grid(alpha=0.3)
    drew = False
    for key, color in (("nmi", "tab:blue"), ("acc", "tab:red"), ("ari", "tab:green")):
        pts = [(r["epoch"], 100 * r[key]) for r in hist if key in r]
        if pts:
            ax2.plot(*zip(*pts), "-o", ms=3, color=color, label=key.upper())
            drew = True
    pts = [(r["epoch"], 100 * r["keep_fraction"]) for r in hist if "keep_fraction" in r]
    if pts:
        ax2.plot(*zip(*pts), "--", marker=".", color="gray", label="kept fraction (boundary filter)")
        drew = True
    if drew:
        ax2.set_ylabel("%")
        ax2.set_title("Clustering scores per epoch")
        ax2.legend(fontsize=8, loc="best")
    else:
        pts = [(r["epoch"], r["feature_std"]) for r in hist if "feature_std" in r]
        if pts:
            ax2.plot(*zip(*pts), "-o", ms=3, color="tab:purple")
        ax2.set_ylabel("mean feature std (~0: collapse)")
        ax2.set_title("Feature spread per epoch (no ground truth for scores)")
    ax2.set_xlabel("epoch")
    from matplotlib.ticker import MaxNLocator

    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return _png(fig)


def plot_k_selection(selection: dict) -> bytes:
    """The K criterion against K (``k_selection.json`` of a run), the chosen K marked."""
    table, name, k = selection["table"], selection["criterion"], int(selection["k"])
    ks = [r["k"] for r in table]
    vals = [r[name] for r in table]
    fig = _figure(6.4, 3.4)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(ks, vals, "o-", color="#1f77b4", ms=4)
    ax.axvline(k, color="#d62728", ls="--", lw=1)
    ax.annotate(f"K = {k}", (k, max(vals)), xytext=(6, -12), textcoords="offset points", color="#d62728")
    ax.set_xlabel("number of clusters K")
    ax.set_ylabel(name)
    ax.set_title(f"Choosing K: {name} of k-means on the learned features")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return _png(fig)


def make_plots(snap: ClusterSnapshot, out_dir: str | Path | None = None, which=PLOTS, seed: int = 0,
               log=print) -> dict[str, bytes]:
    """All (or ``which``) figures as PNG bytes; with ``out_dir`` also written there atomically."""
    makers = {"tsne": lambda: plot_tsne(snap, seed=seed), "neighbors": lambda: plot_neighbors(snap, seed=seed),
              "purity": lambda: plot_purity(snap, seed=seed), "training": lambda: plot_training(snap.history)}
    out = {}
    for name in which:
        if name not in makers:
            raise ValueError(f"unknown plot {name!r}; choose from {', '.join(PLOTS)}")
        log(f"plot: {name}")
        out[name] = makers[name]()
        if out_dir is not None:
            atomic_write_bytes(Path(out_dir) / f"{name}.png", out[name])
    return out
