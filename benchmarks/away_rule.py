"""Does judging each partition away from the layout it was made in keep the better one?

The default rule (``joint``, conr/cluster/policy.py) scores a candidate by the mean
silhouette of its clusters in the UMAP embedding of every representation. A partition
made in one of those embeddings (UMAP + GMM of the pixels, say) is judged partly at home,
where its own layout's tight clumps make it look best; the pixels' UMAP + GMM was chosen
over a joint candidate 9 points better on a digits run for that reason (docs/results.md,
"The mixture's starts in whole runs"). The ``away`` rule (``cluster.final_rule=away``)
takes each candidate's silhouette only in the *other* representations' embeddings (all of
them for the joint candidate, made of none), with the same head starts and eligibility.

With no training, on every open set: the embedded encoder's features (read by direction)
and the raw pixels, the final stage's candidates on each and the joint one
(``FinalStage.run``, one UMAP layout a consensus), each rule's choice from the same
candidates. Reported, ACC mean of the seeds: ``joint``, ``away``, and the run's best
candidate (needs the labels); and how many runs each rule keeps within 0.01 of it.
The same two rules on whole runs that kept each embedding's silhouette:
``python benchmarks/final_rule.py``, its table of ``silhouette_in`` runs.

    python benchmarks/away_rule.py                 # digits, COIL-20, ORL, CIFAR-10 (5,000 of its images)
    python benchmarks/away_rule.py --datasets orl --seeds 0

Writes benchmarks/results/away_rule.{json,md}.
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
CHOOSERS = ("joint", "away", "best")


def main(argv=None) -> int:
    from encoder_input import accuracy, arguments, open_sets, write

    from conr.cluster.final import FinalStage, choose, unit_rows
    from conr.cluster.manifold import pixel_vectors
    from conr.encoders.directions import feature_directions

    args = arguments(__doc__, argv, seeds=range(3))
    out = []
    for name, k, enc, y, px in open_sets(args, with_pixels=True):
        start = time.perf_counter()
        for seed in args.seeds:
            feats = unit_rows(feature_directions(enc))
            pixels = pixel_vectors(px, seed=seed, scale=False)
            _, cands = FinalStage(pixels, k, seed, consensus_runs=1).run(feats)   # every rule's value is scored
            rows = [{"name": c.name, "acc": accuracy(y, c.labels), "joint": round(c.scores["joint"], 4),
                     "away": round(c.scores["away"], 4),
                     "silhouette_in": {e: round(v, 4) for e, v in c.silhouettes.items()}} for c in cands]
            by = {r["name"]: r for r in rows}
            picks = {"joint": by[choose(cands, "joint").name], "away": by[choose(cands, "away").name],
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
    mean = {w: statistics.mean(r["picks"][w]["acc"] for r in out) for w in CHOOSERS}
    within = {w: sum(r["picks"]["best"]["acc"] - r["picks"][w]["acc"] <= 0.01 for r in out) for w in CHOOSERS}
    lines += ["", "Mean ACC over all runs: " + ", ".join(f"{w} {mean[w]:.3f}" for w in CHOOSERS)
              + ". Runs within 0.01 ACC of their best candidate: "
              + ", ".join(f"{w} {within[w]} of {len(out)}" for w in CHOOSERS[:-1]) + "."]
    write("away_rule", out, "The joint rule and the away rule (silhouette only in the other representations' "
          "embeddings) on the same candidates, with no training; ACC, mean of seeds "
          f"{', '.join(map(str, args.seeds))} (`python benchmarks/away_rule.py`).", lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
