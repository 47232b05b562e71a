"""Stage 2's seed at the end: would the final stage keep the partition it chose at stage 2's
seed, were it one more candidate at the end?

Reads the features that ``benchmarks/joint_union.py`` keeps of whole default runs
(benchmarks/.cache/joint_union/*.npz: the warm-up's at stage 2's seed, the end's, the input
rows, the labels to score). On each, the final stage is made as the run makes it (the input's
candidates, the features' k-means given, three UMAP layouts): once on the seed's features, whose
choice becomes the extra candidate ``<algorithm>/stage2_seed`` of a second pass on the end's
features. Its silhouettes are taken in every embedding, as the joint candidate's are, under the
default rule. The labels are read only to score.

    python benchmarks/joint_union.py --sets cifar10 coil20 orl photos10x200 photos6x500 --seeds 0 --layouts 3
    python benchmarks/seed_at_end.py            # about 8 minutes on 2 cores, CIFAR-10 most of it

Writes benchmarks/results/seed_at_end.{json,md}.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
OUT = ROOT / "benchmarks" / "results" / "seed_at_end"


def replay(path: Path) -> dict:
    """The seed's choice and the end's, with the seed's choice competing at the end."""
    from joint_union import kept_stage, own_kmeans
    from suite import scores

    from conr.cluster.final import Candidate

    kept = np.load(path, allow_pickle=True)
    truth = kept["truth"]

    def acc(labels) -> float:
        return round(scores(truth, labels)["acc"], 4)

    stage = kept_stage(kept)
    given = own_kmeans(kept)
    at_seed, _ = stage.run(kept["seed"], given={"kmeans": given["seed"]})
    extra = Candidate(at_seed.algorithm, "stage2_seed", at_seed.labels)
    at_end, cands = stage.run(kept["end"], given={"kmeans": given["end"]}, extra=[extra])
    return {"seed_choice": at_seed.name, "seed_acc": acc(at_seed.labels), "end_choice": at_end.name,
            "end_acc": acc(at_end.labels), "rule": stage.rule,
            "table": [{"name": c.name, "acc": acc(c.labels), "score": round(c.scores[stage.rule], 4),
                       "silhouette_in": {e: round(v, 4) for e, v in c.silhouettes.items()}} for c in cands]}


def silhouettes(cand: dict | None) -> str:
    """A table row's silhouettes, embedding by embedding ("–" for no candidate)."""
    return " / ".join(f"{v:.3f}" for v in cand["silhouette_in"].values()) if cand else "–"


def write(results: dict) -> None:
    from joint_union import write_results

    lines = ["# Stage 2's seed at the end", "", "`python benchmarks/seed_at_end.py` (docstring). ACC; silhouettes "
             "in the end features' / the input's embedding.", "",
             "| run | seed's choice | end's choice (the seed's competing) | seed's silhouettes | "
             "end joint's silhouettes |", "|---|---|---|---|---|"]
    for key, r in sorted(results.items()):
        seed = next(c for c in r["table"] if c["name"].endswith("/stage2_seed"))
        joint = next((c for c in r["table"] if c["name"] == "umap_gmm/joint"), None)
        lines.append(f"| {key} | {r['seed_acc']:.3f} {r['seed_choice']} | {r['end_acc']:.3f} {r['end_choice']} | "
                     f"{silhouettes(seed)} | {silhouettes(joint)} |")
    write_results(OUT, results, lines)


def main(argv=None) -> int:
    from joint_union import kept_runs

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="*", default=None, help="names under benchmarks/.cache/joint_union (default: all)")
    a = p.parse_args(argv)
    paths = kept_runs(a.runs)
    if not paths:
        return 1
    results = {}
    for path in paths:
        results[path.stem] = replay(path)
        print(path.stem, results[path.stem]["seed_acc"], results[path.stem]["end_acc"], flush=True)
    write(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
