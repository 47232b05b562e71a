"""The warm-up's candidates in the ending's vote, replayed on whole runs that kept them.

CoNR's stage 2 starts from one candidate of the warm-up's features (the seed) and pulls the
features towards it, so a seed's error is carried into every candidate of the end: on digits
seed 2 (2026-12-06) the warm-up's k-means and UMAP + GMM had ACC 0.951, the seed 0.900, and every
candidate of the end 0.87-0.91. The warm-up's candidates are made anyway (the seed is chosen
among them); since 2026-12-06 a run keeps their labels (``Partition.seed_candidate_labels``,
the suite's labels file ``seed_names`` / ``seed_labels``). This script replays the default's
vote (``conr.cluster.policy.vote_weights``, the run's seed) on

* the end's candidates (the run's own ending, replayed as a check);
* the end's candidates and the warm-up's (the input's, which both hold, counted once);
* the end's candidates and the warm-up's on the features only (k-means, spectral, UMAP + GMM), each
  candidate by its own weight (``cluster.warmup_weight=count``), and with the warm-up's three holding
  half of the vote (``half``, the default since the evening of 2026-12-06:
  ``conr.cluster.policy.shared_weights``);
* the warm-up's candidates alone (the seed ``cluster.seed_rule=consensus`` gives);

against the best candidate of the end and of the warm-up; and, beside them, the ACC of stage 2's seed
(``away``'s choice) and of the seed the vote of the warm-up's three on its features would have made. The true labels serve only for the
scores. The self-labelled candidate of a run starts from the run's own ending, so where
self-labelling runs (from scratch) a replayed vote is close to what a run would end with, not it.

    # the runs (each alone; the same epochs as the default's runs of 2026-12-06):
    python benchmarks/suite.py --datasets orl --rows conr_encoder --seeds 1 2 3 4 5 \\
        --set train.epochs=1000 --out benchmarks/results/variants/seed-labels-2026-12-06
    python benchmarks/warmup_vote.py benchmarks/results/variants/seed-labels-2026-12-06

Writes benchmarks/results/warmup_vote.{md,json} (``--out`` for another stem).
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from vote_rules import replayed, suite_runs, write_results  # noqa: E402  (read, replay and write as the other vote replays)

from conr.cluster.final import weighted_vote  # noqa: E402  (the default's own vote)
from conr.cluster.policy import WARMUP, WARMUP_VOTERS, WARMUP_WEIGHTS  # noqa: E402  (the default's own voters)
HALF = "end + warm-up's features, half"
VOTES = ("end", "end + warm-up", "end + warm-up's features", HALF, "warm-up alone")
NMI_OF = ("end", "end + warm-up's features", HALF)   # the ending before and since cluster.warmup_votes, and since
# cluster.warmup_weight=half
SEEDS = ("seed: away", "seed: vote of the warm-up's features")   # stage 2's seed, and one it could have had


def joined(end: dict, warm: dict) -> list[np.ndarray]:
    """The end's labelings and the warm-up's, a warm-up candidate left out where the end holds the same
    name with the same partition (the input's candidates are made once a run)."""
    from sklearn.metrics import adjusted_rand_score

    return [*end.values(), *(lab for n, lab in warm.items()
                             if n not in end or adjusted_rand_score(lab, end[n]) < 1.0)]


def replay(path: Path, record: dict) -> dict | None:
    """One run's row: each vote's ACC and the best candidates', or None without warm-up labels."""
    from conr.ops.metrics import evaluate

    with np.load(path) as z:
        if "seed_names" not in z.files:
            return None
        truth = z["truth"]
        end = {str(n): lab.astype(np.int64) for n, lab in zip(z["names"], z["labels"])}
        warm = {str(n): lab.astype(np.int64) for n, lab in zip(z["seed_names"], z["seed_labels"])}
    scored = truth >= 0
    k, seed = int(record["k"]), int(record["seed"])
    end = {n: lab for n, lab in end.items()   # the vote itself, and the warm-up's votes a run made since they vote
           if not n.startswith("consensus/") and not n.endswith("/" + WARMUP)}
    warm = {n: lab for n, lab in warm.items() if not n.startswith("consensus/")}

    def acc(lab) -> float:
        return round(float(evaluate(truth[scored], lab[scored])["acc"]), 4)

    sets = {"end": list(end.values()),
            "end + warm-up": joined(end, warm),
            "end + warm-up's features": [*end.values(), *(lab for n, lab in warm.items() if n in WARMUP_VOTERS)],
            "warm-up alone": list(warm.values())}
    row = {"set": record["dataset"], "row": record["row"], "seed": seed, "ending": record["acc"],
           "best end": max(acc(lab) for lab in end.values()), "best warm-up": max(acc(lab) for lab in warm.values())}
    chosen = next((c["name"] for c in record.get("seed_candidates") or [] if c.get("chosen")), None)
    if chosen in warm:   # stage 2's seed, and the seed the vote of the warm-up's own three would have been
        row["seed: away"] = acc(warm[chosen])
        row["seed: vote of the warm-up's features"] = acc(weighted_vote([warm[n] for n in WARMUP_VOTERS if n in warm],
                                                                         k, seed))
    sets[HALF] = sets["end + warm-up's features"]
    for name, labelings in sets.items():
        marks = [i >= len(end) for i in range(len(labelings))] if name == HALF else ()
        made = weighted_vote(labelings, k, seed, warmup=marks, warmup_share=WARMUP_WEIGHTS["half"])
        row[name] = acc(made)
        if name in NMI_OF:
            row[f"{name} nmi"] = round(float(evaluate(truth[scored], made[scored])["nmi"]), 4)
    return row


def table(rows: list[dict]) -> list[str]:
    cols = ("ending", *VOTES, "best end", "best warm-up", *(f"{c} nmi" for c in NMI_OF), *SEEDS)
    lines = ["| set | row | runs | " + " | ".join(cols) + " |", "|---|---|---|" + "---|" * len(cols)]
    cells = defaultdict(list)
    for r in rows:
        cells[(r["set"], r["row"])].append(r)
    for (name, row), got in sorted(cells.items()):
        lines.append(f"| {name} | {row} | {len(got)} | " + " | ".join(
            f"{np.mean([r[c] for r in got if c in r]):.3f}" if any(c in r for r in got) else "–" for c in cols) + " |")
    lines += ["", "| vote | mean ACC | runs ahead of the end's vote | behind | within 0.01 of the best end candidate |",
              "|---|---|---|---|---|"]
    for c in VOTES:
        lines.append(f"| {c} | {np.mean([r[c] for r in rows]):.4f} | {sum(r[c] > r['end'] + 0.001 for r in rows)} | "
                     f"{sum(r[c] < r['end'] - 0.001 for r in rows)} | "
                     f"{sum(r['best end'] - r[c] <= 0.01 for r in rows)} of {len(rows)} |")
    return lines


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", type=Path, help="suite folders whose labels files keep the warm-up's")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "warmup_vote")
    args = ap.parse_args(argv)
    rows = replayed(suite_runs(args.folders), replay)
    if not rows:
        raise SystemExit(f"no run in {[str(f) for f in args.folders]} kept its warm-up's candidates: run the suite "
                         "(its labels files keep them since 2026-12-06)")
    lines = ["# The warm-up's candidates in the ending's vote (ACC but where named NMI, mean over runs)", "",
             f"`python benchmarks/warmup_vote.py {' '.join(str(f.resolve().relative_to(ROOT)) for f in args.folders)}`", "",
             *table(rows)]
    write_results(args.out, lines, rows)


if __name__ == "__main__":
    main()
