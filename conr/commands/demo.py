"""conr demo: BYOL warm-up then CoNR on scikit-learn's bundled digits, offline."""
from __future__ import annotations

from datetime import datetime

from .common import print_metrics


def run(args) -> int:
    from ..config import load_config
    from ..train import Trainer

    name = f"demo-{datetime.now():%Y%m%d-%H%M%S}"
    cfg = load_config("digits", [f"run.out_dir={args.out_dir}", f"run.name={name}"] + list(args.overrides))
    print(f"conr demo: {cfg.method} on scikit-learn digits, {cfg.train.epochs} epochs (BYOL for "
          f"{cfg.stage2.start_epoch}, then CoNR), device {cfg.train.device}")
    result = Trainer(cfg).fit()
    print(f"run folder: {result.run_dir}")
    print_metrics(result.metrics)
    return 0


def register(sub) -> None:
    p = sub.add_parser("demo", help="BYOL warm-up then CoNR on scikit-learn digits (offline, CPU, minutes)")
    p.add_argument("--out-dir", default="runs", help="where the run folder goes (default: runs)")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. train.epochs=50")
    p.set_defaults(func=run)
