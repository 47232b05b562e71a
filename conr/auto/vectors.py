"""CoNR on vectors a user already has (embeddings from CLIP, DINOv2, a text model, ...).

The trainer's loop is unchanged; three pieces stand in for the image ones:

- :class:`conr.data.vectors.VectorData` holds the [N, D] table where ImageData holds images;
- the ``mlp`` backbone (conr/models/mlp.py, D -> 512 -> 128 with BatchNorm + ReLU) takes the
  place of the CNN, under the same BYOL projector / predictor and CoNR stage 2;
- :class:`NeighbourViews` is the "augmentation": a view of a vector is one of its ``knn``
  nearest neighbours in the input space, drawn at random (itself included), plus mild
  Gaussian noise and feature dropout. Embeddings have no crops or colour jitter; their
  nearest neighbours mostly share the class (the premise of SCAN's and TEMI's
  nearest-neighbour positives), so two draws make a positive pair that is more than the
  same point twice, and the noise keeps the network from memorising the N points.
  CoNR's ConAff neighbourhoods and boundary filter then work on the network's features
  in the batch exactly as for images.

:class:`VectorTrainer` is the Trainer with those views and a feature extractor without
image transforms; :func:`fit_vectors` is what ``CoNR(..., input="vectors").fit(X)`` runs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.vectors import VectorData
from ..engine import Trainer

__all__ = ["ViewConfig", "NeighbourViews", "VectorTrainer", "input_kind", "vector_config", "fit_vectors",
           "check_vectors", "vector_features", "read_embeddings", "MIN_IMAGE_SIDE", "SPARSE_MESSAGE"]

MIN_IMAGE_SIDE = 8   # a flat row is read as pixels only when D = H*H or 3*H*H with H >= this
SPARSE_MESSAGE = ("sparse input is not supported: CoNR trains a dense network on dense rows; convert it "
                  "with X.toarray() (or reduce it first, e.g. TruncatedSVD) and pass a dense array")


# ----------------------------------------------------------------------------- which path

def _is_sparse(X) -> bool:
    try:
        import scipy.sparse as sp
    except ImportError:  # pragma: no cover
        return False
    return sp.issparse(X)


def input_kind(X, requested: str = "auto", image_shape=None) -> tuple[str, str]:
    """("images" | "vectors", why) for an input of ``CoNR.fit``.

    ``auto``: folders, ImageData, PIL images and 3-/4-D arrays are images; a 2-D table is
    images only when that is unambiguous: ``image_shape`` given, or a width D = H*H or
    3*H*H with H >= 8 and pixel values (uint8, or everything in [0, 255]); any other
    table (negative values, a width that is no square, lists of numbers) is vectors."""
    if requested not in ("auto", "images", "vectors"):
        raise ValueError(f"input={requested!r}: choose 'auto', 'images' or 'vectors'")
    if _is_sparse(X):
        raise TypeError(SPARSE_MESSAGE)
    if requested != "auto":
        return requested, f"input={requested!r}"
    from ..data.base import ImageData

    if isinstance(X, (str, Path)):
        return "images", "a folder path"
    if isinstance(X, ImageData):
        return "images", "an ImageData"
    if isinstance(X, VectorData):
        return "vectors", "a VectorData"
    if not isinstance(X, (np.ndarray, Tensor, list, tuple)) and not hasattr(X, "__array__"):
        return "images", f"a {type(X).__name__} (the image reader names what it accepts)"
    if isinstance(X, (list, tuple)):
        if not X:
            return "images", "an empty list"
        if all(hasattr(i, "mode") and hasattr(i, "size") for i in X):
            return "images", "a list of PIL images"
        if X and all(np.ndim(i) >= 2 for i in X[:8]):
            return "images", "a list of 2-D arrays (images)"
    try:
        arr = X.detach().cpu().numpy() if isinstance(X, Tensor) else np.asarray(X)
    except Exception:  # ragged or odd: let the vector validation name the problem
        return "vectors", "not an array of images"
    if arr.ndim in (3, 4):
        return "images", f"a {arr.ndim}-D array (N,H,W[,C] / N,C,H,W)"
    if arr.ndim != 2:
        return "vectors", f"a {arr.ndim}-D input (not an image array)"
    d = arr.shape[1]
    if image_shape is not None:
        return "images", f"image_shape={tuple(image_shape)} given"
    square = any(c * s * s == d and s >= MIN_IMAGE_SIDE for c in (1, 3) for s in [int(round(math.sqrt(d / c)))])
    if not square:
        return "vectors", f"a table of width {d}, which is no H*H or 3*H*H image size with H >= {MIN_IMAGE_SIDE}"
    if arr.dtype == np.uint8:
        return "images", f"a uint8 table of width {d} = an image size"
    if arr.dtype.kind in "fiu" and arr.size and np.isfinite(arr).all() and arr.min() >= 0 and arr.max() <= 255:
        return "images", f"a table of width {d} = an image size with values in the pixel range"
    return "vectors", f"a table of width {d} whose values are not pixels (negative or beyond 255)"


def check_vectors(est, X, reset: bool) -> np.ndarray:
    """``X`` as a float table, checked the scikit-learn way (its messages: NaN, inf, complex,
    empty, 1-D, the number of features); ``reset``: fit (sets ``n_features_in_``)."""
    from sklearn.utils.validation import validate_data

    if _is_sparse(X):
        raise TypeError(SPARSE_MESSAGE)
    if isinstance(X, VectorData):
        X = X.images.numpy()
    elif isinstance(X, Tensor):
        X = X.detach().cpu().numpy()
    return validate_data(est, X, reset=reset, dtype=[np.float32, np.float64], ensure_min_samples=2 if reset else 1)


# ----------------------------------------------------------------------------- views

@dataclass
class ViewConfig:
    knn: int = 10          # a view is one of the k nearest neighbours in the input space (itself included)
    noise: float = 0.1     # Gaussian noise, in units of each feature's standard deviation
    dropout: float = 0.1   # each feature zeroed with this probability (the rest scaled by 1 / (1 - p))


class NeighbourViews:
    """Callable like BatchAugment: a batch of raw vectors [b, D] (rows of ``vectors``) ->
    standardised views [b, D]. The neighbour lists of the batch are computed once for
    the two views of a batch (the trainer passes the same tensor twice)."""

    def __init__(self, vectors: Tensor, mean, std, cfg: ViewConfig | None = None, chunk: int = 4096):
        self.cfg = cfg or ViewConfig()
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=vectors.device)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=vectors.device)
        self.z = (vectors.float() - self.mean) / self.std          # what the network sees
        self.sq = (self.z * self.z).sum(1)
        self.k = max(1, min(self.cfg.knn, len(vectors)))
        self.chunk = chunk
        self._last: tuple[Tensor, Tensor] | None = None

    @torch.no_grad()
    def neighbours(self, x: Tensor) -> Tensor:
        """[b, k] indices of the k nearest rows (Euclidean, standardised features) of each x."""
        q = (x.float() - self.mean) / self.std
        best_s, best_i = None, None
        for start in range(0, len(self.z), self.chunk):  # bounded memory for large N
            score = 2 * q @ self.z[start:start + self.chunk].t() - self.sq[start:start + self.chunk]
            s, i = score.topk(min(self.k, score.shape[1]), dim=1)
            i = i + start
            if best_s is not None:
                s, pick = torch.cat([best_s, s], 1).topk(self.k, dim=1)
                i = torch.cat([best_i, i], 1).gather(1, pick)
            best_s, best_i = s, i
        return best_i

    @torch.no_grad()
    def __call__(self, x: Tensor, generator=None) -> Tensor:
        if self._last is None or self._last[0] is not x:
            self._last = (x, self.neighbours(x))
        nn_idx = self._last[1]
        b, dev = nn_idx.shape[0], nn_idx.device
        pick = torch.randint(nn_idx.shape[1], (b,), generator=generator, device=dev)
        v = self.z[nn_idx[torch.arange(b, device=dev), pick]]
        c = self.cfg
        if c.noise > 0:
            v = v + c.noise * torch.randn(v.shape, generator=generator, device=dev)
        if c.dropout > 0:
            keep = torch.rand(v.shape, generator=generator, device=dev) >= c.dropout
            v = v * keep / (1.0 - c.dropout)
        return v


# ----------------------------------------------------------------------------- trainer

class VectorTrainer(Trainer):
    """The Trainer on a VectorData: neighbour views instead of image augmentation, and
    features of standardised vectors instead of the image test transform."""

    def __init__(self, cfg, data: VectorData, views: ViewConfig | None = None, **kwargs):
        self.views = views or ViewConfig()
        super().__init__(cfg, data=data, **kwargs)

    def augmenter(self, epoch: int) -> NeighbourViews:
        if "views" not in self._aug_cache:
            self._aug_cache["views"] = NeighbourViews(self.images, self.mean, self.std, self.views)
        return self._aug_cache["views"]

    @torch.no_grad()
    def features_of(self, images: Tensor) -> Tensor:
        was_training = self.method.training
        self.method.eval()
        mean = torch.as_tensor(self.mean, dtype=torch.float32, device=self.device)
        std = torch.as_tensor(self.std, dtype=torch.float32, device=self.device)
        out = []
        for chunk in images.split(self.cfg.cluster.eval_batch_size):
            x = (chunk.to(self.device).float() - mean) / std
            with self._autocast():
                out.append(self.method.features(x).float())
        self.method.train(was_training)
        return F.normalize(torch.cat(out), dim=1)


# ----------------------------------------------------------------------------- config and fit

def default_vector_epochs(n: int, batch_size: int) -> int:
    """About 1,000 optimiser steps, within 30..200 epochs."""
    steps = max(1, n // batch_size)
    return int(min(200, max(30, round(1000 / steps))))


def vector_config(n: int, k_provisional: int, *, method: str = "conr", epochs: int | None = None,
                  batch_size: int | None = None, lr: float | None = None, seed: int = 0, device: str = "auto",
                  deterministic: bool = False, verbose: bool = False, overrides=None):
    """The run config for N vectors: the ``mlp`` backbone, BYOL for the first 60 % of the
    epochs, then CoNR (kept fraction relaxed to 1 over the next 15 %); batch and
    neighbourhood sizes clamped to N. ``overrides`` (``section.key=value``) apply last."""
    from ..config import apply_overrides, config_from_dict

    given = apply_overrides({}, list(overrides or [])).get("train", {})  # train.epochs=N rescales the schedule
    epochs, batch_size, lr = (given.get("epochs", epochs), given.get("batch_size", batch_size),
                              given.get("lr", lr))
    b = int(min(batch_size or 256, n))
    if b < 2:
        raise ValueError(f"{n} vectors: training needs at least 2")
    e = int(epochs or default_vector_epochs(n, b))
    start = min(e - 1, int(0.6 * e))
    k = min(10, b - 1)
    k1 = min(10, b)
    raw = {
        "method": method,
        "data": {"name": "vectors"},
        "augment": {},
        "model": {"backbone": "mlp", "width": 512, "hidden_dim": 512, "proj_dim": 128},
        "train": {"epochs": e, "batch_size": b, "lr": float(lr or 0.2), "warmup_epochs": max(1, min(10, e // 10)),
                  "ema_base": 0.99, "seed": int(seed), "device": device, "deterministic": bool(deterministic),
                  "channels_last": False},
        "stage2": {"start_epoch": start, "t_end": min(e, start + max(1, int(0.15 * e))), "k": k, "k1": k1,
                   "k2": min(2, k1), "lr_factor": 1.0, "predictor_lr_factor": 1.0},
        "cluster": {"n_clusters": int(k_provisional), "flip_average": False, "n_init": 5, "eval_every": max(1, e // 5)},
        "run": {"progress": bool(verbose), "tensorboard": False, "log_every": 50},
    }
    return config_from_dict(apply_overrides(raw, list(overrides or [])))


def fit_vectors(est, X, why: str = "", hooks: dict | None = None):
    """``CoNR.fit`` on vectors: check X, train the MLP with CoNR, cluster, set the fitted
    attributes (``input_kind_ = "vectors"``, ``n_features_in_``). ``hooks``: the
    estimator's own steps (check_params, fixed_k, log, select_k, set_fitted)."""
    h = hooks
    from ..options import option

    arr = check_vectors(est, X, reset=True)
    h["check_params"]()
    n = arr.shape[0]
    fixed = h["fixed_k"]()
    if fixed is not None and fixed > n:
        raise ValueError(f"{option('n_clusters', fixed)} exceeds the number of samples ({n}); lower K")
    if fixed is None and n < 3:
        raise ValueError(f"{n} samples: estimating K needs at least 3")
    if est.backbone not in (None, "mlp"):
        raise ValueError(f"backbone={est.backbone!r} is an image network; vectors train the 'mlp' backbone "
                         f"(leave backbone=None)")
    labels = X.labels if isinstance(X, VectorData) else torch.full((n,), -1, dtype=torch.long)
    data = VectorData(images=torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)), labels=labels)
    k0 = h["fixed_k"](provisional=True, n_images=n)
    cfg = vector_config(n, k0, method=est.method, epochs=est.epochs, batch_size=est.batch_size, lr=est.lr,
                        seed=est.seed, device=est.device, deterministic=est.deterministic, verbose=est.verbose,
                        overrides=est.overrides)
    h["log"](f"input: vectors ({why}); {n} x {arr.shape[1]}, mlp backbone, {cfg.train.epochs} epochs, "
             f"batch {cfg.train.batch_size}")
    trainer = VectorTrainer(cfg, data, run_dir=est.run_dir,
                            write=est.run_dir is not None, log=h["log"])
    selection = h["select_k"](trainer) if fixed is None else None
    result = trainer.fit()
    est.budget_ = None
    h["set_fitted"](trainer, result.features, result.labels, result.centers, result.metrics, result.history)
    if selection is not None:
        est.k_selection_ = selection
    est.input_kind_ = "vectors"
    return est


