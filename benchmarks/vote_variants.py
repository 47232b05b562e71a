"""Other weights for the ending's vote, from the candidates' labels alone, replayed on every kept run.

The default ending weights each candidate's vote by its mean adjusted Rand index with the others,
to the power 4 (``conr.cluster.policy.vote_weights``). Where several candidates share one error
(digits seed 2, 2026-12-06: every UMAP-made candidate cuts the 1s into three) they raise each
other's weight. This script replays, on every kept labels file (benchmarks/results/labels and
variants/*/labels; the consensus candidate of a run is left out of its voters), the default and
label-only alternatives that would weigh such a group down or read another signal:

* ``cluster sizes``: the default weight times the normalised entropy of the candidate's cluster
  sizes, to the power 4 or 16 (a candidate that merges two classes and cuts a third has a less
  even spread);
* ``one vote a family``: the default weight shared among the candidates of one family of algorithms
  (UMAP + GMM with self-labelling, k-means with the carried partition, spectral);
* ``one vote a representation``: shared among the candidates of one representation;
* ``the input's at half`` / ``no input``: the input's candidates (pixels, the encoder's features,
  the user's vectors) at half the weight, or left out (where two others remain);
* ``weights from the vote``: weights from each candidate's adjusted Rand index with the default's
  vote (to the power 4), and the vote made again with them;
* ``the candidate closest to the vote``: a choice, the candidate of the highest adjusted Rand index
  with the default's vote.

The true labels serve only for the scores.

    python benchmarks/vote_variants.py      # about 5 minutes alone (CIFAR-10's 10,000 rows dominate)

Writes benchmarks/results/vote_variants.{md,json}.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from vote_rules import RESULTS, labelled_runs, replayed, write_results  # noqa: E402  (the same kept runs, read the same way)

OUT = RESULTS / "vote_variants"
INPUTS = ("pixels", "encoder", "vectors")
FAMILIES = {"umap_gmm": "manifold", "self_label": "manifold", "seeded_kmeans": "kmeans"}
VARIANTS = ("default", "cluster sizes^4", "cluster sizes^16", "one vote a family", "one vote a representation",
            "the input's at half", "no input", "weights from the vote", "the candidate closest to the vote")


def size_evenness(labels: np.ndarray, k: int) -> float:
    """The entropy of the cluster sizes over log K: 1 for K equal clusters, 0 for one."""
    share = np.bincount(labels, minlength=k) / labels.size
    share = share[share > 0]
    return float(-(share * np.log(share)).sum() / np.log(k)) if k > 1 else 1.0


def shared_weights(weights: np.ndarray, groups: list[str]) -> np.ndarray:
    """Each weight divided by the number of candidates of its group."""
    return weights / np.array([groups.count(g) for g in groups])


def variants(names: list[str], labelings: list[np.ndarray], k: int, seed: int) -> dict[str, np.ndarray]:
    """Each variant's partition of the run."""
    from sklearn.metrics import adjusted_rand_score

    from conr.cluster.consensus import agreement, consensus_partition
    from conr.cluster.policy import vote_weights

    w = np.asarray(vote_weights(agreement(labelings)) or np.ones(len(labelings)))

    def made(weights) -> np.ndarray:
        return consensus_partition(labelings, k, seed=seed, weights=weights)

    base = made(w)
    even = np.array([size_evenness(lab, k) for lab in labelings])
    family = [FAMILIES.get(n.split("/")[0], n.split("/")[0]) for n in names]
    rep = ["self" if n.startswith("self_label") else n.split("/")[-1] for n in names]
    inputs = np.array([r in INPUTS for r in rep])
    to_vote = np.array([adjusted_rand_score(lab, base) for lab in labelings])
    return {"default": base, "cluster sizes^4": made(w * even ** 4), "cluster sizes^16": made(w * even ** 16),
            "one vote a family": made(shared_weights(w, family)),
            "one vote a representation": made(shared_weights(w, rep)),
            "the input's at half": made(w * np.where(inputs, 0.5, 1.0)),
            "no input": made(w * ~inputs) if (~inputs).sum() >= 2 else base,
            "weights from the vote": made(to_vote.clip(0) ** 4),
            "the candidate closest to the vote": labelings[int(np.argmax(to_vote))]}


def replay(path: Path, record: dict | None) -> dict | None:
    from conr.ops.metrics import evaluate

    with np.load(path) as z:
        truth, names, labels = z["truth"], [str(n) for n in z["names"]], z["labels"].astype(np.int64)
    keep = [i for i, n in enumerate(names) if not n.startswith("consensus/")]
    names, labelings = [names[i] for i in keep], [labels[i] for i in keep]
    scored = truth >= 0
    if len(labelings) < 3 or not scored.any():
        return None
    k = int(record["k"]) if record else len(np.unique(truth[scored]))
    seed = int(record["seed"]) if record else 0
    acc = {name: round(float(evaluate(truth[scored], lab[scored])["acc"]), 4)
           for name, lab in variants(names, labelings, k, seed).items()}
    best = max(round(float(evaluate(truth[scored], lab[scored])["acc"]), 4) for lab in labelings)
    return {"run": str(path.relative_to(RESULTS)), "best": best, **acc}


def table(rows: list[dict]) -> list[str]:
    lines = ["| weights | mean ACC | mean gap to the run's best candidate | within 0.01 of it | ahead of the default | behind |",
             "|---|---|---|---|---|---|"]
    for v in VARIANTS:
        gaps = [r["best"] - r[v] for r in rows]
        lines.append(f"| {v} | {np.mean([r[v] for r in rows]):.4f} | {np.mean(gaps):.4f} | "
                     f"{sum(g <= 0.01 for g in gaps)} of {len(rows)} | "
                     f"{sum(r[v] > r['default'] + 0.001 for r in rows)} | {sum(r[v] < r['default'] - 0.001 for r in rows)} |")
    return lines


def main(argv=None) -> int:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    rows = replayed(labelled_runs(), replay)
    lines = ["# Other weights for the ending's vote, replayed on the kept runs", "",
             "`python benchmarks/vote_variants.py` (docstring). ACC; each run weighs the same; ahead / behind: by "
             "more than 0.001.", "", *table(rows)]
    write_results(OUT, lines, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
