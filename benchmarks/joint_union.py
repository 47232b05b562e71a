"""Union or intersection: how the joint candidate should join the features' and the input's
neighbour graphs, judged on the features of whole default runs.

One default run per (set, seed) on its usual path (the embedded encoder, or from scratch with
``--scratch``), keeping the warm-up's features at stage 2's seed and the features at the end.
On each, the final stage is made again as the run makes it (the input's candidates, mixture
starts, the features' k-means given), once with ``cluster.joint_graph=intersection`` and once
with ``union``, from one UMAP layout and from a consensus of three; the table gives the joint
candidate's ACC (labels read only to score) and the fraction of a point's neighbours the two
views share.

    python benchmarks/joint_union.py --sets photos10x200 photos6x500 orl coil20 --seeds 0 1
    python benchmarks/joint_union.py --sets digits --seeds 0 --scratch

Each run's candidate tables (every candidate's ACC and rule values, by graph) go into the
JSON, and its features into benchmarks/.cache/joint_union/ (git-ignored), so that a rule can be
replayed on them without training again. Writes benchmarks/results/joint_union.{json,md} (rows of earlier calls with other sets or
seeds are kept). Held-back sets are made under benchmarks/.cache/heldout on first use. Run it
alone: the runs' budgets are wall time.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
OUT = ROOT / "benchmarks" / "results" / "joint_union"
KEPT = ROOT / "benchmarks" / ".cache" / "joint_union"   # each run's features (git-ignored)


def run_features(name: str, seed: int, scratch: bool) -> dict:
    """A default run on the set ``name``: truth, the input rows the final stage reads, and the
    features at stage 2's seed and at the end."""
    import suite

    import conr
    import conr.cluster.stage as stage

    folder, k, _ = suite.DATASETS[name]
    if name in suite.HELD_BACK:
        import heldout_photos
        folder = heldout_photos.folder(name, suite.HELD_BACK_ROOT)
    folder = folder or suite.digits_folder(ROOT / "benchmarks" / ".cache")
    kept, seed_partition = {}, stage.seed_partition

    def keeping(trainer, feats, *args, **kwargs):  # the first call is stage 2's seed
        if "seed" not in kept:
            kept["seed"] = feats.cpu().numpy()
            kept["inputs"] = stage.final_stage_for(trainer).inputs
        return seed_partition(trainer, feats, *args, **kwargs)

    stage.seed_partition = keeping
    try:
        model = conr.CoNR(n_clusters=k, seed=seed, encoder="none" if scratch else "efficientnet_lite0")
        model.fit(str(folder))
    finally:
        stage.seed_partition = seed_partition
    return {"truth": model.data_.labels.numpy(), "k": k, "end": model.features_, "epochs": model.config_.train.epochs,
            "input_name": "pixels" if scratch else "encoder", **kept}


def own_kmeans(run, whens=("seed", "end")) -> dict:
    """The training's own k-means of the features at stage 2's seed and at the end (``whens``), as
    a run gives it to the final stage: {"seed": labels, "end": labels}. ``run``: a dict or a kept .npz."""
    import torch

    from conr.cluster.kmeans import kmeans

    return {when: kmeans(torch.as_tensor(run[when]), int(run["k"]), n_init=5, seed=0).labels.numpy()
            for when in whens}


def kept_stage(kept, seed: int = 0):
    """The final stage as a kept run makes it (the input's candidates, a consensus of three UMAP
    layouts, the default rule), prepared: what seed_at_end.py, candidate_noise.py and
    raw_silhouette.py replay on."""
    from conr.cluster.final import FinalStage

    stage = FinalStage(kept["inputs"], int(kept["k"]), seed=seed, input_name=str(kept["input_name"]),
                       consensus_runs=3)
    stage.prepare()
    return stage


def compare(run: dict, layout_counts=(1, 3)) -> list[dict]:
    """The joint candidate by each graph, at the seed and at the end, from each of ``layout_counts`` UMAP layouts."""
    from suite import scores

    from conr.cluster.final import FinalStage

    given = own_kmeans(run)   # once for all graphs and layouts
    rows = []
    for layouts in layout_counts:
        for graph in ("intersection", "union"):
            final = FinalStage(run["inputs"], run["k"], seed=0, input_name=run["input_name"],
                               consensus_runs=layouts, joint_graph=graph)
            final.prepare()
            for when in ("seed", "end"):
                _, cands = final.run(run[when], given={"kmeans": given[when]})
                joint = next(c for c in cands if c.name == "umap_gmm/joint")
                table = [{**c.row(), "acc": round(scores(run["truth"], c.labels)["acc"], 4)} for c in cands]
                rows.append({"graph": graph, "layouts": layouts, "when": when, "combined": joint.combined,
                             "shared": round(float(joint.shared), 3),
                             "acc": round(scores(run["truth"], joint.labels)["acc"], 4), "table": table})
    return rows


def away_choices(rows: list[dict], when: str) -> dict | None:
    """ACC of the ``away`` rule's choice at ``when`` on the table made with each graph, and
    with both joint candidates competing (the union's under its own name); the best candidate
    of either table. None where the rows keep no tables (made before they were kept)."""
    from conr.cluster.policy import best_by

    tables = {r["graph"]: r["table"] for r in rows if r["when"] == when and r.get("table")}
    if set(tables) != {"intersection", "union"}:
        return None
    read = dict(representation=lambda c: c["representation"], name=lambda c: c["name"], scores=lambda c: c)

    def score(c, rule):
        return c[rule]

    chosen = {g: best_by(t, "away", score, **read)["acc"] for g, t in tables.items()}
    union = next(c for c in tables["union"] if c["name"] == "umap_gmm/joint")
    both = tables["intersection"] + [{**union, "representation": "joint_union"}]
    picked = best_by(both, "away", score, **read)
    best = max(both, key=lambda c: c["acc"])
    return {**chosen, "both": picked["acc"], "both_took": "union" if picked is both[-1] else picked["name"],
            "best": best["acc"], "best_name": best["name"]}