def vector_features(est, X) -> Tensor:
    """Features of new vectors with the fitted network (checked against ``n_features_in_``)."""
    arr = check_vectors(est, X, reset=False)
    return est.trainer_.extract_features(torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))).cpu()


# ----------------------------------------------------------------------------- files

def read_embeddings(path) -> np.ndarray:
    """An [N, D] table from .npy, .csv (numbers only; a header row is skipped) or .parquet."""
    p = Path(path)
    suffix = p.suffix.lower()
    if not p.is_file():
        raise FileNotFoundError(f"--embeddings {p}: no such file")
    if suffix == ".npy":
        arr = np.load(p, allow_pickle=False)
    elif suffix == ".csv":
        try:
            arr = np.loadtxt(p, delimiter=",", ndmin=2)
        except ValueError:  # a header row (or non-numbers, which the second read names)
            try:
                arr = np.loadtxt(p, delimiter=",", ndmin=2, skiprows=1)
            except ValueError as exc:
                raise ValueError(f"--embeddings {p}: the CSV must hold numbers only (one optional header "
                                 f"row): {exc}") from None
    elif suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError(f"--embeddings {p}: reading parquet needs pyarrow (pip install pyarrow); or save "
                             f"the table as .npy or .csv") from None
        table = pq.read_table(p)
        arr = np.column_stack([table.column(i).to_numpy() for i in range(table.num_columns)])
    else:
        raise ValueError(f"--embeddings {p}: unknown format {suffix!r}; give a .npy, .csv or .parquet file")
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise ValueError(f"--embeddings {p}: expected an N x D table, got shape {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"--embeddings {p}: the table holds non-numbers ({arr.dtype}); keep only the vector "
                         f"columns")
    return arr
