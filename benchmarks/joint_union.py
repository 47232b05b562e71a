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

Writes benchmarks/results/joint_union.{json,md} (rows of earlier calls with other sets or
seeds are kept). Held-back sets are made under benchmarks/.cache/heldout on first use. Run it
alone: the runs' budgets are wall time.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
OUT = ROOT / "benchmarks" / "results" / "joint_union"


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


def compare(run: dict) -> list[dict]:
    """The joint candidate by each graph, at the seed and at the end, from 1 and 3 layouts."""
    import torch
    from suite import scores

    from conr.cluster.final import FinalStage
    from conr.cluster.kmeans import kmeans

    given = {when: kmeans(torch.as_tensor(run[when]), run["k"], n_init=5, seed=0).labels.numpy()
             for when in ("seed", "end")}   # the training's own k-means, given as a candidate (once for all ways)
    rows = []
    for layouts in (1, 3):
        for graph in ("intersection", "union"):
            final = FinalStage(run["inputs"], run["k"], seed=0, input_name=run["input_name"],
                               consensus_runs=layouts, joint_graph=graph)
            final.prepare()
            for when in ("seed", "end"):
                _, cands = final.run(run[when], given={"kmeans": given[when]})
                joint = next(c for c in cands if c.name == "umap_gmm/joint")
                rows.append({"graph": graph, "layouts": layouts, "when": when, "combined": joint.combined,
                             "shared": round(float(joint.shared), 3),
                             "acc": round(scores(run["truth"], joint.labels)["acc"], 4)})
    return rows


def write(results: dict) -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(OUT.with_suffix(".json"))
    lines = ["# Union or intersection: the joint candidate on whole runs' features", "",
             "ACC of `umap_gmm/joint`, 1 / 3 UMAP layouts; `python benchmarks/joint_union.py` (docstring).", "",
             "| run | shared (end) | end: intersection | end: union | seed: intersection | seed: union |",
             "|---|---|---|---|---|---|"]
    for key, rows in sorted(results.items()):
        cell = {(r["graph"], r["when"], r["layouts"]): r["acc"] for r in rows}
        shared = next(r["shared"] for r in rows if r["when"] == "end")
        lines.append(f"| {key} | {shared:.2f} | " + " | ".join(
            f"{cell[(g, w, 1)]:.3f} / {cell[(g, w, 3)]:.3f}"
            for w in ("end", "seed") for g in ("intersection", "union")) + " |")
    tmp = OUT.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(OUT.with_suffix(".md"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", nargs="+", default=["photos10x200", "photos6x500", "orl", "coil20"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--scratch", action="store_true", help="train from scratch on the pixels (not the encoder)")
    a = p.parse_args(argv)
    path = OUT.with_suffix(".json")
    results = json.loads(path.read_text()) if path.exists() else {}
    for name in a.sets:
        for seed in a.seeds:
            run = run_features(name, seed, a.scratch)
            key = f"{name} {'scratch' if a.scratch else 'encoder'} seed {seed} ({run['epochs']} epochs)"
            results[key] = compare(run)
            write(results)
            print(key, results[key], flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
