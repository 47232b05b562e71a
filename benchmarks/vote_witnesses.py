"""Other label-only endings, replayed on CoNR's and BYOL's whole runs side by side.

CoNR's ending is the vote of every candidate, the warm-up's three holding half of it
(``cluster.warmup_weight=half``); BYOL alone has no warm-up, so its vote is the agreement-weighted
one of its candidates. Under that default CoNR is ahead of BYOL alone on COIL-20 and CIFAR-10 and
behind on digits and ORL by less than the seeds' spread (docs/results.md, "Today's defaults in
whole runs"). This script asks whether another label-free ending, applied to both methods alike,
would change that. Each variant below is replayed on every run of the given suite folders that
kept its candidates' labels (the consensus candidate of a run is left out of its voters):

* ``default``: the shipped ending (checked against each run's own ACC);
* ``no input``: the input's candidates (pixels, the encoder's features, the user's vectors) left out;
* ``three witnesses``: the input's candidates, the end's others and the warm-up's each hold a third
  of the vote (BYOL: the input's and the features' a half each);
* ``agreement^8``: the agreement weights to the power 8 instead of 4;
* ``better half``: only the candidates whose agreement is at least the median vote;
* ``seed in the warm-up's half``: stage 2's seed (the candidate it started from) votes with the
  warm-up's three (CoNR only);
* ``closest by NMI`` / ``closest by ARI``: a choice among the vote and every candidate, of the one
  whose weighted mean NMI (ARI) with the others is highest (Strehl and Ghosh's way of choosing among
  consensus functions).

The true labels serve only for the scores.

    python benchmarks/vote_witnesses.py benchmarks/results/variants/consensus-default-2026-12-06 \\
        benchmarks/results/variants/warmup-half-2026-12-06      # about 10 minutes alone

A run both folders hold is taken from the later one. Writes benchmarks/results/vote_witnesses.{md,json}.
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

from conr.cluster.consensus import agreement, consensus_partition  # noqa: E402
from conr.cluster.policy import WARMUP, WARMUP_VOTERS, WARMUP_WEIGHTS, shared_weights, vote_weights  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "vote_witnesses"
INPUTS = ("pixels", "encoder", "vectors")
VARIANTS = ("default", "no input", "three witnesses", "agreement^8", "better half", "seed in the warm-up's half",
            "closest by NMI", "closest by ARI")
HALF = WARMUP_WEIGHTS["half"]


def group_weights(weights, groups: list[str]) -> list[float]:
    """``weights`` (None: equal) rescaled so that every group holds the same share of the total,
    each keeping its own proportions within; a group without weight gives its share to the others."""
    w = np.ones(len(groups)) if weights is None else np.asarray(weights, dtype=np.float64)
    totals = {g: w[[i for i, h in enumerate(groups) if h == g]].sum() for g in set(groups)}
    held = [g for g, t in totals.items() if t > 0]
    return [float(w[i] / totals[g] / len(held)) if totals[g] > 0 else 0.0 for i, g in enumerate(groups)]


def closest(labelings, weights, vote: np.ndarray, score) -> np.ndarray:
    """Among ``vote`` and each of ``labelings``, the one of the highest weighted mean ``score`` with
    the labelings (a labeling not counted against itself); the vote where it ties."""
    w = np.ones(len(labelings)) if weights is None else np.asarray(weights, dtype=np.float64)
    best, best_score = vote, sum(wi * score(vote, lab) for wi, lab in zip(w, labelings)) / w.sum()
    for i, cand in enumerate(labelings):
        others = [j for j in range(len(labelings)) if j != i]
        if w[others].sum() <= 0:
            continue
        s = sum(w[j] * score(cand, labelings[j]) for j in others) / w[others].sum()
        if s > best_score:
            best, best_score = cand, s
    return best


def variants(end: dict, warm: list[np.ndarray], seed_labels: np.ndarray | None, k: int, seed: int) -> dict:
    """{variant: labels} from the end's candidates ``end`` ({name: labels}), the warm-up's voters
    ``warm`` (empty for BYOL) and stage 2's seed (None for BYOL)."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    names = list(end)
    labelings = [end[n] for n in names] + list(warm)
    marks = [False] * len(names) + [True] * len(warm)
    share = HALF if warm else None
    is_input = [n.split("/")[-1] in INPUTS for n in names] + [False] * len(warm)

    def vote(labs, weights):
        return consensus_partition(labs, k, seed=seed, weights=weights)

    def default_vote(labs, warm_marks, power_weights=None):
        weights = power_weights if power_weights is not None else vote_weights(agreement(labs))
        return vote(labs, shared_weights(weights, warm_marks, share if any(warm_marks) else None))

    out = {}
    agree = agreement(labelings)   # every candidate's mean ARI with the others, read by four of the variants
    weights = shared_weights(vote_weights(agree), marks, share)
    out["default"] = vote(labelings, weights)
    kept = [i for i in range(len(labelings)) if not is_input[i]]
    out["no input"] = default_vote([labelings[i] for i in kept], [marks[i] for i in kept])
    groups = ["input" if is_input[i] else ("warm-up" if marks[i] else "end") for i in range(len(labelings))]
    out["three witnesses"] = vote(labelings, group_weights(vote_weights(agree), groups))
    power8 = [max(0.0, float(a)) ** 8 for a in agree]
    out["agreement^8"] = default_vote(labelings, marks, power8 if sum(power8) > 0 else None)
    upper = [i for i in range(len(labelings)) if agree[i] >= np.median(agree)]
    out["better half"] = default_vote([labelings[i] for i in upper], [marks[i] for i in upper])
    if seed_labels is not None and warm:
        out["seed in the warm-up's half"] = default_vote(labelings + [seed_labels], marks + [True])
    out["closest by NMI"] = closest(labelings, weights, out["default"], normalized_mutual_info_score)
    out["closest by ARI"] = closest(labelings, weights, out["default"], adjusted_rand_score)
    return out


