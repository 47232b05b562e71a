"""How often CoNR's in-batch neighbours are of the sample's own class, and how often those that
the pseudo-labels put in another cluster are.

Stage 2 pulls each sample toward its ConAff neighbours in the batch (spec 4a). With
``stage2.same_cluster`` (an option, on in these runs) a neighbour whose pseudo-label differs
from its sample's is replaced by the sample itself. The trainer logs, each stage-2 epoch, the
share of neighbours (the sample itself left out) of the sample's true class before the
replacement (``batch_purity``), the share kept (``batch_same_cluster``) and the true-class share
of those kept (``batch_purity_same_cluster``); the replaced ones' true-class share follows from
the three. This script runs one short fit per open set (``conr.CoNR(n_clusters=K)``'s defaults
plus ``stage2.same_cluster=true``, the epochs fixed so that it repeats) and averages the three
over the stage-2 epochs. The true labels serve only these monitors, never the loss.

    python benchmarks/neighbour_purity.py                         # orl, coil20, digits; seed 0; ~6 min alone
    python benchmarks/neighbour_purity.py --datasets orl --seeds 0 1 2

Writes benchmarks/results/neighbour_purity.{md,json}. Run it alone (2 cores).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from suite import dataset_folder  # noqa: E402

EPOCHS = {"orl": 200, "coil20": 100, "digits": 60, "cifar10": 40}   # short runs: stage 2 is their last 40 %


def measure(folder: Path, k: int, seed: int, epochs: int) -> dict:
    import conr

    with tempfile.TemporaryDirectory() as cache:       # a new user's run: nothing cached
        os.environ["CONR_CACHE_DIR"] = cache
        model = conr.CoNR(n_clusters=k, seed=seed, overrides=[f"train.epochs={epochs}",
                                                                        "stage2.same_cluster=true"])
        with contextlib.redirect_stdout(io.StringIO()):
            model.fit(folder)
    stage2 = [h for h in model.history_ if h.get("stage") == 2 and "batch_purity_same_cluster" in h]
    if not stage2:
        raise SystemExit(f"{folder}: no stage-2 epoch logged the monitors (is stage2.same_cluster on?)")

    def mean(key):
        return sum(h[key] for h in stage2) / len(stage2)

    purity, kept, kept_purity = mean("batch_purity"), mean("batch_same_cluster"), mean("batch_purity_same_cluster")
    replaced = (purity - kept * kept_purity) / (1.0 - kept) if kept < 1.0 else float("nan")
    cfg = model.config_
    return {"seed": seed, "epochs": epochs, "stage2_epochs": len(stage2), "input": model.input_kind_,
            "batch": cfg.train.batch_size, "k": cfg.stage2.k, "purity": round(purity, 4), "kept": round(kept, 4),
            "kept_purity": round(kept_purity, 4), "replaced_purity": round(replaced, 4)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["orl", "coil20", "digits"], choices=sorted(EPOCHS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "neighbour_purity"))
    args = ap.parse_args(argv)
    from conr.io import atomic_write_text

    rows = []
    for name in args.datasets:
        found = dataset_folder(name, ROOT / "benchmarks" / ".cache")
        if found is None:
            continue
        for seed in args.seeds:
            rows.append({"dataset": name, "k_clusters": found[1], **measure(*found, seed, EPOCHS[name])})
            print(json.dumps(rows[-1]), flush=True)
    head = ("| set | input | K | batch | k | seed | stage-2 epochs | neighbours of the class | kept (same cluster) "
            "| of the class, kept | of the class, replaced |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
    table = head + "".join(
        f"| {r['dataset']} | {r['input']} | {r['k_clusters']} | {r['batch']} | {r['k']} | {r['seed']} | "
        f"{r['stage2_epochs']} of {r['epochs']} | {r['purity']:.3f} | {r['kept']:.3f} | {r['kept_purity']:.3f} | "
        f"{r['replaced_purity']:.3f} |\n" for r in rows)
    command = "python benchmarks/neighbour_purity.py " + " ".join(argv if argv is not None else sys.argv[1:])
    atomic_write_text(args.out + ".md", f"In-batch neighbours of stage 2 against the true classes (`{command.strip()}`); "
                      "means over the stage-2 epochs, the sample itself left out.\n\n" + table)
    atomic_write_text(args.out + ".json", json.dumps(rows, indent=1) + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
