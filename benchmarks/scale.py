"""CIFAR-10 (JPEG q75) through the encoder path at 10,000 / 30,000 / 60,000 images: time,
peak memory and where the time goes, each size in a fresh process with an empty cache.

    python benchmarks/scale.py                       # 10k, 30k, 60k (about an hour on 2 cores)
    python benchmarks/scale.py --sizes 10000         # one size

Each run is what a user's `conr cluster FOLDER --k 10` does on a folder of photos
(``conr.CoNR(n_clusters=10).fit(FOLDER)``, defaults: the embedded encoder, its default
time budget on top of the extraction); the folders are symlinks to the shared CIFAR-10
JPEG tree: the 10,000 test images, those plus the first 2,000 training images of each
class (30,000), and all 60,000. Per size: the run's timings (extraction, before training,
training, the final stage's candidates, total), its epochs, the peak resident memory of
the process, the final stage's candidates with their seconds, and ACC / NMI / ARI.
Results: benchmarks/results/scale.json (one record per size) and a table on stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CONR_SHARED_DATA", ROOT.parent / "shared" / "data")) / "cifar10-jpeg"
RESULTS = ROOT / "benchmarks" / "results"


def make_folder(root: Path, n: int) -> Path:
    """Symlinks to n CIFAR-10 images in class folders: the test split, then training images
    taken evenly from every class."""
    classes = sorted(p.name for p in (SHARED / "test").iterdir())
    extra_per_class = max(0, (n - 10_000) // len(classes))
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        files = sorted((SHARED / "test" / c).iterdir()) + sorted((SHARED / "train" / c).iterdir())[:extra_per_class]
        for f in files:
            link = root / c / f"{f.parent.parent.name}-{f.name}"
            if not link.exists():
                link.symlink_to(f)
    return root


def one(n: int, seed: int) -> dict:
    import contextlib
    import io

    import conr

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CONR_CACHE_DIR"] = str(Path(tmp) / "cache")
        folder = make_folder(Path(tmp) / f"cifar10-{n}", n)
        start = time.perf_counter()
        model = conr.CoNR(n_clusters=10, seed=seed)
        with contextlib.redirect_stdout(io.StringIO()):
            model.fit(folder)
        seconds = time.perf_counter() - start
    part = model.partition_
    return {"n": len(model.labels_), "seed": seed, "seconds": round(seconds, 1), "timings": model.timings_,
            "epochs": model.config_.train.epochs, "trained_epochs": model.trainer_.epoch,
            "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "encoder": model.config_.data.encoder, "source": part.source if part is not None else None,
            "candidates": [{"name": c["name"], "seconds": c["seconds"], "true_acc": c.get("true_acc"),
                            "true_nmi": c.get("true_nmi")} for c in (part.candidates if part else [])],
            **{k: round(float(v), 4) for k, v in model.metrics_.items() if k in ("acc", "nmi", "ari")},
            "budget": model.budget_}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 60_000])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process: one size
    p.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one, args.seed)))
        return 0
    records = json.loads(args.out.read_text()) if args.out.exists() else []
    for n in args.sizes:
        proc = subprocess.run([sys.executable, __file__, "--one", str(n), "--seed", str(args.seed)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:])
            return proc.returncode
        rec = json.loads(proc.stdout.strip().splitlines()[-1])
        records = [r for r in records if not (r["n"] == rec["n"] and r["seed"] == rec["seed"])] + [rec]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(sorted(records, key=lambda r: (r["n"], r["seed"])), indent=1) + "\n")
        t = rec["timings"]
        print(f"{rec['n']:>6} images: {rec['seconds'] / 60:.1f} min (extraction {t.get('extraction', 0) / 60:.1f}, "
              f"training {t['training'] / 60:.1f}, final-stage candidates {t['final_stage_candidates'] / 60:.1f}), "
              f"{rec['trained_epochs']} epochs, peak {rec['peak_rss_gib']} GiB, ACC {rec['acc']:.3f} NMI {rec['nmi']:.3f}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
