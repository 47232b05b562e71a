"""conr cluster: train (or reuse) a model on a folder of images and write the
cluster assignments, one image grid per cluster, the paper's plots and a
self-contained HTML report."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import print_metrics

DESCRIPTION = """\
Cluster every image under PATH (nested or flat folders, any size or format) into K groups.

Without --checkpoint a model is trained first, with settings chosen from the images
(image size from their median size, small_cnn on a CPU / CIFAR ResNet on a GPU, batch
and epochs from their number: see conr/estimator.py); --config FILE and overrides
(section.key=value, e.g. train.epochs=50) change any of them. The trained run lives in
OUT/run (reuse it with --checkpoint OUT/run, continue a killed run with --resume).

OUT receives assignments.csv, clusters/cluster_XX.png, plots/*.png and report.html.
If the images sit in one sub-folder per class, the sub-folder names are used as ground
truth for NMI / ACC / ARI (never for training)."""


def run(args) -> int:
    from ..estimator import CoNR
    from ..io import check_writable
    from ..plots import ClusterSnapshot
    from ..report import write_outputs

    src = Path(args.path)
    if not src.exists():
        raise FileNotFoundError(f"{src} does not exist; give the folder that holds your images")
    if not src.is_dir():
        raise NotADirectoryError(f"{src} is a file; give the folder that holds your images")
    if args.k < 2:
        raise ValueError(f"--k {args.k}: clustering needs K >= 2")
    if args.grid_size < 1:
        raise ValueError(f"--grid-size {args.grid_size} must be >= 1")
    out = Path(args.out) if args.out else Path(f"{src.resolve().name}-conr")
    check_writable(out, need_bytes=64 * 2**20)  # before any decoding or training
    run_dir = out / "run"

    if args.checkpoint:
        if args.overrides or args.config or args.resume:
            raise ValueError("--checkpoint reuses a trained model as it is: drop --config, --resume and the "
                             "config overrides (or train anew without --checkpoint)")
        est = CoNR.from_checkpoint(args.checkpoint, n_clusters=args.k, device=args.device, verbose=True)
        est.set_params(on_bad_image=args.on_bad_image)
        print(f"conr cluster: reusing the model in {args.checkpoint} "
              f"({est.config_.model.backbone}, {est.config_.data.image_size} px)")
        est.cluster(src)
        how = f"reused the model in {args.checkpoint}"
    else:
        if (run_dir / "metrics.jsonl").exists() and not args.resume:
            raise FileExistsError(f"{run_dir} already holds a trained run; pass --checkpoint {run_dir} to reuse "
                                  f"it, --resume to continue it, or choose another --out")
        est = CoNR(n_clusters=args.k, device=args.device, seed=args.seed, config=args.config, minutes=args.minutes,
                   overrides=list(args.overrides), run_dir=str(run_dir), resume=args.resume,
                   on_bad_image=args.on_bad_image, verbose=True)
        print(f"conr cluster: reading the images under {src}")
        est.fit(src)
        how = f"trained in {run_dir}"

    cfg, data = est.config_, est.data_
    skipped = est.skipped_
    if skipped:
        print(f"warning: {len(skipped)} unreadable image file(s) skipped:")
        for p, why in skipped[:10]:
            print(f"  {p} ({why})")
        if len(skipped) > 10:
            print(f"  ... and {len(skipped) - 10} more (all listed in the report)")
    snap = ClusterSnapshot.from_estimator(est)
    hist = est.history_
    seconds = sum(r.get("epoch_seconds", 0.0) for r in hist)
    m = cfg.model
    settings = [
        ["source folder", str(src.resolve())],
        ["model", how],
        ["method", cfg.method],
        ["network", m.backbone + (f" (width {m.width})" if m.backbone == "small_cnn" and m.width else "")],
        ["image size", f"{cfg.data.image_size} px"],
        ["epochs", f"{est.trainer_.epoch} of {cfg.train.epochs} (stage 2 from epoch {cfg.stage2.start_epoch + 1})"
         if cfg.method == "conr" else f"{est.trainer_.epoch} of {cfg.train.epochs}"],
        ["batch size", cfg.train.batch_size],
        ["device", str(est.trainer_.device)],
        ["training time", f"{seconds / 60:.1f} min" if seconds else "-"],
        ["seed", cfg.train.seed],
    ]
    meta = {"title": f"conr clustering report: {src.resolve().name}", "source": str(src.resolve()),
            "metrics": est.metrics_, "settings": settings, "skipped": skipped,
            "truth_note": f"the {len(data.classes)} sub-folder names under {src}"}
    print(f"conr cluster: writing the outputs to {out}")
    written = write_outputs(snap, out, meta, plots=not args.no_plots, max_grid=args.grid_size, seed=cfg.train.seed)
    sizes = snap.labels.bincount(minlength=snap.n_clusters).tolist()
    print(f"clustered {len(snap.labels)} images into {snap.n_clusters} clusters (sizes {sizes}); "
          f"{len(skipped)} unreadable skipped")
    print(f"report: {written['report']}")
    print(f"assignments: {written['assignments']}")
    print_metrics(est.metrics_)
    return 0


def register(sub) -> None:
    p = sub.add_parser("cluster", help="cluster a folder of images: assignments, grids, plots, HTML report",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="folder of images (searched recursively)")
    p.add_argument("--k", type=int, required=True, help="number of clusters K (>= 2)")
    p.add_argument("--out", help="output folder (default: ./<folder name>-conr)")
    p.add_argument("--config", help="YAML config (or shipped name) merged over the automatic settings")
    p.add_argument("--checkpoint", help="reuse a trained model (a run folder or checkpoint.pt); no training")
    p.add_argument("--resume", action="store_true", help="continue the killed training run in OUT/run")
    p.add_argument("--minutes", type=float,
                   help="time budget for training: the first steps are timed and the epochs sized to fit "
                        "(default: from the number of images, 1.5-8 min on a CPU, 5-60 on a GPU; "
                        "train.epochs=N replaces it)")
    p.add_argument("--on-bad-image", choices=("skip", "fail"), default="skip",
                   help="unreadable image files: skip them (listed in the report) or stop (default: skip)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-plots", action="store_true", help="skip the t-SNE / neighbour / purity / training plots")
    p.add_argument("--grid-size", type=int, default=64, help="most images per cluster grid (default: 64)")
    p.add_argument("overrides", nargs="*", help="config overrides: section.key=value (e.g. train.epochs=50)")
    p.set_defaults(func=run)
