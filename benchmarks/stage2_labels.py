"""Stage 2's labels against its seed: the partition CoNR learns from, epoch by epoch.

With the automatic settings, stage 2 starts from the final stage's choice on the warm-up's
features (the seed) and carries it on: each epoch the centres move to the cluster means of
the current features, then ``cluster.stage2_update_iters`` Lloyd iterations let the labels
follow the features (0: the seed's labels kept to the end), and ``cluster.stage2_refreshes``
times the final stage chooses them afresh. This script runs ``conr.CoNR(n_clusters=K, seed=s)``
with its defaults on the open suite's folders, once per variant (``keep``: 0 iterations;
``lloyd``: 1, the default; ``refresh``: 1 and 3 refreshes), and reads each run's history: the seed's ACC, the stage-2 labels' ACC
each epoch (the labels the boundary filter and the neighbourhood context work from), and
what the run ended with. The true labels serve only for the scores.

    python benchmarks/stage2_labels.py                     # digits, orl, coil20; every variant; seed 0
    python benchmarks/stage2_labels.py --datasets digits --variants keep lloyd --seeds 0 1 2

The variants of one dataset and seed share the script's own plan cache (benchmarks/.cache/
stage2-cache): a variant reuses the first one's epochs where its timed step is within the
plans' same-machine band (conr/auto/plans.py), so that only the labels differ; where it is not,
the epochs differ too, and with them the warm-up and the seed (the table's epochs column says
which). Each row's seconds say what a variant cost.

Rows go to benchmarks/results/stage2_labels.jsonl as they finish (a stopped run keeps what it
measured; a finished row is not run again); the table to stdout and stage2_labels.md.
Run it alone: the time budget is wall time, and a busy machine changes the epochs.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from suite import DATASETS, dataset_folder, scores  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
VARIANTS = {"keep": ["cluster.stage2_update_iters=0"], "lloyd": ["cluster.stage2_update_iters=1"],
            "refresh": ["cluster.stage2_update_iters=1", "cluster.stage2_refreshes=3"]}


def run(folder: Path, k: int, seed: int, variant: str) -> dict:
    """One default run with the ``variant``'s overrides: its stage-2 curve."""
    import conr

    start = time.perf_counter()
    model = conr.CoNR(n_clusters=k, seed=seed, overrides=VARIANTS[variant])
    with contextlib.redirect_stdout(io.StringIO()):
        model.fit(folder)
    took = time.perf_counter() - start
    hist = model.history_
    seeded = [h for h in hist if "stage2_seed" in h]
    curve = [{"epoch": h["epoch"], "acc": round(h["acc"], 4), "nmi": round(h["nmi"], 4),
              **({"refresh": h["stage2_refresh"]} if "stage2_refresh" in h else {})}
             for h in hist if h.get("stage") == 2 and "acc" in h]
    out = {"seconds": round(took, 1), "epochs": model.config_.train.epochs, "input_kind": model.input_kind_,
           **scores(model.data_.labels.numpy(), model.labels_), "source": model.partition_.source,
           "curve": curve}
    if seeded:
        out.update(seed_epoch=seeded[0]["epoch"], seed_source=seeded[0]["stage2_seed"],
                   seed_acc=round(seeded[0]["acc"], 4), seed_nmi=round(seeded[0]["nmi"], 4))
    cands = model.partition_.candidates or []
    carried = [c for c in cands if c["name"] == "seeded_kmeans/features"]
    if carried and "true_acc" in carried[0]:
        out["carried_final_acc"] = carried[0]["true_acc"]  # the stage-2 labels after the last epoch
    return out


def summarise(rows: list[dict]) -> str:
    lines = ["| dataset | stage-2 labels | runs | epochs | seed ACC | stage-2 labels: lowest | mean | last "
             "| run's ACC / NMI | chose |", "|---|---|---|---|---|---|---|---|---|---|"]
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["variant"]), []).append(r)
    mean = statistics.mean
    for (dataset, variant), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], list(VARIANTS).index(kv[0][1]))):
        with_curve = [r for r in rs if r.get("curve") and "seed_acc" in r]
        if not with_curve:
            continue
        low = mean(min(c["acc"] for c in r["curve"]) for r in with_curve)
        avg = mean(mean(c["acc"] for c in r["curve"]) for r in with_curve)
        last = mean(r["curve"][-1]["acc"] for r in with_curve)
        sources = ", ".join(sorted({r["source"] for r in rs}))
        epochs = "/".join(str(r["epochs"]) for r in rs)
        lines.append(f"| {dataset} | {variant} | {len(rs)} | {epochs} | {mean(r['seed_acc'] for r in with_curve):.3f} | "
                     f"{low:.3f} | {avg:.3f} | {last:.3f} | {mean(r['acc'] for r in rs):.3f} / "
                     f"{mean(r['nmi'] for r in rs):.3f} | {sources} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["digits", "orl", "coil20"], choices=list(DATASETS))
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--out", type=Path, default=RESULTS / "stage2_labels.jsonl")
    p.add_argument("--cache", type=Path, default=ROOT / "benchmarks" / ".cache")
    args = p.parse_args(argv)
    import os

    from conr.io import atomic_write_text

    os.environ["CONR_CACHE_DIR"] = str(args.cache / "stage2-cache")  # the variants share one plan per folder

    rows = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()] \
        if args.out.exists() else []
    done = {(r["dataset"], r["variant"], r["seed"]) for r in rows}
    for name in args.datasets:
        found = dataset_folder(name, args.cache)
        if found is None:
            continue
        folder, k = found
        for seed in args.seeds:
            for variant in args.variants:
                if (name, variant, seed) in done:
                    continue
                row = {"dataset": name, "variant": variant, "seed": seed, "k": k, **run(folder, k, seed, variant)}
                rows.append(row)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                with args.out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{name} {variant} seed={seed}: seed ACC {row.get('seed_acc')}, stage-2 labels "
                      f"{[c['acc'] for c in row['curve']]}, run {row['acc']:.3f} ({row['source']}, "
                      f"{row['seconds'] / 60:.1f} min)", flush=True)
    table = summarise(rows)
    print(table)
    atomic_write_text(args.out.with_suffix(".md"),
                      "Stage 2's labels against its seed (`python benchmarks/stage2_labels.py`), ACC.\n\n"
                      + table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
