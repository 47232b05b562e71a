"""conr eval: score a saved run the way the paper does, plus the monitors of the
reference code (kNN accuracy, neighbour purity) and the confusion matrix."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


DESCRIPTION = """\
Extract the target features of the clustered set with a saved run's weights (test transform),
run k-means with the run's cluster settings and report NMI / ACC / ARI, the weighted kNN
accuracy (k = 20, temperature 0.07, leave-one-out on the same set), neighbour purity for several K
inside training-size batches (Euclidean and ConAff, with and without the boundary filter at the
run's fr0) and the confusion matrix. Config overrides (section.key=value, also written
--section.key=value) change how the data is read, e.g. data.root=/other/path or data.split=test,
or the clustering, e.g. cluster.n_init=10."""


def run(args) -> int:
    from ..outputs.evaluation import evaluate_checkpoint
    from .common import load_run, parse_ks, split_overrides

    overrides = split_overrides(list(args.overrides))
    # with --json stdout holds the JSON document only: progress and notes go to stderr
    log = (lambda *a, **k: print(*a, file=sys.stderr, **k)) if args.json else print
    trainer = load_run(args.checkpoint, device=None if args.device == "auto" else args.device,
                       overrides=overrides, log=log)
    report, labels = evaluate_checkpoint(trainer, knn_k=args.knn_k, knn_temperature=args.knn_temperature,
                                         purity_ks=parse_ks(args.purity_ks), purity_batches=args.purity_batches)
    report["checkpoint"] = str(args.checkpoint)
    report["overrides"] = overrides
    if args.labels:
        import numpy as np

        out = Path(args.labels)
        out.parent.mkdir(parents=True, exist_ok=True)
        np.save(out, labels.numpy())
        report["labels_file"] = str(out)
    if args.json:
        sys.stdout.write(json.dumps(report) + "\n")
        return 0
    print(f"conr eval: {report['method']} run at epoch {report['epoch']}, {report['n_images']} images "
          f"({report['data']['name']}, split {report['data']['split']}), K = {report['n_clusters']}")
    print(f"labels scored: {report['labels_from']}")
    if "nmi" in report and "knn_acc" not in report:  # some images unlabelled: scores over the labelled
        print(f"nmi={report['nmi']:.4f} acc={report['acc']:.4f} ari={report['ari']:.4f} "
              f"scored={report['scored']} of {report['n_images']} (the labelled images; no kNN / purity)")
    elif "nmi" in report:
        print(f"nmi={report['nmi']:.4f} acc={report['acc']:.4f} ari={report['ari']:.4f} "
              f"knn_acc={report['knn_acc']:.4f} (k={args.knn_k}, weighted, leave-one-out)")
        p = report["purity"]
        modes = [m for m in p if m not in ("ks", "batch_size", "k1", "k2", "keep_fraction")]
        print(f"neighbour purity in batches of {p['batch_size']} (k1={p['k1']}, k2={p['k2']}, "
              f"filter keeps {p['keep_fraction']:.2f}):")
        print("  " + "K".rjust(5) + "".join(m.rjust(18) for m in modes))
        for j, k in enumerate(p["ks"]):
            print("  " + str(k).rjust(5) + "".join(f"{p[m][j]:18.4f}" for m in modes))
        print(confusion_table(report))
    else:
        print("the data has no labels: cluster sizes only")
    print(f"cluster sizes: {report['cluster_sizes']}")
    return 0


def confusion_table(report: dict) -> str:
    """The confusion matrix with its labels: a row per true class, a column per cluster
    (the one matched to that class), and the cluster sizes under their columns."""
    cols = ["-" if c is None else f"c{c}" for c in report["confusion_clusters"]]
    cells = [str(v) for row in report["confusion"] for v in row] + cols + \
        [str(v) for v in report["confusion_cluster_sizes"]]
    width = max(6, max(len(c) for c in cells) + 1)
    names = [c[:12] for c in report["classes"]]
    lines = ["confusion matrix (rows: true class; columns: the cluster matched to each class, in the rows' order):",
             "  " + "class \\ cluster".rjust(14) + "".join(c.rjust(width) for c in cols)]
    for name, row in zip(names, report["confusion"]):
        lines.append(f"  {name:>14s}" + "".join(str(v).rjust(width) for v in row))
    lines.append("  " + "cluster size".rjust(14) + "".join(str(v).rjust(width) for v in report["confusion_cluster_sizes"]))
    unmatched = [c for c in range(len(report["cluster_sizes"])) if c not in report["confusion_clusters"]]
    if unmatched:
        lines.append("  clusters matched to no class: " +
                     ", ".join(f"c{c} ({report['cluster_sizes'][c]} images)" for c in unmatched))
    return "\n".join(lines)


def register(sub) -> None:
    p = sub.add_parser("eval", help="NMI/ACC/ARI, kNN accuracy, neighbour purity and confusion of a saved run",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="run folder or checkpoint file (checkpoint.pt, stage1.pt, epochNNNN.pt)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout (notes go to stderr)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--knn-k", type=int, default=20, help="neighbours of the kNN monitor (default 20)")
    p.add_argument("--knn-temperature", type=float, default=0.07, help="vote temperature (default 0.07)")
    p.add_argument("--purity-ks", help="comma-separated K for neighbour purity (default 1,5,10,20,50,100)")
    p.add_argument("--purity-batches", type=int, help="score only this many batches (default: all)")
    p.add_argument("--labels", help="also save the scored labels (the run's partition) as a .npy file")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. data.root=/new/path (or --data.root=...)")
    p.set_defaults(func=run)
