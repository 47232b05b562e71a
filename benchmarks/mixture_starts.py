"""Does starting each UMAP layout's Gaussian mixture from the other partitions keep a
better partition?

The manifold step fits a Gaussian mixture to each UMAP layout from scikit-learn's own
starts (k-means of the layout, ``n_init`` = 5). On a demo run's features (seed 2) every
layout's mixture merged two digits and gave a clump of one of them a component (ACC 0.889),
while the same mixture started from k-means of the features reached a higher likelihood
on the same layout, and ACC 0.955-0.972. With ``cluster.mixture_starts`` (on by default)
each layout's mixture also starts from the representation's k-means and spectral
partitions (the joint candidate's: both views'), and the fit of the highest mean
log-likelihood is kept (conr/cluster/manifold.py ``gmm_posterior``): the same model and
layout, a better optimum, chosen without labels.

With no training, on every open set: the embedded encoder's features (read by direction)
and the raw pixels, the final stage's candidates (``FinalStage.run``, ``--layouts`` UMAP
layouts a consensus), with the starts and without. Reported per set, ACC mean of the
seeds: each UMAP + GMM candidate, the default rule's choice, the run's best candidate
(needs the labels), how many layouts kept a start's fit, and the seconds the stage took.

    python benchmarks/mixture_starts.py                  # digits, COIL-20, ORL, CIFAR-10 (5,000 of its images)
    python benchmarks/mixture_starts.py --datasets orl --seeds 0

Writes benchmarks/results/mixture_starts.{json,md}.
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # conr; this folder is on the path already
ARMS = {"scikit-learn's starts": False, "with the partitions' starts": True}
MANIFOLD = ("umap_gmm/features", "umap_gmm/pixels", "umap_gmm/joint")


def main(argv=None) -> int:
    from encoder_input import accuracy, arguments, untrained_views, write

    from conr.cluster.final import FinalStage

    args = arguments(__doc__, argv, seeds=range(3), extra=lambda p: p.add_argument(
        "--layouts", type=int, default=1, help="UMAP layouts a consensus is made of (default 1)"))
    out = []
    for name, k, seed, y, feats, pixels in untrained_views(args):
        for arm, starts in ARMS.items():
            start = time.perf_counter()
            chosen, cands = FinalStage(pixels, k, seed, consensus_runs=args.layouts,
                                       mixture_starts=starts).run(feats)
            seconds = time.perf_counter() - start
            rows = {c.name: {"acc": accuracy(y, c.labels), **({"started": c.started, "layouts": c.layouts}
                                                              if c.layouts else {})} for c in cands}
            best = max(rows, key=lambda n: rows[n]["acc"])
            run = {"dataset": name, "seed": seed, "k": k, "rows": len(y), "arm": arm,
                   "seconds": round(seconds, 1), "candidates": rows, "chosen": chosen.name,
                   "chosen_acc": rows[chosen.name]["acc"], "best": best, "best_acc": rows[best]["acc"]}
            out.append(run)
            print(json.dumps(run), flush=True)
    head = ["set", "arm", *MANIFOLD, "chosen (default rule)", "best candidate", "chosen within 0.01 of best",
            "layouts started", "seconds"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name in dict.fromkeys(r["dataset"] for r in out):
        for arm in ARMS:
            runs = [r for r in out if r["dataset"] == name and r["arm"] == arm]
            cells = [f"{statistics.mean(r['candidates'][m]['acc'] for r in runs):.3f}" for m in MANIFOLD]
            started = sum(r["candidates"][m].get("started", 0) for r in runs for m in MANIFOLD)
            layouts = sum(r["candidates"][m].get("layouts", 0) for r in runs for m in MANIFOLD)
            cells += [f"{statistics.mean(r['chosen_acc'] for r in runs):.3f} "
                      f"({', '.join(sorted({r['chosen'] for r in runs}))})",
                      f"{statistics.mean(r['best_acc'] for r in runs):.3f}",
                      f"{sum(r['best_acc'] - r['chosen_acc'] <= 0.01 for r in runs)} of {len(runs)}",
                      f"{started} of {layouts}", f"{statistics.mean(r['seconds'] for r in runs):.1f}"]
            lines.append(f"| {name} | {arm} | " + " | ".join(cells) + " |")
    write("mixture_starts", out, "UMAP + GMM candidates with scikit-learn's starts only and with the other "
          f"partitions' starts too, with no training; ACC, mean of seeds {', '.join(map(str, args.seeds))}, "
          f"{args.layouts} layout(s) a consensus (`python benchmarks/mixture_starts.py`).", lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
