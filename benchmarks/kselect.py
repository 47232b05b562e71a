"""How well the label-free K criteria of conr/kselect.py find the true number of classes.

For each data set (sklearn digits K=10, COIL-20 K=20, ORL K=40, CIFAR-10 test K=10) and
each feature kind:

* ``pixels``: raw pixels scaled to [0, 1];
* ``pca``: the first 50 principal components of the pixels (whitened off);
* ``byol``: the L2-normalised features of a short BYOL run (conr's stage 1, which is
  where ``conr cluster`` estimates K; BYOL never sees K, so no label leaks in).

it runs every criterion over K = 2..50 (2..30 for CIFAR-10) and writes the chosen K and the
scores per K to ``benchmarks/results/kselect.json``, then prints a table.

    nice -n 19 python3 benchmarks/kselect.py                       # all, short BYOL runs (~10 min on 2 cores)
    nice -n 19 python3 benchmarks/kselect.py --datasets digits orl --no-byol
    nice -n 19 python3 benchmarks/kselect.py --features-dir /tmp/ksel   # cache / reuse BYOL features
    nice -n 19 python3 benchmarks/kselect.py --datasets cifar10_test --kinds pca50 byol   # skip 3072-d pixels

Rows are merged into the JSON by (dataset, features), so runs of different sets add up.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from conr.cluster.kselect import CRITERIA, best_k, k_scores  # noqa: E402

DATA = Path("/work/shared/data")
SETS = {  # name: (true K, folder or None, K range, BYOL epochs, image size)
    "digits": (10, None, (2, 50), 40, 16),
    "coil20": (20, "coil20", (2, 50), 30, 32),
    "orl": (40, "orl", (2, 50), 60, 32),
    "cifar10_test": (10, "cifar10-jpeg/test", (2, 30), 6, 32),
}


def load_pixels(name: str, data_root: Path) -> np.ndarray:
    """Images [N, H, W(, C)] uint8."""
    if name == "digits":
        from sklearn.datasets import load_digits

        return np.clip(load_digits().images * 16, 0, 255).astype(np.uint8)
    from conr.data.folder import load_image_folder

    d = load_image_folder(data_root / SETS[name][1], 32, "auto", "fail")
    return d.images.permute(0, 2, 3, 1).numpy().squeeze(-1) if d.images.shape[1] == 1 else \
        d.images.permute(0, 2, 3, 1).numpy()


def byol_features(name: str, images: np.ndarray, epochs: int, size: int, seed: int) -> np.ndarray:
    import conr

    overrides = ["method=byol", f"train.epochs={epochs}", "run.progress=false"]
    config = "digits" if name == "digits" else None
    est = conr.CoNR(n_clusters=2, config=config, image_size=size, device="cpu", seed=seed,
                    overrides=overrides)
    return est.fit(images).features_


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(SETS), choices=list(SETS))
    p.add_argument("--data-root", default=str(DATA))
    p.add_argument("--no-byol", action="store_true", help="pixels and PCA only")
    p.add_argument("--kinds", nargs="+", default=["pixels", "pca50", "byol"], choices=["pixels", "pca50", "byol"],
                   help="feature kinds to score (raw CIFAR pixels take tens of minutes on 2 busy cores)")
    p.add_argument("--features-dir", help="cache of BYOL features (<name>.npy); reused when present")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "kselect.json"))
    args = p.parse_args(argv)

    from sklearn.decomposition import PCA

    out = Path(args.out)
    results = [r for r in (json.loads(out.read_text()) if out.exists() else []) if r["dataset"] not in args.datasets]
    for name in args.datasets:
        true_k, _, k_range, epochs, size = SETS[name]
        images = load_pixels(name, Path(args.data_root))
        pixels = images.reshape(len(images), -1).astype(np.float32) / 255.0
        feats = {}
        if "pixels" in args.kinds:
            feats["pixels"] = pixels
        if "pca50" in args.kinds:
            feats["pca50"] = PCA(n_components=min(50, pixels.shape[1]), random_state=args.seed).fit_transform(pixels)
        if not args.no_byol and "byol" in args.kinds:
            cache = Path(args.features_dir) / f"{name}.npy" if args.features_dir else None
            if cache is not None and cache.exists():
                feats[f"byol{epochs}"] = np.load(cache, allow_pickle=False)
            else:
                t0 = time.time()
                f = byol_features(name, images, epochs, size, args.seed)
                print(f"{name}: BYOL {epochs} epochs in {time.time() - t0:.0f} s", flush=True)
                if cache is not None:
                    cache.parent.mkdir(parents=True, exist_ok=True)
                    np.save(cache, f)
                feats[f"byol{epochs}"] = f
        for kind, x in feats.items():
            t0 = time.time()
            table = k_scores(x, k_range, seed=args.seed, criteria=CRITERIA)
            row = {"dataset": name, "true_k": true_k, "features": kind, "n": len(x), "k_range": list(k_range),
                   "seconds": round(time.time() - t0, 1), "table": table}
            row["chosen"] = {c: best_k(table, c) for c in CRITERIA}
            results.append(row)
            print(f"{name:13s} K={true_k:2d} {kind:8s} " +
                  " ".join(f"{c}={row['chosen'][c]:2d}" for c in CRITERIA) + f"  ({row['seconds']} s)", flush=True)
            # after every row: a long run stopped half-way keeps what it measured
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=1) + "\n")

    print(f"\n{'dataset':13s} {'true K':>6s} {'features':9s} " + " ".join(f"{c:>10s}" for c in CRITERIA))
    for r in results:
        print(f"{r['dataset']:13s} {r['true_k']:6d} {r['features']:9s} "
              + " ".join(f"{r['chosen'][c]:10d}" for c in CRITERIA))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
