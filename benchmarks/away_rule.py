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

    python benchmarks/away_rule.py       # the four open sets, seeds 0-2, about 4 min on 2 cores; --datasets, --seeds

Writes benchmarks/results/away_rule.{json,md}.
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # conr; this folder is on the path already
CHOOSERS = ("joint", "away", "best")


def main(argv=None) -> int:
    from encoder_input import accuracy, arguments, picks_table, record_picks, untrained_views, write

    from conr.cluster.final import FinalStage, choose

    args = arguments(__doc__, argv, seeds=range(3))
    out = []
    for name, k, seed, y, feats, pixels in untrained_views(args):
        _, cands = FinalStage(pixels, k, seed, consensus_runs=1).run(feats)   # every rule's value is scored
        rows = [{"name": c.name, "acc": accuracy(y, c.labels), "joint": round(c.scores["joint"], 4),
                 "away": round(c.scores["away"], 4),
                 "silhouette_in": {e: round(v, 4) for e, v in c.silhouettes.items()}} for c in cands]
        by = {r["name"]: r for r in rows}
        picks = {"joint": by[choose(cands, "joint").name], "away": by[choose(cands, "away").name],
                 "best": max(rows, key=lambda r: r["acc"])}
        record_picks(out, name, seed, y, rows, picks)
    mean = {w: statistics.mean(r["picks"][w]["acc"] for r in out) for w in CHOOSERS}
    lines = picks_table(out, CHOOSERS) + ["", "Mean ACC over all runs: "
                                          + ", ".join(f"{w} {mean[w]:.3f}" for w in CHOOSERS) + "."]
    write("away_rule", out, "The joint rule and the away rule (silhouette only in the other representations' "
          "embeddings) on the same candidates, with no training; ACC, mean of seeds "
          f"{', '.join(map(str, args.seeds))} (`python benchmarks/away_rule.py`).", lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
