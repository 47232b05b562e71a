"""What the warm-up does to the head's features on an encoder's features, epoch by epoch.

On COIL-20's encoder features a longer warm-up made a worse stage-2 seed (docs/results.md,
"COIL-20's encoder path at fixed epochs"), while on a held-back folder of CIFAR-10 training
photos a shorter run lost accuracy. A rule that ends the warm-up from the data needs a
label-free signal that falls where the features get worse and rises where they get
better. This script trains the vector path's CoNR run (the automatic settings at a fixed
length), stops at every ``--every`` epochs of its warm-up (BYOL on neighbour views) and
measures, on the head's features at that point:

* with the labels (for the reader only): k-means' ACC and NMI, and the share of each
  row's 10 nearest rows that share its class (``knn_purity``);
* without them (the candidates for a rule):
  ``shared``, the mean share of a row's 10 nearest rows the head and the encoder hold in
  common (:func:`conr.cluster.manifold.shared_neighbors`); ``agree``, the NMI of k-means of
  the head with k-means of the encoder's features; ``sil_away``, the silhouette of k-means
  of the head in the encoder's UMAP embedding (the ``away`` rule's view); ``sil_own``, its
  silhouette in the head's own space (cosine); ``spread``, the features' mean per-dimension
  standard deviation (a collapse shows as a fall).

    python benchmarks/heldout_photos.py --out /tmp/heldout      # photo folders from CIFAR-10's training split
    python benchmarks/warmup_signals.py --folders ../shared/data/coil20:20 /tmp/heldout/photos10x200:10 \\
        ../shared/data/orl:40 /tmp/heldout/photos6x500:6 --epochs 640 --every 32 --seeds 0

One JSON record per (folder, seed, epoch); a table per folder is printed.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score, silhouette_score

RESULTS = Path(__file__).resolve().parent / "results"


def _kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    return KMeans(k, n_init=5, random_state=seed).fit_predict(x)


def _knn_purity(idx: np.ndarray, y: np.ndarray) -> float:
    return float((y[idx[:, 1:]] == y[:, None]).mean())


def trace(folder: str, k: int, epochs: int, every: int, seed: int) -> list[dict]:
    from conr.auto.photos import photo_data
    from conr.auto.resolve import vector_settings
    from conr.cluster.final import unit_rows
    from conr.cluster.manifold import exact_neighbors, shared_neighbors, umap_embedding
    from conr.encoders import load_encoder
    from conr.encoders.directions import feature_directions
    from conr.engine.vectors import VectorTrainer
    from conr.ops.metrics import evaluate

    data = photo_data(folder, load_encoder(), log=lambda *a: None)
    y = data.labels.numpy()
    user = {"method": "conr", "train": {"epochs": epochs, "seed": seed, "device": "cpu"},
            "cluster": {"n_clusters": k, "final": "kmeans", "stage2_seed": "kmeans"},
            "run": {"progress": False}}
    cfg, _, _ = vector_settings(user, len(data), k=k)
    warmup = cfg.stage2.start_epoch
    enc = unit_rows(feature_directions(data.images.numpy()))
    enc_idx, _ = exact_neighbors(enc, 11)
    enc_labels = _kmeans(enc, k, seed)
    enc_emb = umap_embedding(enc, n_components=min(k, 20), seed=seed)
    torch.manual_seed(seed)
    trainer = VectorTrainer(cfg, data, write=False, log=lambda *a: None)
    rows = []
    stops = sorted({*range(every, warmup + 1, every), warmup})
    for stop in [0, *stops]:
        start = time.perf_counter()
        if stop:
            trainer.fit(until_epoch=stop)
        feats = trainer.extract_features().cpu().numpy()
        labels = _kmeans(feats, k, seed)
        idx, _ = exact_neighbors(feats, 11)
        scores = evaluate(y, labels)
        rows.append({"folder": Path(folder).name, "seed": seed, "epochs": epochs, "warmup": warmup, "epoch": stop,
                     "acc": round(scores["acc"], 4), "nmi": round(scores["nmi"], 4),
                     "knn_purity": round(_knn_purity(idx, y), 4),
                     "shared": round(shared_neighbors(idx, enc_idx), 4),
                     "agree": round(float(normalized_mutual_info_score(enc_labels, labels)), 4),
                     "sil_away": round(float(silhouette_score(enc_emb, labels)), 4),
                     "sil_own": round(float(silhouette_score(feats, labels, metric="cosine")), 4),
                     "spread": round(float(feats.std(0).mean()), 5),
                     "seconds": round(time.perf_counter() - start, 1)})
        print(json.dumps(rows[-1]), flush=True)
    rows.append({"folder": Path(folder).name, "seed": seed, "epoch": "encoder", "acc": round(evaluate(y, enc_labels)["acc"], 4),
                 "knn_purity": round(_knn_purity(enc_idx, y), 4)})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folders", nargs="+", required=True, help="FOLDER:K, class sub-folders as the truth")
    ap.add_argument("--epochs", type=int, default=640, help="the run's length (the warm-up is its first 60 %%)")
    ap.add_argument("--every", type=int, default=32)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", default=str(RESULTS / "warmup_signals.json"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    doc = json.loads(out.read_text()) if out.exists() else {"commands": [], "rows": []}
    command = " ".join(["python benchmarks/warmup_signals.py", *(argv if argv is not None else sys.argv[1:])])
    doc["commands"] = [c for c in doc.get("commands", []) if c != command] + [command]
    for spec in args.folders:
        folder, k = spec.rsplit(":", 1)
        for seed in args.seeds:
            name = Path(folder).name
            doc["rows"] = [r for r in doc["rows"] if (r["folder"], r["seed"]) != (name, seed)]
            doc["rows"] += trace(folder, int(k), args.epochs, args.every, seed)
            out.write_text(json.dumps(doc, indent=1) + "\n")
    for name in dict.fromkeys(r["folder"] for r in doc["rows"]):
        print(f"\n{name}\n| seed | epoch | ACC | NMI | kNN purity | shared | agree | sil_away | sil_own | spread |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in doc["rows"]:
            if r["folder"] == name and r["epoch"] != "encoder":
                print(f"| {r['seed']} | {r['epoch']} | {r['acc']:.3f} | {r['nmi']:.3f} | {r['knn_purity']:.3f} | "
                      f"{r['shared']:.3f} | {r['agree']:.3f} | {r['sil_away']:.3f} | {r['sil_own']:.3f} | "
                      f"{r['spread']:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
