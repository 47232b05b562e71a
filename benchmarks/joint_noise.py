"""Where the joint candidate's spread comes from: the weight of the two graphs, or the layouts?

On weak features the chosen partition (``umap_gmm/joint``) moves by several points of ACC from
one run to the next at a steady NMI, so a 3-seed comparison cannot separate effects under a few
points. Two ways to read the features' and the input's graphs more steadily were open:

* **the weight** of the fuzzy intersection (``conr.cluster.manifold.intersect_graphs``'s mix weight;
  0.5, both graphs alike, is what the stage uses): under 0.5 the features' graph counts more, a
  link the input lacks is weakened instead of dropped; over 0.5 the input counts more;
* **more layouts**: a consensus of 1, 3 or 5 UMAP layouts of the same graph, each from three
  seeds of the stage, so the spread between seeds is measured at each count.

Both are replayed on the end features of the whole default runs that ``benchmarks/joint_union.py``
keeps (benchmarks/.cache/joint_union/*.npz), with the mixture starts a run gives the candidate
(the features' and the input's k-means and spectral partitions); the labels are read only to
score (ACC).

    python benchmarks/joint_noise.py                       # the 8 kept runs under 10,000 rows, ~20 min
    python benchmarks/joint_noise.py --runs cifar10-encoder-seed-0   # 10,000 rows: far longer

Writes benchmarks/results/joint_noise.{json,md}. Run it alone.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
OUT = ROOT / "benchmarks" / "results" / "joint_noise"
WEIGHTS = (0.65, 0.5, 0.35, 0.2, 0.1)
LAYOUTS = (1, 3, 5)
SEEDS = (0, 1, 2)
LARGE = 5000   # rows above which a kept run is left out unless named (CIFAR-10: 10,000 rows)


def replay(path: Path) -> dict:
    """The joint candidate's ACC on the run kept at ``path``: by weight (3 layouts, seed 0) and by
    layouts and seed (weight 0.5); the run's best candidate beside them."""
    from joint_union import kept_stage, own_kmeans, view_graphs
    from suite import scores

    from conr.cluster.final import FinalStage, unit_rows
    from conr.cluster.manifold import graph_umap_gmm_consensus, intersect_graphs

    kept = dict(np.load(path, allow_pickle=False))
    truth, k, inputs, name = kept["truth"], int(kept["k"]), kept["inputs"], str(kept["input_name"])
    _, cands = kept_stage(kept).run(kept["end"], given={"kmeans": own_kmeans(kept, whens=("end",))["end"]})
    starts = [c.labels for c in cands if c.algorithm != "umap_gmm"]   # as the run's stage gives them

    def acc(labels) -> float:
        return round(float(scores(truth, labels)["acc"]), 4)

    feats = unit_rows(kept["end"])
    _, g_feats, g_input = view_graphs(feats, inputs, k)
    by_weight = {str(w): acc(graph_umap_gmm_consensus(intersect_graphs(g_feats, g_input, w), k, 0, runs=3,
                                                      starts=starts).labels) for w in WEIGHTS}
    by_layouts = {f"{n}/{s}": acc(FinalStage(inputs, k, seed=s, consensus_runs=n, input_name=name)
                                  .joint_candidate(feats, starts).labels) for n in LAYOUTS for s in SEEDS}
    scored = {c.name: acc(c.labels) for c in cands}
    best = max(scored, key=scored.get)
    return {"run": path.stem, "n": int(len(truth)), "k": k, "by_weight": by_weight, "by_layouts": by_layouts,
            "best": scored[best], "best_name": best}


def table(rows: list[dict]) -> list[str]:
    """The markdown of the two replays, a run a row, with the means."""
    lines = ["Where the joint candidate's spread comes from (`python benchmarks/joint_noise.py`): ACC of "
             "`umap_gmm/joint` on the end features of the runs `benchmarks/joint_union.py` keeps.", "",
             "By the intersection's weight (under 0.5 the features' graph counts more; 3 layouts, seed 0):", "",
             "| run | " + " | ".join(f"w {w}" for w in WEIGHTS) + " | best candidate |",
             "|---|" + "---|" * (len(WEIGHTS) + 1)]
    for r in rows:
        lines.append(f"| {r['run']} | " + " | ".join(f"{r['by_weight'][str(w)]:.3f}" for w in WEIGHTS)
                     + f" | {r['best']:.3f} ({r['best_name']}) |")
    lines.append("| mean | " + " | ".join(f"{np.mean([r['by_weight'][str(w)] for r in rows]):.3f}" for w in WEIGHTS)
                 + f" | {np.mean([r['best'] for r in rows]):.3f} |")
    lines += ["", "By the layouts of the consensus (weight 0.5, as the stage makes it): the mean over the "
              "stage's seeds " + ", ".join(map(str, SEEDS)) + " and, after the slash, their range (max - min):", "",
              "| run | " + " | ".join(f"{n} layout{'s' if n > 1 else ''}" for n in LAYOUTS) + " |",
              "|---|" + "---|" * len(LAYOUTS)]
    spread = {n: [] for n in LAYOUTS}
    for r in rows:
        cells = []
        for n in LAYOUTS:
            got = [r["by_layouts"][f"{n}/{s}"] for s in SEEDS]
            spread[n].append(max(got) - min(got))
            cells.append(f"{np.mean(got):.3f} / {max(got) - min(got):.3f}")
        lines.append(f"| {r['run']} | " + " | ".join(cells) + " |")
    lines.append("| mean | " + " | ".join(
        f"{np.mean([r['by_layouts'][f'{n}/{s}'] for r in rows for s in SEEDS]):.3f} / {np.mean(spread[n]):.3f}"
        for n in LAYOUTS) + " |")
    return lines


def main(argv=None) -> int:
    from joint_union import kept_runs, replay_each, write_results

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", help="kept runs by name (default: all under %d rows)" % LARGE)
    a = p.parse_args(argv)
    paths = kept_runs(a.runs)
    if not a.runs:
        paths = [q for q in paths if len(np.load(q, allow_pickle=False)["truth"]) <= LARGE]
    if not paths:
        return 1
    rows = replay_each(paths, replay)
    command = "python benchmarks/joint_noise.py" + (" --runs " + " ".join(a.runs) if a.runs else "")
    write_results(OUT, {"command": command, "weights": WEIGHTS, "layouts": LAYOUTS, "seeds": SEEDS, "runs": rows},
                  table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