def choices(results: dict) -> list[str]:
    """The markdown of the ``away`` rule's choices (:func:`away_choices`), run by run."""
    lines = ["", "The `away` rule's choice (ACC) on the same candidates, 3 layouts: with the joint candidate "
             "by each graph, and with both joint candidates competing (what it took); the best candidate.", "",
             "| run | when | intersection | union | both compete | took | best candidate |", "|---|---|---|---|---|---|---|"]
    for key, rows in sorted(results.items()):
        for when in ("seed", "end"):
            c = away_choices(rows, when)
            if c:
                lines.append(f"| {key} | {when} | {c['intersection']:.3f} | {c['union']:.3f} | {c['both']:.3f} | "
                             f"{c['both_took']} | {c['best']:.3f} ({c['best_name']}) |")
    return lines


def write(results: dict) -> None:
    from conr.io import atomic_write_text

    atomic_write_text(OUT.with_suffix(".json"), json.dumps(results, indent=1))
    lines = ["# Union or intersection: the joint candidate on whole runs' features", "",
             "ACC of `umap_gmm/joint`, 1 / 3 UMAP layouts; `python benchmarks/joint_union.py` (docstring).", "",
             "| run | shared (end) | end: intersection | end: union | seed: intersection | seed: union |",
             "|---|---|---|---|---|---|"]
    for key, rows in sorted(results.items()):
        cell = {(r["graph"], r["when"], r["layouts"]): r["acc"] for r in rows}
        shared = next(r["shared"] for r in rows if r["when"] == "end")
        lines.append(f"| {key} | {shared:.2f} | " + " | ".join(
            " / ".join(f"{cell[(g, w, n)]:.3f}" if (g, w, n) in cell else "–" for n in (1, 3))
            for w in ("end", "seed") for g in ("intersection", "union")) + " |")
    lines += choices(results)
    atomic_write_text(OUT.with_suffix(".md"), "\n".join(lines) + "\n")


def kept_runs(names=None) -> list[Path]:
    """The kept runs' feature files (all, or those ``names``), for the scripts that replay them:
    seed_at_end.py, candidate_noise.py, raw_silhouette.py. Empty, with what to run first
    printed, where none is kept."""
    paths = [p for p in sorted(KEPT.glob("*.npz")) if not names or p.stem in names]
    if not paths:
        print(f"no kept features under {KEPT}: run benchmarks/joint_union.py first (docstring)")
    return paths


def view_graphs(feats: np.ndarray, inputs: np.ndarray, k: int, seed: int = 0):
    """The two neighbour graphs the joint candidate joins, as the final stage makes them: UMAP's
    fuzzy graph of the (unit) features and of the input rows, at the stage's neighbourhood for
    ``k`` clusters. Returns (the neighbourhood, the features' graph, the input's graph)."""
    from conr.cluster.manifold import exact_neighbors, fuzzy_graph, umap_neighbors

    nn = umap_neighbors(len(feats), k)
    return (nn, fuzzy_graph(feats, nn, seed, neighbors=exact_neighbors(feats, nn)),
            fuzzy_graph(inputs, nn, seed, neighbors=exact_neighbors(inputs, nn)))


def replay_each(paths: list[Path], replay) -> list:
    """``replay(path)`` of each kept run, each row printed as it comes (a replay takes minutes)."""
    rows = []
    for path in paths:
        rows.append(replay(path))
        print(rows[-1], flush=True)
    return rows


def write_results(out: Path, results, lines: list[str]) -> None:
    """A replay's ``results`` (JSON) and its markdown ``lines`` beside them (out.json, out.md),
    each written whole or not at all; the markdown printed too."""
    from conr.io import atomic_write_text

    atomic_write_text(out.with_suffix(".json"), json.dumps(results, indent=1) + "\n")
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", nargs="+", default=["photos10x200", "photos6x500", "orl", "coil20"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--layouts", nargs="+", type=int, default=[1, 3], help="UMAP layouts of the joint candidate")
    p.add_argument("--scratch", action="store_true", help="train from scratch on the pixels (not the encoder)")
    p.add_argument("--tables", action="store_true", help="only write the markdown again from the JSON")
    a = p.parse_args(argv)
    path = OUT.with_suffix(".json")
    results = json.loads(path.read_text()) if path.exists() else {}
    if a.tables:
        write(results)
        return 0
    for name in a.sets:
        for seed in a.seeds:
            run = run_features(name, seed, a.scratch)
            key = f"{name} {'scratch' if a.scratch else 'encoder'} seed {seed} ({run['epochs']} epochs)"
            KEPT.mkdir(parents=True, exist_ok=True)   # the features, to replay a rule without training again
            np.savez_compressed(KEPT / f"{key.split(' (')[0].replace(' ', '-')}.npz",
                                **{k: np.asarray(v) for k, v in run.items() if k in ("truth", "seed", "end", "inputs")},
                                k=run["k"], input_name=run["input_name"], epochs=run["epochs"])
            results[key] = compare(run, a.layouts)
            write(results)
            print(key, results[key], flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
