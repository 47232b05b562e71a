"""How the final stage should read an encoder's features: as they are, or by direction.

On the photo path the final stage's input is the embedded encoder's features (1,280 values
an image); wide rows go through PCA to 50 dimensions before UMAP. This script clusters
those features with the final stage's UMAP + GMM (one layout, conr's neighbourhood and
dimensions) after five preparations, several seeds each, on every open set, and reports
ACC against the class folders:

* ``as given, PCA``: the rows as the encoder gave them, then PCA (the first rule, and the
  rule again since 2026-12-05, after whole runs: conr.cluster.stage.input_rows);
* ``unit, PCA``: unit rows, then PCA (the second rule, for part of 2026-12-03);
* ``unit``: unit rows, no PCA;
* ``PCA, unit``: PCA, then unit rows;
* ``root, unit, PCA``: square roots (the values are non-negative pooled activations), unit
  rows, PCA: the space CoNR's vector views search their neighbours in, and the rule from
  2026-12-03 to 2026-12-05 (conr/encoders/directions.py; ``cluster.input_geometry=directions``).

    python benchmarks/encoder_input.py                 # digits, COIL-20, ORL, CIFAR-10 (5,000 of its images)
    python benchmarks/encoder_input.py --datasets orl --seeds 0 1 2

Writes benchmarks/results/encoder_input.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
RESULTS = ROOT / "benchmarks" / "results"
MAX_ROWS = 5000   # CIFAR-10's 10,000 images: a fixed random half, so that a seed takes seconds


def preparations():
    from conr.cluster.final import unit_rows
    from conr.cluster.manifold import pixel_vectors
    from conr.encoders.directions import feature_directions

    return {
        "as given, PCA": lambda x, s: pixel_vectors(x, seed=s, scale=False),
        "unit, PCA": lambda x, s: pixel_vectors(unit_rows(x), seed=s, scale=False),
        "unit": lambda x, s: unit_rows(x),
        "PCA, unit": lambda x, s: unit_rows(pixel_vectors(x, seed=s, scale=False)),
        "root, unit, PCA": lambda x, s: pixel_vectors(feature_directions(x), seed=s, scale=False),
    }


def arguments(doc: str, argv, seeds, extra=None) -> argparse.Namespace:
    """The open sets, seeds and cache folder of a script of this kind (joint_graph.py too);
    ``extra(parser)`` adds a script's own options."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=["digits", "coil20", "orl", "cifar10"])
    p.add_argument("--seeds", type=int, nargs="+", default=list(seeds))
    p.add_argument("--cache", type=Path, default=ROOT / "benchmarks" / ".cache")
    if extra is not None:
        extra(p)
    return p.parse_args(argv)


def open_set(name: str, cache: Path, with_pixels: bool = False):
    """(K, the encoder's features, the labels, the raw pixels or None) of the open set
    ``name``, at most :data:`MAX_ROWS` of its images (a fixed random choice); None where the
    set is missing (suite.py prints why)."""
    import suite

    found = suite.dataset_folder(name, cache)
    if found is None:
        return None
    folder, k = found
    x, y = suite.encoder_features(folder, cache)
    px = None
    if with_pixels:
        px, y_px = suite.pixels(folder)
        if not np.array_equal(y, y_px):
            raise RuntimeError(f"{name}: the encoder's rows and the pixels' are in different orders")
    if len(y) > MAX_ROWS:
        keep = np.random.default_rng(0).choice(len(y), MAX_ROWS, replace=False)
        x, y, px = x[keep], y[keep], None if px is None else px[keep]
    return k, x, y, px


def open_sets(args, with_pixels: bool = False):
    """(name, K, the encoder's features, the labels, the pixels or None) of each of
    ``args.datasets`` that is present (:func:`open_set`)."""
    for name in args.datasets:
        found = open_set(name, args.cache, with_pixels=with_pixels)
        if found is not None:
            yield (name, *found)


def accuracy(y, pred) -> float:
    import torch

    from conr.ops.metrics import evaluate

    return round(float(evaluate(torch.as_tensor(y), torch.as_tensor(pred))["acc"]), 4)


