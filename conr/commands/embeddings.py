"""conr cluster --embeddings FILE: CoNR on vectors a user already has (conr/vectors.py).

Writes OUT/assignments.csv (row, the row's name where the table has names, cluster, boundary_ratio,
distance), OUT/features.npy
(the trained network's L2-normalised features) and OUT/summary.json (K, sizes, settings)."""
from __future__ import annotations

import json
from pathlib import Path


def run_embeddings(args) -> int:
    import csv
    import io

    import numpy as np

    from ..estimator import CoNR
    from ..io import atomic_write_bytes, atomic_write_text, check_writable
    from ..cluster.kselect import parse_k
    from ..data.vectors import read_embeddings_named

    if args.path:
        raise ValueError(f"give either a folder of images ({args.path}) or --embeddings FILE, not both")
    if args.checkpoint or args.resume or args.export or args.config:
        raise ValueError("--embeddings trains a fresh MLP on the vectors: drop --checkpoint, --resume, --export "
                         "and --config (config overrides such as train.epochs=100 still apply)")
    try:
        k = parse_k(args.k)
    except ValueError as exc:
        raise ValueError(f"--k {args.k}: {exc}") from None
    src = Path(args.embeddings)
    X, names = read_embeddings_named(src)
    out = Path(args.out) if args.out else Path(f"{src.stem}-conr")
    check_writable(out, need_bytes=X.shape[0] * 1024)
    print(f"conr cluster: {X.shape[0]} vectors of width {X.shape[1]} from {src}"
          + (f" and their {len(names)} row names" if names else ""))
    est = CoNR(n_clusters=k, device=args.device, seed=args.seed, overrides=list(args.overrides), input="vectors",
               minutes=args.minutes, verbose=True)
    est.fit(X)
    labels = est.labels_
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["row"] + (["name"] if names else []) + ["cluster", "boundary_ratio", "distance"])
    for i, (c, b, d) in enumerate(zip(labels, est.boundary_ratios_, est.distances_)):
        writer.writerow([i] + ([names[i]] if names else []) + [int(c), f"{float(b):.6f}", f"{float(d):.6f}"])
    atomic_write_text(out / "assignments.csv", table.getvalue())
    buf = io.BytesIO()
    np.save(buf, est.features_.astype(np.float32))
    atomic_write_bytes(out / "features.npy", buf.getvalue())
    cfg = est.config_
    sizes = np.bincount(labels, minlength=est.n_clusters_).tolist()
    summary = {"source": str(src.resolve()), "n": int(X.shape[0]), "dim": int(X.shape[1]), "k": est.n_clusters_,
               "k_selection": getattr(est, "k_selection_", None), "sizes": sizes, "input_kind": est.input_kind_,
               "backbone": cfg.model.backbone, "epochs": cfg.train.epochs, "batch_size": cfg.train.batch_size,
               "stage2_start_epoch": cfg.stage2.start_epoch, "seed": cfg.train.seed,
               "budget": est.budget_, "reasons": dict(est.run_record_.reasons),
               "partition": est.partition_.summary() if est.partition_ is not None else None}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    print(f"clustered {len(labels)} vectors into {est.n_clusters_} clusters (sizes {sizes})")
    print(f"assignments: {out / 'assignments.csv'}")
    return 0
