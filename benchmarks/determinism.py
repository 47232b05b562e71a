"""Same seed, same assignments: a fixed-seed, deterministic fit on small real folders, its
labels written to JSON, so that two versions of conr can be compared (a restructuring must
not change what a run computes).

    python benchmarks/determinism.py --out before.json      # on one checkout
    python benchmarks/determinism.py --out after.json       # on another
    python benchmarks/determinism.py --compare before.json after.json

The runs use only the public estimator (``conr.CoNR(...).fit(folder)``) with the epochs
fixed (no time budget: a budget's epochs come from a timing) and ``deterministic=True``;
the folders are copies of a few classes of the shared COIL-20 (grey) and CIFAR-10 (colour)
sets, and one run estimates K.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CASES = {  # name: (source folder, classes, images per class, K, extra overrides)
    "coil20-grey": ("coil20", ["01", "02", "03", "04", "05"], 24, 5, []),
    "cifar10-colour": ("cifar10-jpeg/test", ["airplane", "automobile", "bird", "cat"], 30, 4, []),
    "coil20-k-auto": ("coil20", ["06", "07", "08"], 24, "auto", []),
}


def make_folder(root: Path, source: str, classes: list[str], per_class: int) -> Path:
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for f in sorted((DATA / source / c).iterdir())[:per_class]:
            shutil.copy(f, root / c / f.name)
    return root


def run(name: str, tmp: Path) -> dict:
    import conr

    source, classes, per_class, k, extra = CASES[name]
    folder = make_folder(tmp / name, source, classes, per_class)
    params = dict(n_clusters=k, epochs=6, batch_size=32, device="cpu", seed=0, deterministic=True,
                  overrides=["model.width=8", "model.hidden_dim=64", "model.proj_dim=32", "train.threads=1"] + extra)
    try:  # a version with encoders: this check is about training from scratch
        model = conr.CoNR(encoder="none", **params)
    except TypeError:
        model = conr.CoNR(**params)
    labels = [int(x) for x in model.fit(folder).labels_]
    return {"labels": labels, "sha1": hashlib.sha1(json.dumps(labels).encode()).hexdigest(), "k": model.n_clusters_}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="write the runs' labels here (JSON)")
    ap.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"), help="compare two such files")
    ap.add_argument("--cases", nargs="*", default=list(CASES))
    args = ap.parse_args(argv)
    if args.compare:
        a, b = (json.loads(Path(p).read_text()) for p in args.compare)
        same = True
        for name in sorted(set(a["runs"]) | set(b["runs"])):
            ra, rb = a["runs"].get(name), b["runs"].get(name)
            ok = ra is not None and rb is not None and ra["labels"] == rb["labels"]
            same &= ok
            print(f"{name:16s} {'identical' if ok else 'DIFFERENT'}  {ra and ra['sha1'][:12]}  {rb and rb['sha1'][:12]}")
        return 0 if same else 1
    import conr
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        runs = {name: run(name, Path(tmp)) for name in args.cases}
    record = {"conr": str(Path(conr.__file__).parent), "torch": torch.__version__, "runs": runs}
    text = json.dumps(record, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    for name, r in runs.items():
        print(f"{name:16s} K={r['k']} sha1 {r['sha1'][:12]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
