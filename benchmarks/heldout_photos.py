"""Folders no default was measured on: CIFAR-10 training images as a user's photos, and a
sparse COIL-20.

The open suite's CIFAR-10 row reads the 10,000 test images. These folders take the *last*
files of each class of the 50,000 training images (never a test image, and not the
first files an earlier look might have used), one sub-folder per class, as symbolic
links into ``../shared/data/cifar10-jpeg/train`` (nothing is copied):

* ``photos10x200``: all 10 classes, 200 photos each (2,000; K = 10);
* ``photos6x500``: bird, cat, deer, frog, horse, ship, 500 each (3,000; K = 6): animals
  that look alike, and one class that does not;
* ``coil20x10``: every 7th of COIL-20's 72 views of each object (11 views 35 degrees apart;
  220 images, K = 20): many small clusters, as ORL's 40 faces of 10 are, and far fewer
  views of an object than the open COIL-20 has.

    python benchmarks/heldout_photos.py --out /tmp/heldout
    conr cluster /tmp/heldout/photos10x200 --k 10 --seed 0 --out /tmp/ho/photos10x200-0
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
TRAIN = DATA / "cifar10-jpeg" / "train"
FOLDERS = {"photos10x200": (None, 200),
           "photos6x500": (("bird", "cat", "deer", "frog", "horse", "ship"), 500)}
SPARSE = {"coil20x10": ("coil20", 7)}   # name: (open set under DATA, every n-th file of each class)


def make(out: Path, train: Path = TRAIN) -> dict[str, int]:
    """Make every folder of :data:`FOLDERS` under ``out``; returns {name: images}."""
    if not train.is_dir():
        raise SystemExit(f"{train} is missing: these folders are made from CIFAR-10's JPEG tree "
                         "(../shared/data/cifar10-jpeg, see its README)")
    made = {}
    for name, (classes, per) in FOLDERS.items():
        classes = classes or tuple(sorted(p.name for p in train.iterdir() if p.is_dir()))
        for c in classes:
            (out / name / c).mkdir(parents=True, exist_ok=True)
            for f in sorted(os.listdir(train / c))[-per:]:
                link = out / name / c / f
                if not link.exists():
                    link.symlink_to((train / c / f).resolve())
        made[name] = sum(len(os.listdir(out / name / c)) for c in classes)
    return made


def make_sparse(out: Path, data: Path = DATA) -> dict[str, int]:
    """Make every folder of :data:`SPARSE` under ``out``: every n-th file (sorted) of each
    class folder of the open set, as links; returns {name: images}."""
    made = {}
    for name, (source, every) in SPARSE.items():
        src = data / source
        if not src.is_dir():
            raise SystemExit(f"{src} is missing: {name} is made from it (../shared/data, see its README)")
        total = 0
        for c in sorted(p.name for p in src.iterdir() if p.is_dir()):
            (out / name / c).mkdir(parents=True, exist_ok=True)
            for f in sorted(os.listdir(src / c))[::every]:
                link = out / name / c / f
                if not link.exists():
                    link.symlink_to((src / c / f).resolve())
            total += len(os.listdir(out / name / c))
        made[name] = total
    return made


def folder(name: str, out: Path, data: Path = DATA) -> Path:
    """The held-back folder ``name`` under ``out``, made first (with the others from the same
    source) where it is missing: :func:`make_sparse` for a name of :data:`SPARSE`, :func:`make`
    for one of :data:`FOLDERS`."""
    if name not in FOLDERS and name not in SPARSE:
        raise ValueError(f"unknown held-back folder {name!r}; choose one of {sorted({**FOLDERS, **SPARSE})}")
    if not (out / name).is_dir():
        make_sparse(out, data) if name in SPARSE else make(out, data / "cifar10-jpeg" / "train")
    return out / name


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/heldout")
    args = ap.parse_args(argv)
    for name, n in {**make(Path(args.out)), **make_sparse(Path(args.out))}.items():
        print(f"{Path(args.out) / name}: {n} images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
