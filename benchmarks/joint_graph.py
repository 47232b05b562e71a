"""How the joint candidate should combine two representations: the fuzzy intersection of
their neighbour graphs (what conr does) or one graph of the two side by side.

The joint candidate (conr/cluster/final.py) is UMAP + GMM on the fuzzy intersection of the
learned features' and the input's neighbour graphs. A hand-made case in
tests/test_final_stage.py (four groups, each view merging a different pair, independent
noise in each view) defeats it: its two graphs share few links, the intersection falls
apart into pieces, and the joint candidate keeps a pair merged. Concatenating the two
representations (each centred and scaled to unit mean row norm) solves that case. This
script asks which of the two combines *real* representations better, with no training:
the embedded encoder's features (read by direction, as the final stage reads them:
conr/encoders/directions.py) and the raw pixels (through PCA where wide), on every open set,
UMAP + GMM (one layout, conr's neighbourhood and dimensions) on each view alone, on their
graphs' intersection, on their concatenation, and the way conr takes: the intersection where
the two views share at least conr.cluster.policy.JOINT_MIN_SHARED of a point's neighbours,
the concatenation below. The table gives that fraction (``shared``) too.

    python benchmarks/joint_graph.py                   # digits, COIL-20, ORL, CIFAR-10 (5,000 of its images)

Writes benchmarks/results/joint_graph.{json,md}.
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
WAYS = ("encoder alone", "pixels alone", "graph intersection", "concatenation", "by shared links (conr)")


def main(argv=None) -> int:
    from encoder_input import accuracy, arguments, open_sets, write

    from conr.cluster.manifold import (exact_neighbors, fuzzy_graph, graph_umap_gmm_consensus, intersect_graphs,
                                       pixel_vectors, shared_neighbors, side_by_side, umap_gmm_consensus,
                                       umap_neighbors)
    from conr.cluster.policy import joint_way
    from conr.encoders.directions import feature_directions

    args = arguments(__doc__, argv, seeds=range(3))
    out = []
    for name, k, enc, y, px in open_sets(args, with_pixels=True):
        nn = umap_neighbors(len(y), k)
        accs, shared = {w: [] for w in WAYS}, []
        start = time.perf_counter()
        for seed in args.seeds:
            a = pixel_vectors(feature_directions(enc), seed=seed, scale=False)
            b = pixel_vectors(px, seed=seed, scale=False)
            na, nb = exact_neighbors(a, nn), exact_neighbors(b, nn)
            shared.append(round(shared_neighbors(na[0], nb[0]), 4))
            graph = intersect_graphs(fuzzy_graph(a, nn, seed, neighbors=na), fuzzy_graph(b, nn, seed, neighbors=nb))
            made = {"encoder alone": umap_gmm_consensus(a, k, seed, nn, runs=1).labels,
                    "pixels alone": umap_gmm_consensus(b, k, seed, nn, runs=1).labels,
                    "graph intersection": graph_umap_gmm_consensus(graph, k, seed, runs=1).labels,
                    "concatenation": umap_gmm_consensus(side_by_side(a, b), k, seed, nn, runs=1).labels}
            made["by shared links (conr)"] = made["graph intersection" if joint_way(shared[-1]) == "intersection"
                                                  else "concatenation"]
            for w, pred in made.items():
                accs[w].append(accuracy(y, pred))
        for w in WAYS:
            row = {"dataset": name, "rows": len(y), "k": k, "way": w, "acc": accs[w],
                   "mean": round(statistics.mean(accs[w]), 4), "shared": shared}
            out.append(row)
            print(json.dumps(row), flush=True)
        print(f"{name}: {time.perf_counter() - start:.0f} s", flush=True)
    lines = ["| dataset | shared | " + " | ".join(WAYS) + " |", "|---|---|" + "---|" * len(WAYS)]
    for name in dict.fromkeys(r["dataset"] for r in out):
        means = {r["way"]: r["mean"] for r in out if r["dataset"] == name}
        frac = statistics.mean(next(r["shared"] for r in out if r["dataset"] == name))
        lines.append(f"| {name} | {frac:.2f} | " + " | ".join(f"{means[w]:.3f}" for w in WAYS) + " |")
    write("joint_graph", out, "Two real representations (the encoder's features, the raw pixels) combined for "
          f"UMAP + GMM, ACC, mean of seeds {', '.join(map(str, args.seeds))} (`python benchmarks/joint_graph.py`).",
          lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