def untrained_views(args):
    """(set, K, seed, labels, the encoder's unit directions, the pixels' vectors) for every
    open set and seed of ``args``: the two representations the final stage has with no
    training (the rule benchmarks: stability_rule.py, away_rule.py). Prints each set's time."""
    from conr.cluster.final import unit_rows
    from conr.cluster.manifold import pixel_vectors
    from conr.encoders.directions import feature_directions

    for name, k, enc, y, px in open_sets(args, with_pixels=True):
        start = time.perf_counter()
        for seed in args.seeds:
            yield name, k, seed, y, unit_rows(feature_directions(enc)), pixel_vectors(px, seed=seed, scale=False)
        print(f"{name}: {time.perf_counter() - start:.0f} s", flush=True)


def record_picks(out: list, name: str, seed: int, y, rows: list[dict], picks: dict) -> None:
    """Append (and print) one run of a rule benchmark: its candidates' ``rows`` and each
    chooser's pick ({chooser: row with "name" and "acc"})."""
    run = {"dataset": name, "seed": seed, "rows": len(y), "candidates": rows,
           "picks": {w: {"name": p["name"], "acc": p["acc"]} for w, p in picks.items()}}
    out.append(run)
    print(json.dumps(run), flush=True)


def picks_table(out: list, choosers) -> list[str]:
    """Markdown rows: per set, each chooser's mean ACC over the seeds and the candidates it
    took (``run["picks"][chooser]`` = {"name", "acc"}); then how many runs each chooser keeps
    within 0.01 ACC of the run's ``best``."""
    lines = ["| dataset | " + " | ".join(choosers) + " |", "|---|" + "---|" * len(choosers)]
    for name in dict.fromkeys(r["dataset"] for r in out):
        runs = [r for r in out if r["dataset"] == name]
        cells = [f"{statistics.mean(r['picks'][w]['acc'] for r in runs):.3f} "
                 f"({', '.join(sorted({r['picks'][w]['name'] for r in runs}))})" for w in choosers]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    within = {w: sum(r["picks"]["best"]["acc"] - r["picks"][w]["acc"] <= 0.01 for r in out) for w in choosers}
    return lines + ["", "Runs within 0.01 ACC of their best candidate: "
                    + ", ".join(f"{w} {within[w]} of {len(out)}" for w in choosers if w != "best") + "."]


def write(stem: str, out: list, title: str, lines: list[str]) -> None:
    """results/STEM.json (the rows) and results/STEM.md (``title``, then the table's
    ``lines``), atomically; the table printed."""
    from conr.io import atomic_write_text

    md = title + "\n\n" + "\n".join(lines) + "\n"
    atomic_write_text(RESULTS / f"{stem}.json", json.dumps(out, indent=1) + "\n")
    atomic_write_text(RESULTS / f"{stem}.md", md)
    print(md)


def main(argv=None) -> int:
    from conr.cluster.manifold import umap_gmm_consensus, umap_neighbors

    args = arguments(__doc__, argv, seeds=range(5))
    out = []
    for name in args.datasets:
        found = open_set(name, args.cache)
        if found is None:
            continue
        k, x, y, _ = found
        nn = umap_neighbors(len(y), k)
        for prep, make in preparations().items():
            accs = []
            start = time.perf_counter()
            for seed in args.seeds:
                accs.append(accuracy(y, umap_gmm_consensus(make(x, seed), k, seed, nn, runs=1).labels))
            row = {"dataset": name, "rows": len(y), "k": k, "preparation": prep, "acc": accs,
                   "mean": round(statistics.mean(accs), 4), "seconds": round(time.perf_counter() - start, 1)}
            out.append(row)
            print(json.dumps(row), flush=True)
    lines = ["| dataset | preparation | ACC, mean | ACC per seed |", "|---|---|---|---|"]
    for r in out:
        lines.append(f"| {r['dataset']} | {r['preparation']} | {r['mean']:.3f} | "
                     f"{', '.join(f'{a:.3f}' for a in r['acc'])} |")
    write("encoder_input", out, "UMAP + GMM of the embedded encoder's features, five preparations "
          f"(`python benchmarks/encoder_input.py`, seeds {', '.join(map(str, args.seeds))}).", lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
