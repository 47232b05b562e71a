"""CoNR on vectors against k-means, spectral clustering and UMAP + GMM on the same vectors.

The vectors are embeddings nobody tuned for this comparison, made by the repository itself:

* ``conr``: the features (``model.features_``) of a short ``conr.CoNR(...).fit`` run on the
  images from scratch (``encoder="none"``; COIL-20: all 1,440; CIFAR-10: a seeded subset of
  the test set), fixed epochs;
* ``pca``: PCA-whitened pixels (50 components), the cheap fallback;
* ``encoder``: the embedded EfficientNet-Lite0's pooled features of the same images, as
  ``conr.auto.photos.photo_data`` extracts them (1,280 non-negative values a row, as they
  come: the vectors a user who ran an ImageNet encoder would hand over), cached with the
  suite's encoder features (``benchmarks/.cache/encoder-floor``).

Besides COIL-20 and CIFAR-10's test images, ``--sets photos10x200 photos6x500`` reads the
held-back photo folders of ``benchmarks/heldout_photos.py`` (CIFAR-10 *training* images no
default was tuned on; made as links under ``benchmarks/.cache/heldout``): vectors held back
from the suite, with ``--source encoder``.

They are cached in ``benchmarks/.cache/`` (git-ignored) with the true labels, which serve
only for the scores. On them, for 3 seeds each:

* ``conr_vectors``: ``conr.CoNR(n_clusters=K, input="vectors", seed=s)`` with its defaults
  (MLP, nearest-neighbour views, BYOL then CoNR, the final stage's candidates on the input
  vectors and on the head's features, its automatic time budget);
* ``byol_vectors``: the same with ``method=byol`` (no CoNR stage): what CoNR adds on vectors;
* ``kmeans``: scikit-learn ``KMeans(K, n_init=10)`` on the L2-normalised vectors;
* ``spectral``: ``SpectralClustering(K, affinity="nearest_neighbors", n_neighbors=10)``;
* ``umap_gmm``: umap-learn ``UMAP(n_neighbors=20, min_dist=0.0, n_components=K)`` then
  ``GaussianMixture(K, covariance_type="full", n_init=5)``.

    python benchmarks/embeddings.py            # both sets, conr features (run it alone: budgets are wall time)
    python benchmarks/embeddings.py --sets coil20 --source pca --methods conr_vectors umap_gmm
    python benchmarks/embeddings.py --sets cifar10 photos10x200 photos6x500 --source encoder
    python benchmarks/embeddings.py --sets photos10x200 --source encoder --methods conr_vectors \
        --set train.threads=auto --out benchmarks/results/variants/embeddings-threads-auto.json

``--set KEY=VALUE ...`` gives the deep rows settings (a variant of the defaults, as in suite.py). Each
deep run starts as a new user's would, with an empty ``CONR_CACHE_DIR``: no budget plan an
earlier run of the same vectors left is reused, so a repeat times its own step.

Prints a table (mean ± std over the seeds of NMI / ACC / ARI, seconds) and writes
``benchmarks/results/embeddings.json`` (every run, and the summary).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATA = Path("/work/shared/data")
CACHE = ROOT / "benchmarks" / ".cache"
RESULTS = ROOT / "benchmarks" / "results"
SETS = {  # name: (folder, K, images kept (None: all), image epochs for the conr features)
    "coil20": ("coil20", 20, None, 20),
    "cifar10": ("cifar10-jpeg/test", 10, 2000, 15),
    "photos10x200": ("heldout:photos10x200", 10, None, 15),   # benchmarks/heldout_photos.py's folders
    "photos6x500": ("heldout:photos6x500", 6, None, 15),
}
SOURCES = ("conr", "pca", "encoder")
DEEP = {"conr_vectors": "conr", "byol_vectors": "byol"}  # row: method, with the defaults otherwise
METHODS = (*DEEP, "kmeans", "spectral", "umap_gmm")


def make_vectors(name: str, source: str, data_root: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """(vectors [N, D] float32, labels [N], how they were made), cached."""
    folder, k, keep, epochs = SETS[name]
    path = CACHE / f"{name}-{source}.npz"
    if path.exists():
        z = np.load(path, allow_pickle=False)
        return z["X"], z["y"], json.loads(str(z["info"]))
    import torch

    from conr.data.folder import load_image_folder

    if folder.startswith("heldout:"):
        from heldout_photos import folder as held_back

        root = held_back(folder.split(":", 1)[1], CACHE / "heldout", data_root)
    else:
        root = data_root / folder
    start = time.perf_counter()
    if source == "encoder":
        import os

        from conr.auto.photos import photo_data
        from conr.encoders import load_encoder

        os.environ.setdefault("CONR_CACHE_DIR", str(CACHE / "encoder-floor"))  # the suite's encoder features
        data = photo_data(root, load_encoder("efficientnet_lite0"), on_bad_image="fail")
    else:
        data = load_image_folder(root, 32, "auto", "fail")
    if keep is not None and keep < len(data):
        g = torch.Generator().manual_seed(0)  # the same images whatever the source: both index the folder alike
        data = data.subset(torch.randperm(len(data), generator=g)[:keep].sort().values)
    if name == "coil20":
        data = type(data)(images=data.images[:, :1].contiguous(), labels=data.labels, classes=data.classes,
                          name=data.name, normalization="auto")
    y = data.labels.numpy()
    if source == "encoder":
        X = data.images.numpy().astype(np.float32)
        info = {"source": "encoder", "how": "EfficientNet-Lite0 pooled features of the images "
                                            "(conr.auto.photos.photo_data), as they come"}
    elif source == "pca":
        from sklearn.decomposition import PCA

        pixels = data.images.reshape(len(data), -1).numpy().astype(np.float32) / 255.0
        X = PCA(50, whiten=True, random_state=0).fit_transform(pixels).astype(np.float32)
        info = {"source": "pca", "how": "PCA(50, whiten=True) of the 32 px pixels"}
    else:
        import conr

        model = conr.CoNR(n_clusters=k, epochs=epochs, device="cpu", seed=0, encoder="none").fit(data)
        X = model.features_.astype(np.float32)
        info = {"source": "conr", "how": f"conr.CoNR(n_clusters={k}, epochs={epochs}, device='cpu', seed=0, encoder='none')"
                                         f".fit(images).features_ (automatic settings otherwise)",
                "image_run_metrics": {m: model.metrics_.get(m) for m in ("nmi", "acc", "ari")}}
    info.update(n=int(len(X)), dim=int(X.shape[1]), k=k, seconds=round(time.perf_counter() - start, 1))
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, X=X, y=y, info=json.dumps(info))
    return X, y, info


def run_method(method: str, X: np.ndarray, y: np.ndarray, k: int, seed: int, overrides=()):
    """Labels, or for the deep rows (labels, {what the run chose and its candidate table}).
    ``y``, the true labels, rides along only into the deep rows' candidate tables (their
    true_* columns); no method sees it. ``overrides`` (``key=value``) go to the deep rows."""
    if method in DEEP:
        import torch

        import conr
        from conr.data.vectors import VectorData

        data = VectorData(images=torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)),
                          labels=torch.as_tensor(y, dtype=torch.long))
        CACHE.mkdir(parents=True, exist_ok=True)
        # a new user's run: no remembered budget plan (the variable as it was afterwards)
        with tempfile.TemporaryDirectory(dir=CACHE) as empty, mock.patch.dict(os.environ, {"CONR_CACHE_DIR": empty}):
            model = conr.CoNR(n_clusters=k, input="vectors", device="cpu", seed=seed,
                              overrides=[f"method={DEEP[method]}", *overrides]).fit(data)
        part = model.partition_
        return model.labels_, {"epochs": model.config_.train.epochs, "threads": model.config_.train.threads,
                               **({"overrides": list(overrides)} if overrides else {}), "source": part.source,
                               "first_choice": part.first_choice, "candidates": part.candidates}
    unit = X / np.linalg.norm(X, axis=1, keepdims=True).clip(1e-12)
    if method == "kmeans":
        from sklearn.cluster import KMeans

        return KMeans(k, n_init=10, random_state=seed).fit_predict(unit)
    if method == "spectral":
        from sklearn.cluster import SpectralClustering

        return SpectralClustering(k, affinity="nearest_neighbors", n_neighbors=10, random_state=seed,
                                  assign_labels="cluster_qr").fit_predict(unit)
    if method == "umap_gmm":
        import umap
        from sklearn.mixture import GaussianMixture

        emb = umap.UMAP(n_neighbors=20, min_dist=0.0, n_components=k, random_state=seed).fit_transform(X)
        return GaussianMixture(k, covariance_type="full", n_init=5, random_state=seed).fit_predict(emb)
    raise ValueError(method)


def main(argv=None) -> int:
    from conr.ops.metrics import evaluate

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    ap.add_argument("--source", default="conr", choices=SOURCES)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--data-root", default=str(DATA))
    ap.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE",
                    help="settings for the deep rows (as suite.py's --set), e.g. train.threads=auto")
    ap.add_argument("--out", default=str(RESULTS / "embeddings.json"))
    args = ap.parse_args(argv)

    out = Path(args.out)
    doc = json.loads(out.read_text()) if out.exists() else {"runs": [], "vectors": {}}
    for name in args.sets:
        X, y, info = make_vectors(name, args.source, Path(args.data_root))
        key = f"{name}-{args.source}"
        doc["vectors"][key] = info
        print(f"{key}: {info['n']} x {info['dim']}, K={info['k']} ({info['how']}, {info['seconds']} s)", flush=True)
        for method in args.methods:
            for seed in args.seeds:
                start = time.perf_counter()
                result = run_method(method, X, y, info["k"], seed, args.overrides)
                took = time.perf_counter() - start
                labels, extra = result if isinstance(result, tuple) else (result, {})
                scores = evaluate(y, labels)
                doc["runs"] = [r for r in doc["runs"] if (r["vectors"], r["method"], r["seed"]) != (key, method, seed)]
                doc["runs"].append({"vectors": key, "method": method, "seed": seed, "seconds": round(took, 1),
                                    **{m: round(float(scores[m]), 4) for m in ("nmi", "acc", "ari")}, **extra})
                print(f"  {method:14s} seed {seed}: nmi {scores['nmi']:.4f} acc {scores['acc']:.4f} "
                      f"ari {scores['ari']:.4f} ({took:.1f} s)" + (f" {extra['source']}" if extra else ""), flush=True)
                _write(out, doc)
    _summarise(doc)
    _write(out, doc)
    return 0


def _summarise(doc: dict) -> None:
    rows = {}
    for r in doc["runs"]:
        rows.setdefault((r["vectors"], r["method"]), []).append(r)
    summary = []
    print("\n| vectors | method | seeds | NMI | ACC | ARI | seconds |\n|---|---|---|---|---|---|---|")
    for (vec, method), runs in sorted(rows.items()):
        cell = {m: (float(np.mean([r[m] for r in runs])), float(np.std([r[m] for r in runs])))
                for m in ("nmi", "acc", "ari", "seconds")}
        summary.append({"vectors": vec, "method": method, "seeds": len(runs),
                        **{m: round(v[0], 4) for m, v in cell.items()},
                        **{f"{m}_std": round(v[1], 4) for m, v in cell.items()}})
        print(f"| {vec} | {method} | {len(runs)} | " + " | ".join(
            f"{cell[m][0]:.3f} ± {cell[m][1]:.3f}" for m in ("nmi", "acc", "ari")) + f" | {cell['seconds'][0]:.1f} |")
    doc["summary"] = summary


def _write(out: Path, doc: dict) -> None:
    from conr.io import atomic_write_text

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