def replay(path: Path, record: dict) -> dict | None:
    """One run's row: each variant's ACC, the best candidate's and the run's own."""
    from conr.ops.metrics import evaluate

    with np.load(path) as z:
        truth = z["truth"]
        end = {str(n): lab.astype(np.int64) for n, lab in zip(z["names"], z["labels"])}
        warm = ({str(n): lab.astype(np.int64) for n, lab in zip(z["seed_names"], z["seed_labels"])}
                if "seed_names" in z.files else {})
    scored = truth >= 0
    end = {n: lab for n, lab in end.items() if not n.startswith("consensus/") and not n.endswith("/" + WARMUP)}
    if len(end) < 2 or not scored.any():
        return None
    chosen = next((c["name"] for c in record.get("seed_candidates") or [] if c.get("chosen")), None)
    voters = [warm[n] for n in WARMUP_VOTERS if n in warm]
    made = variants(end, voters, warm.get(chosen), int(record["k"]), int(record["seed"]))

    def acc(lab) -> float:
        return round(float(evaluate(truth[scored], lab[scored])["acc"]), 4)

    return {"set": record["dataset"], "row": "byol" if record["row"] == "byol" else "conr", "seed": int(record["seed"]),
            "own": record["acc"], "best": max(acc(lab) for lab in [*end.values(), *voters]),
            **{name: acc(lab) for name, lab in made.items()}}


def table(rows: list[dict]) -> list[str]:
    """Mean ACC of each variant by set and method (over the seeds both methods have), and how many
    sets CoNR is at least level with BYOL on under each."""
    cells = defaultdict(dict)
    for r in rows:
        cells[(r["set"], r["row"])][r["seed"]] = r
    sets = sorted({s for s, _ in cells})
    lines = ["| set | method | seeds | " + " | ".join(VARIANTS) + " | best candidate |",
             "|---|---|---|" + "---|" * (len(VARIANTS) + 1)]
    level = {v: 0 for v in VARIANTS}
    for name in sets:
        seeds = sorted(set(cells[(name, "conr")]) & set(cells[(name, "byol")]))
        if not seeds:
            continue
        means = {}
        for method in ("byol", "conr"):
            got = [cells[(name, method)][s] for s in seeds]
            means[method] = {v: float(np.mean([r.get(v, r["default"]) for r in got])) for v in (*VARIANTS, "best")}
            lines.append(f"| {name} | {method} | {len(seeds)} | "
                         + " | ".join(f"{means[method][v]:.3f}" for v in (*VARIANTS, "best")) + " |")
        for v in VARIANTS:
            level[v] += means["conr"][v] >= means["byol"][v]
    lines += ["", "| variant | sets where CoNR ≥ BYOL alone |", "|---|---|"]
    lines += [f"| {v} | {level[v]} of {len(sets)} |" for v in VARIANTS]
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", type=Path, help="suite folders with the byol and CoNR rows' labels files")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    rows = replayed(suite_runs(args.folders), replay)
    if not rows:
        raise SystemExit(f"no run in {[str(f) for f in args.folders]} kept its candidates' labels: run the suite")
    shown = " ".join(str(f.resolve().relative_to(ROOT)) if f.resolve().is_relative_to(ROOT) else str(f)
                     for f in args.folders)
    lines = ["# Other label-only endings, CoNR and BYOL alone side by side (mean ACC)", "",
             f"`python benchmarks/vote_witnesses.py {shown}` (docstring)", "", *table(rows)]
    write_results(args.out, lines, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
