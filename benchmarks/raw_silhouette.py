"""Judged in the representations themselves instead of their UMAP layouts: would a silhouette
taken in the raw spaces (cosine, the features' and the input's), or the share of each row's
nearest neighbours that share its cluster, keep a better partition than the default rule?

Every rule of conr/cluster/policy.py reads silhouettes in UMAP embeddings, where a partition
made by UMAP + GMM finds the clumps it was fitted to. A silhouette in the raw space has the
opposite lean (k-means minimises the same distances), and the neighbours' share leans to the
partitions that cut the fewest k-NN links (spectral clustering). This replays both on the
features of whole default runs that ``benchmarks/joint_union.py`` keeps
(benchmarks/.cache/joint_union/*.npz): the final stage made as the run makes it (the training's
k-means given, three UMAP layouts a consensus) at stage 2's seed and at the end, every candidate
scored each way, the candidate of the highest value taken, with no eligibility or head start.
The labels are read only to score.

    python benchmarks/raw_silhouette.py        # about 12 minutes on 2 cores, CIFAR-10 most of it
    python benchmarks/raw_silhouette.py --tables   # the markdown again from the JSON

Writes benchmarks/results/raw_silhouette.{json,md}. Run it alone.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
OUT = ROOT / "benchmarks" / "results" / "raw_silhouette"
SAMPLE = 4000       # rows a silhouette reads (all of them below this)
NEIGHBORS = 10      # the nearest neighbours the share counts


def nearest(x: np.ndarray, k: int = NEIGHBORS) -> np.ndarray:
    """Each row's ``k`` nearest rows of ``x`` (Euclidean on unit rows), itself left out: [N, k] indices."""
    from sklearn.neighbors import NearestNeighbors

    return NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x, return_distance=False)[:, 1:]


def neighbours_share(neighbours: np.ndarray, labels: np.ndarray) -> float:
    """The share of each row's nearest rows (``neighbours``, from :func:`nearest`) in its own
    cluster, over all rows."""
    return float((labels[neighbours] == labels[:, None]).mean())


def raw_silhouette(x: np.ndarray, labels: np.ndarray) -> float:
    """The silhouette of ``labels`` among unit rows ``x`` (-1 for one cluster)."""
    from sklearn.metrics import silhouette_score

    if len(np.unique(labels)) < 2:
        return -1.0
    return float(silhouette_score(x, labels, sample_size=min(len(x), SAMPLE), random_state=0))


def tables(path: Path) -> dict:
    """Every candidate of a kept run, at the seed and at the end: its ACC, whether the default
    rule chose it, and its raw silhouette and neighbours' share in each representation."""
    from joint_union import kept_stage, own_kmeans
    from suite import scores

    from conr.cluster.final import unit_rows

    kept = np.load(path, allow_pickle=True)
    truth, name = kept["truth"], str(kept["input_name"])
    stage = kept_stage(kept)
    given = own_kmeans(kept)
    spaces = {"input": unit_rows(kept["inputs"])}
    neighbours = {"input": nearest(spaces["input"])}   # once for every candidate
    out = {}
    for when in ("seed", "end"):
        chosen, cands = stage.run(kept[when], given={"kmeans": given[when]})
        spaces["features"] = unit_rows(kept[when])
        neighbours["features"] = nearest(spaces["features"])
        out[when] = [{"name": c.name, "representation": "input" if c.representation == name else c.representation,
                      "acc": round(scores(truth, c.labels)["acc"], 4), "chosen": c is chosen,
                      "silhouette": {s: round(raw_silhouette(x, c.labels), 4) for s, x in spaces.items()},
                      "neighbours": {s: round(neighbours_share(idx, c.labels), 4) for s, idx in neighbours.items()}}
                     for c in cands]
        print(f"{path.stem} {when}: chose {chosen.name}", flush=True)
    return out


def away(c: dict, values: dict) -> float:
    """A value taken only in the other representation's space (both for the joint candidate)."""
    other = {"features": "input", "input": "features"}.get(c["representation"])
    return values[other] if other else statistics.mean(values.values())


RULES = {
    "default (`away`, as the stage chose)": lambda c: float(c["chosen"]),
    "raw silhouette, the features' space": lambda c: c["silhouette"]["features"],
    "raw silhouette, the input's space": lambda c: c["silhouette"]["input"],
    "raw silhouette, mean of both": lambda c: statistics.mean(c["silhouette"].values()),
    "raw silhouette, away": lambda c: away(c, c["silhouette"]),
    "neighbours' share, mean of both": lambda c: statistics.mean(c["neighbours"].values()),
    "neighbours' share, away": lambda c: away(c, c["neighbours"]),
}


def choices(results: dict) -> tuple[dict, list[str]]:
    """Each rule's pick in every table: {rule: [(ACC, within 0.01 of the table's best)]}, and the
    markdown rows (run, when, each rule's pick, the best candidate)."""
    picks, rows = {rule: [] for rule in RULES}, []
    for key, by_when in sorted(results.items()):
        for when, table in by_when.items():
            best = max(table, key=lambda c: c["acc"])
            cells = []
            for rule, value in RULES.items():
                c = max(table, key=value)
                picks[rule].append((c["acc"], round(best["acc"] - c["acc"], 4) <= 0.01))
                cells.append(f"{c['acc']:.3f} {c['name']}")
            rows.append(f"| {key} | {when} | " + " | ".join(cells) + f" | {best['acc']:.3f} {best['name']} |")
    return picks, rows


def write(results: dict) -> None:
    from joint_union import write_results

    picks, rows = choices(results)
    lines = ["# Judged in the representations themselves", "", "`python benchmarks/raw_silhouette.py` (docstring). "
             "ACC of the candidate each rule takes (its name), the best candidate's last.", "",
             "| run | when | " + " | ".join(RULES) + " | best candidate |", "|---|---|" + "---|" * (len(RULES) + 1),
             *rows]
    best_mean = statistics.mean(max(c["acc"] for c in t) for r in results.values() for t in r.values())
    lines += ["", "| rule | mean ACC | within 0.01 of the best candidate |", "|---|---|---|"]
    lines += [f"| {rule} | {statistics.mean(a for a, _ in got):.3f} | {sum(w for _, w in got)} of {len(got)} |"
              for rule, got in picks.items()]
    lines.append(f"| best candidate (labels) | {best_mean:.3f} | all |")
    write_results(OUT, results, lines)


def main(argv=None) -> int:
    from joint_union import kept_runs

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="*", default=None, help="names under benchmarks/.cache/joint_union (default: all)")
    p.add_argument("--tables", action="store_true", help="only write the markdown again from the JSON")
    a = p.parse_args(argv)
    if a.tables:
        write(json.loads(OUT.with_suffix(".json").read_text()))
        return 0
    paths = kept_runs(a.runs)
    if not paths:
        return 1
    write({path.stem: tables(path) for path in paths})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
