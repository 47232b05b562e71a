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

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
CHOOSERS = ("joint", "stability", "stability, eligible", "stability rule (conr)", "best")


def main(argv=None) -> int:
    from encoder_input import accuracy, arguments, picks_table, record_picks, untrained_views, write

    from conr.cluster.final import FinalStage, choose
    from conr.cluster.policy import eligible

    args = arguments(__doc__, argv, seeds=range(3))
    out = []
    for name, k, seed, y, feats, pixels in untrained_views(args):
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
        record_picks(out, name, seed, y, rows, picks)
    lines = picks_table(out, CHOOSERS)
    write("stability_rule", out, "Each candidate's stability (ARI with its algorithm's partition of two 80 % "
          "subsamples, other seeds) as a chooser, against conr's rule, with no training; ACC, mean of seeds "
          f"{', '.join(map(str, args.seeds))} (`python benchmarks/stability_rule.py`).", lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
