"""Photo folders no default was measured on: CIFAR-10 training images, as a user's folder.

The open suite's CIFAR-10 row reads the 10,000 test images. These folders take the *last*
files of each class of the 50,000 training images (never a test image, and not the
first files an earlier look might have used), one sub-folder per class, as symbolic
links into ``../shared/data/cifar10-jpeg/train`` (nothing is copied):

* ``photos10x200``: all 10 classes, 200 photos each (2,000; K = 10);
* ``photos6x500``: bird, cat, deer, frog, horse, ship, 500 each (3,000; K = 6): animals
  that look alike, and one class that does not.

    python benchmarks/heldout_photos.py --out /tmp/heldout
    conr cluster /tmp/heldout/photos10x200 --k 10 --seed 0 --out /tmp/ho/photos10x200-0
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

TRAIN = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10-jpeg" / "train"
FOLDERS = {"photos10x200": (None, 200),
           "photos6x500": (("bird", "cat", "deer", "frog", "horse", "ship"), 500)}


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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/heldout")
    args = ap.parse_args(argv)
    for name, n in make(Path(args.out)).items():
        print(f"{Path(args.out) / name}: {n} images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
