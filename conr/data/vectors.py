"""Vectors (embeddings a user already has) held the way the trainer holds images.

:class:`VectorData` answers the questions :class:`conr.engine.Trainer` asks of an
:class:`~conr.data.base.ImageData` (``images``, ``labels``, ``channels``, ``mean_std``,
``subset``, ...): ``images`` is the float32 [N, D] table and ``channels`` its width D,
which the ``mlp`` backbone takes as its input width.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from .base import LabelledRows

__all__ = ["VectorData", "input_kind", "check_vectors", "read_embeddings", "read_embeddings_named", "MIN_IMAGE_SIDE", "SPARSE_MESSAGE"]

MIN_IMAGE_SIDE = 8   # a flat row is read as pixels only when D = H*H or 3*H*H with H >= this
SPARSE_MESSAGE = ("sparse input is not supported: CoNR trains a dense network on dense rows; convert it "
                  "with X.toarray() (or reduce it first, e.g. TruncatedSVD) and pass a dense array")


@dataclass
class VectorData(LabelledRows):
    """N vectors of width D (float32) and their labels (-1 where unknown)."""
    images: Tensor                       # float32 [N, D]: named as ImageData's so the trainer reads it unchanged
    labels: Tensor                       # int64 [N]
    classes: list[str] = field(default_factory=list)
    paths: list[str] | None = None
    name: str = "vectors"
    normalization: str = "auto"          # per-feature mean / std, measured
    skipped: list[tuple[str, str]] = field(default_factory=list)
    representation: str = "vectors"      # what the rows are: "vectors" (given), "encoder" (an encoder's features)
    thumbnails: Tensor | None = None     # uint8 [N, 3, t, t] pictures of the rows (an encoder's images), for grids
    kind = "vectors"

    def __post_init__(self):
        self.images = torch.as_tensor(self.images)
        if self.images.dim() != 2 or not self.images.is_floating_point():
            raise ValueError(f"vectors must be a float [N, D] table; got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        self.images = self.images.float().contiguous()
        self._check_labels("vectors")

    @property
    def channels(self) -> int:
        """The vector width D (the ``mlp`` backbone's input width)."""
        return self.images.shape[1]

    @property
    def n_features(self) -> int:
        return self.images.shape[1]

    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-feature mean and standard deviation (a constant feature gets std 1)."""
        x = self.images.double()
        std = x.std(dim=0) if len(self) > 1 else torch.ones(x.shape[1], dtype=x.dtype)
        std = torch.where(std > 1e-12, std, torch.ones_like(std))
        return tuple(x.mean(dim=0).tolist()), tuple(std.tolist())

    def subset(self, index: Sequence[int] | Tensor) -> "VectorData":
        index = torch.as_tensor(index, dtype=torch.long)
        return VectorData(images=self.images[index], labels=self.labels[index], classes=list(self.classes),
                          paths=[self.paths[i] for i in index.tolist()] if self.paths is not None else None,
                          name=self.name, skipped=list(self.skipped), representation=self.representation,
                          thumbnails=None if self.thumbnails is None else self.thumbnails[index])


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
    from .base import ImageData

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


# ----------------------------------------------------------------------------- files

ROW_NAME_HEADERS = {"id", "index", "name", "names", "file", "filename", "path", "row", "key"}


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _csv_layout(p: Path) -> tuple[bool, bool, int]:
    """(a header row?, row names in the first column?, the number of columns) of a CSV: a header is
    a first line with a non-number past its first cell; names are a first column of text, or one
    whose header is empty (what pandas writes for its index) or says so (``ROW_NAME_HEADERS``)."""
    import csv

    with open(p, newline="") as f:
        reader = csv.reader(f)
        first = next(reader, None)
        second = next(reader, None)
    if not first:
        raise ValueError(f"--embeddings {p}: the file is empty")
    head = first[0].strip()
    header = any(not _is_number(c) for c in first[1:]) if len(first) > 1 else not _is_number(head)
    data_row = second if header else first
    names = len(first) > 1 and ((header and (head == "" or head.lower() in ROW_NAME_HEADERS))
                                or (data_row is not None and not _is_number(data_row[0])))
    return header, names, len(first)


def _row_name_column(names: list[str], kinds: list[str]) -> int | None:
    """The column of a parquet table that names its rows: pandas' stored index, else its one column of
    text (numpy dtype ``kinds``); None if neither (more text columns are left for the error)."""
    index = [i for i, n in enumerate(names) if n.startswith("__index_level_")]
    text = [i for i, kind in enumerate(kinds) if kind not in "fiu"]
    return index[0] if index else text[0] if len(text) == 1 else None


def read_embeddings_named(path) -> tuple[np.ndarray, list[str] | None]:
    """An [N, D] table from .npy, .csv or .parquet, and its row names where the file has them (a first
    CSV column of text, or one headed ``id``, ``name``, ... or left blank as pandas writes its index;
    a parquet text column or pandas index), else None. A header row is skipped."""
    p = Path(path)
    suffix = p.suffix.lower()
    if not p.is_file():
        raise FileNotFoundError(f"--embeddings {p}: no such file")
    names = None
    if suffix == ".npy":
        arr = np.load(p, allow_pickle=False)
    elif suffix == ".csv":
        header, named, width = _csv_layout(p)
        try:
            arr = np.loadtxt(p, delimiter=",", ndmin=2, skiprows=int(header), quotechar='"',
                             usecols=range(1, width) if named else None)
        except ValueError as exc:
            raise ValueError(f"--embeddings {p}: the CSV must hold numbers only, past one optional header row "
                             f"and one optional first column of row names: {exc}") from None
        if named:
            names = np.loadtxt(p, delimiter=",", ndmin=1, skiprows=int(header), quotechar='"', usecols=0,
                               dtype=str).tolist()
    elif suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError(f"--embeddings {p}: reading parquet needs pyarrow (pip install pyarrow); or save "
                             f"the table as .npy or .csv") from None
        table = pq.read_table(p)
        columns = [table.column(i).to_numpy(zero_copy_only=False) for i in range(table.num_columns)]
        keyed = _row_name_column(table.column_names, [c.dtype.kind for c in columns])
        if keyed is not None:
            names = [str(v) for v in columns[keyed]]
            columns = [c for i, c in enumerate(columns) if i != keyed]
        arr = np.column_stack(columns) if columns else np.empty((table.num_rows, 0))
    else:
        raise ValueError(f"--embeddings {p}: unknown format {suffix!r}; give a .npy, .csv or .parquet file")
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise ValueError(f"--embeddings {p}: expected an N x D table, got shape {arr.shape}")
    if arr.dtype.kind == "b":   # binary features (fingerprints, one-hot codes) are 0 and 1
        arr = arr.astype(np.float32)
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"--embeddings {p}: the table holds non-numbers ({arr.dtype}); keep only the vector "
                         f"columns (and at most one column of row names)")
    if arr.shape[1] == 0:
        raise ValueError(f"--embeddings {p}: no vector columns, only row names")
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=1)) if arr.dtype.kind == "f" else np.empty(0, int)
    if bad.size:
        shown = ", ".join(str(i) for i in bad[:5]) + (", ..." if bad.size > 5 else "")
        raise ValueError(f"--embeddings {p}: {bad.size} of {len(arr)} rows hold NaN or infinity (rows {shown}, "
                         f"counted from 0): drop those rows or fill the gaps before clustering")
    return arr, names


def read_embeddings(path) -> np.ndarray:
    """The [N, D] table of :func:`read_embeddings_named`, without its row names."""
    return read_embeddings_named(path)[0]
