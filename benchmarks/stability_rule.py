"""Does a candidate's stability tell the best partition, where silhouette cannot compare
representations?

The final stage's rule (conr/cluster/policy.py) scores each candidate by the silhouette of
its clusters in the UMAP embeddings, and under the default ``joint`` rule the features' own
candidates do not compete with the joint one, because silhouette favours whichever
representation lays its points out more tightly. Most of the runs where the choice misses
the best candidate by more than a point miss a features' own candidate (docs/results.md,
the rule table). The issue's first idea, not measured before, is stability: a partition
that the same algorithm finds again on another subsample, from another seed, is more
likely a structure of the data than of the algorithm's start, and agreement between two
partitions of the same images means the same thing whichever representation made them.

With no training, on every open set: the embedded encoder's features (read by direction)
and the raw pixels, the final stage's candidates on each and the joint one
(``FinalStage.run``, one UMAP layout a consensus), then each candidate's stability as the
``stability`` rule measures it (``FinalStage.stability``: its algorithm run again on two
random 80 % subsamples, seeds ``seed + 1``, ``seed + 2``, the adjusted Rand index of the new
partition with the candidate's own on those images, mean of the two). Reported, ACC mean of the seeds:

* ``joint`` (conr's default rule);
* ``stability``: the most stable candidate of all;
* ``stability, eligible``: the most stable of those ``joint`` may choose;
* ``stability rule (conr)``: ``cluster.final_rule=stability``, each representation's
  candidate of the highest ``joint`` value, then the most stable of those
  (conr/cluster/policy.py);
* ``best``: the run's best candidate (needs the labels).

    python benchmarks/stability_rule.py                 # digits, COIL-20, ORL, CIFAR-10 (5,000 of its images)
    python benchmarks/stability_rule.py --datasets orl --seeds 0

Writes benchmarks/results/stability_rule.{json,md}.
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
CHOOSERS = ("joint", "stability", "stability, eligible", "stability rule (conr)", "best")


def main(argv=None) -> int:
    from encoder_input import accuracy, arguments, open_sets, write

    from conr.cluster.final import FinalStage, choose, unit_rows
    from conr.cluster.manifold import pixel_vectors
    from conr.cluster.policy import eligible
    from conr.encoders.directions import feature_directions

    args = arguments(__doc__, argv, seeds=range(3))
    out = []
    for name, k, enc, y, px in open_sets(args, with_pixels=True):
        start = time.perf_counter()
        for seed in args.seeds:
            feats = unit_rows(feature_directions(enc))
            pixels = pixel_vectors(px, seed=seed, scale=False)
            # conr's stability rule: every candidate scored, its stability measured (FinalStage.stability)
            chosen, cands = FinalStage(pixels, k, seed, rule="stability", consensus_runs=1).run(feats)
            rows = [{"name": c.name, "representation": c.representation, "acc": accuracy(y, c.labels),
                     "stability": round(c.scores["stability"], 4), "joint": round(c.scores["joint"], 4)}
                    for c in cands]
            by = {r["name"]: r for r in rows}
            pool = {c.name for c in eligible(cands, "joint")}
            picks = {"joint": by[choose(cands, "joint").name],
                     "stability": max(rows, key=lambda r: r["stability"]),
                     "stability, eligible": max((r for r in rows if r["name"] in pool), key=lambda r: r["stability"]),
                     "stability rule (conr)": by[chosen.name],
                     "best": max(rows, key=lambda r: r["acc"])}
            run = {"dataset": name, "seed": seed, "k": k, "rows": len(y), "candidates": rows,
                   "picks": {w: {"name": p["name"], "acc": p["acc"]} for w, p in picks.items()}}
            out.append(run)
            print(json.dumps(run), flush=True)
        print(f"{name}: {time.perf_counter() - start:.0f} s", flush=True)
    lines = ["| dataset | " + " | ".join(CHOOSERS) + " |", "|---|" + "---|" * len(CHOOSERS)]
    for name in dict.fromkeys(r["dataset"] for r in out):
        runs = [r for r in out if r["dataset"] == name]
        cells = []
        for w in CHOOSERS:
            acc = statistics.mean(r["picks"][w]["acc"] for r in runs)
            names = sorted({r["picks"][w]["name"] for r in runs})
            cells.append(f"{acc:.3f} ({', '.join(names)})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    within = {w: sum(r["picks"]["best"]["acc"] - r["picks"][w]["acc"] <= 0.01 for r in out) for w in CHOOSERS}
    lines += ["", "Runs within 0.01 ACC of their best candidate: "
              + ", ".join(f"{w} {within[w]} of {len(out)}" for w in CHOOSERS) + "."]
    write("stability_rule", out, "Each candidate's stability (ARI with its algorithm's partition of two 80 % "
          "subsamples, other seeds) as a chooser, against conr's rule, with no training; ACC, mean of seeds "
          f"{', '.join(map(str, args.seeds))} (`python benchmarks/stability_rule.py`).", lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
