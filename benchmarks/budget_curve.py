"""Quality against the time budget: what `conr cluster FOLDER --k K --minutes M` reaches
for several M on one folder (the defaults otherwise), with the time it took and what
the budget bought. The default budget (conr/autoconfig.py `default_minutes`) is set
from these curves.

    python benchmarks/budget_curve.py --dataset digits --minutes 1.5 3 6
    python benchmarks/budget_curve.py --dataset cifar10 --minutes 3 6

Rows go to benchmarks/results/budget_curve.jsonl as they finish (a stopped run keeps
what it measured); the table to stdout. Run it alone: the budgets are wall time.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from suite import DATASETS, digits_folder, scores  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits", choices=list(DATASETS))
    p.add_argument("--minutes", type=float, nargs="+", default=[1.5, 3.0, 6.0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "budget_curve.jsonl")
    p.add_argument("--cache", type=Path, default=ROOT / "benchmarks" / ".cache")
    args = p.parse_args(argv)
    import conr

    folder, k, _ = DATASETS[args.dataset]
    folder = digits_folder(args.cache) if folder is None else folder
    if not folder.is_dir():
        print(f"skip {args.dataset}: {folder} is missing (see ../shared/data/README.md)")
        return 0
    print("| dataset | budget (min) | took (min) | epochs | image size | NMI | ACC | ARI | labels from |")
    print("|---|---|---|---|---|---|---|---|---|")
    for minutes in args.minutes:
        start = time.perf_counter()
        model = conr.CoNR(n_clusters=k, seed=args.seed, minutes=minutes)
        with contextlib.redirect_stdout(io.StringIO()):
            model.fit(folder)
        took = time.perf_counter() - start
        s = scores(model.data_.labels.numpy(), model.labels_)
        row = {"dataset": args.dataset, "seed": args.seed, "minutes": minutes, "seconds": round(took, 1),
               "epochs": model.config_.train.epochs, "trained_epochs": model.trainer_.epoch,
               "image_size": model.config_.data.image_size, "source": model.partition_.source, **s,
               "budget": model.budget_,
               "candidates": model.partition_.candidates}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"| {args.dataset} | {minutes:g} | {took / 60:.1f} | {row['trained_epochs']} | {row['image_size']} | "
              f"{s['nmi']:.3f} | {s['acc']:.3f} | {s['ari']:.3f} | {row['source']} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
