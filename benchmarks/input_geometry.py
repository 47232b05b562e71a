"""The encoder's features in the final stage: by direction or as they come, on the same trained
features.

Reads the features ``benchmarks/joint_union.py`` keeps of whole default runs on the encoder path
(benchmarks/.cache/joint_union/*-encoder-*.npz, made while the stage read the encoder by
direction). For each run the embedded encoder's features of the same folder are read back from
conr's feature cache (extracted once where missing), and the final stage is made on the end's
features as the run made it (its seed, the training's k-means given, three UMAP layouts a
consensus, the default rule) with the encoder's rows read three ways:

* ``directions``: square root, unit rows, PCA 50 (``cluster.input_geometry=directions``; the
  default from 2026-12-03 until this measurement and the whole runs after it);
* ``as_given``: PCA 50 of the raw pooled activations (the default since 2026-12-05);
* ``joint_as_given``: the candidates by direction, only the joint candidate's graph from the
  rows as they come (``FinalStage(joint_inputs=...)``).

Only the input's reading changes: the head's features, the stage's seed and its rule are the
same, so this separates the reading from the length of the training, which whole runs mix
(docs/results.md, "Held-back photo folders in the suite"). The labels are read only to score.

    python benchmarks/input_geometry.py          # about 23 minutes on 2 cores, CIFAR-10 most of it
    python benchmarks/input_geometry.py --tables # the markdown again from the JSON

Writes benchmarks/results/input_geometry.{json,md}. Run it alone.
"""
from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
OUT = ROOT / "benchmarks" / "results" / "input_geometry"
GEOMETRIES = ("directions", "as_given", "joint_as_given")   # the docstring's three readings


@functools.lru_cache(maxsize=None)   # both seeds of a set read the same features
def encoder_rows(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The embedded encoder's raw features of the set ``name`` (a suite set) and its labels."""
    import suite

    from conr.auto.photos import photo_data
    from conr.encoders import DEFAULT_ENCODER, load_encoder

    folder = suite.DATASETS[name][0]
    if name in suite.HELD_BACK:
        import heldout_photos
        folder = heldout_photos.folder(name, suite.HELD_BACK_ROOT)
    data = photo_data(str(folder), load_encoder(DEFAULT_ENCODER), log=lambda *a: None)
    return data.images.numpy(), data.labels.numpy()


def replay(path: Path) -> dict:
    """The final stage on a kept run's end features with the input read each way, with the run's
    seed (as the run made its stage): per geometry the chosen candidate and every candidate's ACC."""
    from joint_union import own_kmeans
    from suite import scores

    from conr.cluster.final import FinalStage
    from conr.cluster.stage import input_rows
    from conr.data.vectors import VectorData

    import torch

    kept = np.load(path, allow_pickle=True)
    seed = int(path.stem.rsplit("-", 1)[1])
    k, truth = int(kept["k"]), kept["truth"]
    raw, labels = encoder_rows(path.stem.split("-encoder-")[0])
    if not np.array_equal(labels, truth):
        raise SystemExit(f"{path.stem}: the folder's labels are not the kept run's; was the folder made again?")
    data = VectorData(images=torch.from_numpy(raw), labels=torch.as_tensor(labels), representation="encoder")
    given = {"kmeans": own_kmeans(kept, ("end",))["end"]}
    rows = {g: input_rows(data, seed, g) for g in ("directions", "as_given")}
    if not np.allclose(rows["directions"], kept["inputs"], atol=1e-4):
        raise SystemExit(f"{path.stem}: the rows by direction are not the kept run's input")
    out = {}
    for geometry in GEOMETRIES:
        inputs = rows["as_given" if geometry == "as_given" else "directions"]
        joint_inputs = rows["as_given"] if geometry == "joint_as_given" else None
        stage = FinalStage(inputs, k, seed=seed, input_name="encoder", consensus_runs=3, joint_inputs=joint_inputs)
        stage.prepare()
        chosen, cands = stage.run(kept["end"], given=given)
        acc = {c.name: round(scores(truth, c.labels)["acc"], 4) for c in cands}
        joint = next(c for c in cands if c.name == "umap_gmm/joint")
        out[geometry] = {"chosen": chosen.name, "acc": acc, "shared": round(float(joint.shared), 3)}
        print(f"{path.stem} {geometry}: chose {chosen.name} {acc[chosen.name]:.3f}, best {max(acc.values()):.3f}, "
              f"joint {acc['umap_gmm/joint']:.3f}", flush=True)
    return out


def write(runs: dict) -> None:
    from joint_union import write_results

    names = {"directions": "by direction (default until 2026-12-05)", "as_given": "as they come",
             "joint_as_given": "candidates by direction, joint graph as they come"}
    lines = ["# The encoder's features in the final stage: by direction or as they come", "",
             "`python benchmarks/input_geometry.py` (docstring). ACC on the end's features of each kept run; only the "
             "input's geometry differs. Per way: the chosen candidate (all chose `umap_gmm/joint` unless named), the "
             "encoder's own UMAP + GMM, the share of a point's neighbours the features and the joint graph's input "
             "hold in common.", "",
             "| run | " + " | ".join(f"{names[g]}: chosen / encoder / shared" for g in GEOMETRIES) + " | best candidate |",
             "|---|" + "---|" * (len(GEOMETRIES) + 1)]
    chosen = {g: [] for g in GEOMETRIES}
    encoder = {g: [] for g in GEOMETRIES}
    best = []
    for name, r in sorted(runs.items()):
        cells = []
        for g in GEOMETRIES:
            d = r[g]
            chosen[g].append(d["acc"][d["chosen"]])
            encoder[g].append(d["acc"]["umap_gmm/encoder"])
            other = "" if d["chosen"] == "umap_gmm/joint" else f" ({d['chosen']})"
            cells.append(f"{chosen[g][-1]:.3f}{other} / {encoder[g][-1]:.3f} / {d.get('shared', float('nan')):.2f}")
        best.append(max(v for g in GEOMETRIES for v in r[g]["acc"].values()))
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {best[-1]:.3f} |")
    lines.append("| **mean** | " + " | ".join(f"**{statistics.mean(chosen[g]):.3f}** / {statistics.mean(encoder[g]):.3f}"
                                            for g in GEOMETRIES) + f" | {statistics.mean(best):.3f} |")
    write_results(OUT, runs, lines)


def main(argv=None) -> int:
    from joint_union import kept_runs

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="*", default=None, help="names under benchmarks/.cache/joint_union (default: "
                                                          "every encoder-path run)")
    p.add_argument("--tables", action="store_true", help="only write the markdown again from the JSON")
    a = p.parse_args(argv)
    if a.tables:
        write(json.loads(OUT.with_suffix(".json").read_text()))
        return 0
    paths = [p for p in kept_runs(a.runs) if "-encoder-" in p.stem]
    if not paths:
        return 1
    write({path.stem: replay(path) for path in paths})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
