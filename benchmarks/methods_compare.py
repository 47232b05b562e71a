"""Compare the training methods of conr under one budget: same data, backbone,
epochs, batch, augmentation and stage-2 schedule for every method; each method
keeps its own recipe (LR, momentum, heads, loss weights) from its digits config.

Prints a table of NMI / ACC / ARI / feature_std and writes the results (with the
per-evaluation history and the exact overrides) as JSON, e.g.

    python benchmarks/methods_compare.py --preset digits --out benchmarks/results/methods_digits.json
    python benchmarks/methods_compare.py --preset cifar10-jpeg --epochs 4 --image-size 16 \
        --out benchmarks/results/methods_cifar10_jpeg.json

feature_std is the mean per-dimension standard deviation of the L2-normalised
features; ``spread`` = feature_std · sqrt(D) is about 1 for features spread over
the sphere and near 0 for a collapsed representation.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

METHODS = ("byol", "conr", "hadis", "simsiam", "simsiam_connr", "moco", "moco_connr")

# Method -> packaged config carrying the method's own short-run recipe. byol and conr use the
# shared digits config when it is there (else the library defaults) with `method` overridden.
METHOD_CONFIGS = {
    "byol": "digits", "conr": "digits", "hadis": "hadis_digits",
    "simsiam": "simsiam_digits", "simsiam_connr": "simsiam_connr_digits",
    "moco": "moco_digits", "moco_connr": "moco_connr_digits",
}

PRESETS = {
    "digits": {
        "defaults": {"epochs": 40, "batch_size": 256, "width": 32, "image_size": 16},
        "overrides": [
            "data.name=digits", "data.root=null", "data.split=all", "data.normalization=null",
            "augment.scale=[0.6,1.0]", "augment.hflip_p=0.0", "augment.rotation=15.0",
            "augment.jitter=[0.4,0.4,0.0,0.0]", "augment.jitter_p=0.8", "augment.gray_p=0.0",
            "augment.blur_p=0.0", "stage2.crop_scale=[0.6,1.0]", "cluster.n_clusters=10",
        ],
    },
    "cifar10-jpeg": {
        "defaults": {"epochs": 4, "batch_size": 256, "width": 32, "image_size": 16},
        "overrides": [
            "data.name=imagefolder", "data.root=/work/shared/data/cifar10-jpeg", "data.split=test",
            "data.normalization=cifar10",
            "augment.scale=[0.08,1.0]", "augment.hflip_p=0.5", "augment.rotation=0.0",
            "augment.jitter=[0.4,0.4,0.4,0.1]", "augment.jitter_p=0.8", "augment.gray_p=0.2",
            "augment.blur_p=0.0", "stage2.crop_scale=[0.45,1.0]", "cluster.n_clusters=10",
        ],
    },
}


def budget_overrides(args) -> list[str]:
    """The settings every method shares in this comparison."""
    epochs = args.epochs
    start = args.stage2_start if args.stage2_start is not None else max(1, (2 * epochs) // 3)
    t_end = start + max(1, (epochs - start) // 2)
    eval_every = args.eval_every if args.eval_every is not None else max(1, epochs // 4)
    out = list(PRESETS[args.preset]["overrides"]) + [
        f"data.image_size={args.image_size}",
        "model.backbone=small_cnn", f"model.width={args.width}",
        f"model.hidden_dim={args.hidden_dim}", f"model.proj_dim={args.proj_dim}",
        f"train.epochs={epochs}", f"train.batch_size={args.batch_size}",
        f"train.warmup_epochs={args.warmup_epochs if args.warmup_epochs is not None else max(1, epochs // 10)}",
        f"train.ema_base={args.ema_base}", f"train.seed={args.seed}", "train.device=cpu",
        f"train.threads={args.threads}",
        f"stage2.start_epoch={start}", f"stage2.t_end={t_end}", f"stage2.lr_factor={args.stage2_lr_factor}",
        f"stage2.predictor_lr_factor={args.stage2_lr_factor}", "stage2.loss_scale=1.0",
        f"cluster.eval_every={eval_every}", "run.progress=false",
    ]
    if args.subset:
        out.append(f"data.subset={args.subset}")
    return out + list(args.set)


def method_source(method: str):
    from conr.config import packaged_config_dir

    name = METHOD_CONFIGS[method]
    if (packaged_config_dir() / f"{name}.yaml").is_file():
        return name
    return None  # library defaults


def wait_for_load(max_load: float | None) -> None:
    if max_load is None or not hasattr(os, "getloadavg"):
        return
    waited = 0
    while os.getloadavg()[0] > max_load:
        if waited % 60 == 0:
            print(f"  waiting: 1-min load {os.getloadavg()[0]:.2f} > {max_load}", flush=True)
        time.sleep(10)
        waited += 10


def run_one(method: str, common: list[str], data, args) -> dict:
    import torch

    from conr.config import load_config
    from conr.engine import Trainer

    source = method_source(method)
    cfg = load_config(source, [f"method={method}"] + common)
    wait_for_load(args.max_load)
    start = time.perf_counter()
    result = Trainer(cfg, data=data, write=False, log=lambda *a: None).fit()
    seconds = time.perf_counter() - start
    dim = int(result.features.shape[1])
    history = [{k: h[k] for k in ("epoch", "stage", "loss", "nmi", "acc", "ari", "feature_std", "batch_kept")
                if k in h} for h in result.history]
    stds = [h["feature_std"] for h in history if "feature_std" in h]
    m = result.metrics
    return {
        "config": source or "(defaults)", "nmi": m.get("nmi"), "acc": m.get("acc"), "ari": m.get("ari"),
        "feature_std": m.get("feature_std"), "min_feature_std": min(stds) if stds else None,
        "feature_dim": dim, "spread": (m.get("feature_std") or 0.0) * math.sqrt(dim),
        "final_loss": history[-1]["loss"] if history else None, "seconds": seconds,
        "finite": bool(torch.isfinite(result.features).all()), "history": history,
    }


def format_table(results: dict) -> str:
    head = f"| {'method':14s} | {'NMI':>6s} | {'ACC':>6s} | {'ARI':>6s} | {'feat_std':>8s} | {'min_std':>7s} | " \
           f"{'D':>4s} | {'spread':>6s} | {'loss':>8s} | {'time s':>6s} |"
    rule = "|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|"
    lines = [head, rule]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name:14s} | error: {r['error']} |")
            continue
        lines.append(f"| {name:14s} | {r['nmi']:6.4f} | {r['acc']:6.4f} | {r['ari']:6.4f} | {r['feature_std']:8.4f} | "
                     f"{r['min_feature_std']:7.4f} | {r['feature_dim']:4d} | {r['spread']:6.3f} | "
                     f"{r['final_loss']:8.4f} | {r['seconds']:6.1f} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="digits", help="dataset + augmentation preset")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods (default: all)")
    p.add_argument("--epochs", type=int, help="epochs per method (preset default)")
    p.add_argument("--batch-size", type=int, help="batch size (preset default)")
    p.add_argument("--width", type=int, help="small_cnn width (preset default)")
    p.add_argument("--image-size", type=int, help="training / evaluation resolution (preset default)")
    p.add_argument("--hidden-dim", type=int, default=512, help="BYOL-family projector/predictor hidden width")
    p.add_argument("--proj-dim", type=int, default=128, help="BYOL-family projection width")
    p.add_argument("--subset", type=int, help="keep only this many images (seeded)")
    p.add_argument("--warmup-epochs", type=int, help="LR warm-up (and HaDis warm-up) epochs; default epochs/10")
    p.add_argument("--ema-base", type=float, default=0.99, help="target EMA momentum of the BYOL family")
    p.add_argument("--stage2-start", type=int, help="last baseline epoch of conr / *_connr (default 2/3 of epochs)")
    p.add_argument("--stage2-lr-factor", type=float, default=1.0, help="stage-2 LR factor of conr / *_connr")
    p.add_argument("--eval-every", type=int, help="cluster + score every N epochs (default epochs/4)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1 avoids OpenMP spin-waiting on a shared machine)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-load", type=float, help="before each method wait while the 1-min load exceeds this")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override for every method (repeatable)")
    p.add_argument("--out", help="JSON file to write (default benchmarks/results/methods_<preset>.json)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for key, value in PRESETS[args.preset]["defaults"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHOD_CONFIGS]
    if unknown:
        print(f"error: unknown method(s) {unknown}; choose from {', '.join(METHODS)}", file=sys.stderr)
        return 2

    import torch

    from conr.config import load_config
    from conr.data import build_data

    torch.set_num_threads(args.threads)
    common = budget_overrides(args)
    data = build_data(load_config(None, ["method=byol"] + common).data, seed=args.seed)  # decoded once, shared by all methods
    print(f"{args.preset}: {len(data)} images, {args.epochs} epochs, batch {args.batch_size}, "
          f"small_cnn width {args.width}, {args.image_size} px, {args.threads} thread(s)", flush=True)

    results: dict[str, dict] = {}
    total = time.perf_counter()
    for method in methods:
        print(f"- {method} ...", flush=True)
        try:
            results[method] = run_one(method, common, data, args)
        except Exception as exc:  # keep the grid going; the table shows what failed
            results[method] = {"error": f"{type(exc).__name__}: {exc}"}
        r = results[method]
        if "error" not in r:
            print(f"  nmi={r['nmi']:.4f} acc={r['acc']:.4f} ari={r['ari']:.4f} "
                  f"feature_std={r['feature_std']:.4f} ({r['seconds']:.0f} s)", flush=True)
    minutes = (time.perf_counter() - total) / 60

    table = format_table(results)
    print()
    print(table)
    print(f"\ntotal {minutes:.1f} min")
    out = Path(args.out) if args.out else Path("benchmarks/results") / f"methods_{args.preset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"command": "python " + " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:])),
               "preset": args.preset, "images": len(data), "common_overrides": common,
               "total_minutes": minutes, "table": table, "results": results}
    out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {out}")
    return 0 if all("error" not in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
