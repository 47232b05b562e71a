"""`conr cluster`'s automatic settings on a GPU: the estimator on a folder with a time
budget, printing and saving (JSON) the settings chosen, the budget's estimate and
the time taken, and the scores.

    python benchmarks/gpu_cluster.py FOLDER K MINUTES OUT.json [--device cuda]
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    import conr
    from conr.io import atomic_write_text

    folder, k, minutes, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), Path(sys.argv[4])
    device = sys.argv[6] if len(sys.argv) > 6 and sys.argv[5] == "--device" else "auto"
    start = time.perf_counter()
    model = conr.CoNR(n_clusters=k, minutes=minutes, device=device, verbose=True,
                      overrides=["run.progress=false"]).fit(folder)
    cfg = model.config_
    record = {"folder": folder, "k": k, "device": str(model.trainer_.device), "seconds": round(time.perf_counter() - start, 1),
              "metrics": {m: model.metrics_.get(m) for m in ("nmi", "acc", "ari")}, "budget": model.budget_,
              "settings": {"image_size": cfg.data.image_size, "channels": cfg.data.channels,
                           "backbone": cfg.model.backbone, "batch": cfg.train.batch_size, "epochs": cfg.train.epochs,
                           "precision": cfg.train.precision},
              "reasons": model.settings_reasons_}
    atomic_write_text(out, json.dumps(record, indent=1) + "\n")
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
