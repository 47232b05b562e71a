"""conr cluster: train (or reuse) a model on a folder of images and write the
cluster assignments, one image grid per cluster, the paper's plots and a
self-contained HTML report."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import print_metrics

DESCRIPTION = """\
Cluster every image under PATH (or, with --embeddings FILE, the rows of an N x D table) (nested or flat folders, any size or format) into K groups.
Without --k (or with --k auto, or a range --k 5..30) K is estimated: after the BYOL stage,
k-means runs on its features for every candidate K and the K of the highest mean
silhouette is used for CoNR's stage 2 (plots/k_selection.png shows the curve).

Without --checkpoint a model is trained first, with settings chosen from the images
(image size from their median size, small_cnn on a CPU / CIFAR ResNet on a GPU, batch
and epochs from their number: see conr/estimator.py); --config FILE and overrides
(section.key=value, e.g. train.epochs=50) change any of them. The trained run lives in
OUT/run (reuse it with --checkpoint OUT/run, continue a killed run with --resume).

OUT receives assignments.csv, clusters/cluster_XX.png, plots/*.png and report.html;
--export DIR also sorts the images into DIR/cluster_XX/ (boundary samples in a boundary/
sub-folder). An OUT or DIR inside PATH is left out of the images.
If the images sit in one sub-folder per class, the sub-folder names are used as ground
truth for NMI / ACC / ARI (never for training)."""


def option_names(args, out: Path) -> dict[str, str]:
    """The config keys and flags that conr cluster spells as its own options (conr/options.py)."""
    extra = "".join(f" {o}" for o in args.overrides)
    return {"run.out_dir": "--out", "run.name": "--out", "--run-dir": "--out", "data.on_bad_image": "--on-bad-image",
            "data.root": "PATH", "cluster.n_clusters": "--k", "n_clusters": "--k", "train.device": "--device",
            "resume-command": f"conr cluster {args.path} --out {out} --resume{extra}"}


def run(args) -> int:
    from ..options import command_options

    if args.embeddings and args.path and "=" in args.path and not Path(args.path).exists():
        args.overrides, args.path = [args.path, *args.overrides], None  # an override, not a folder
    if args.embeddings:  # vectors the user already has: conr/commands/embeddings.py
        from .embeddings import run_embeddings

        return run_embeddings(args)
    if not args.path:
        raise ValueError("give the folder of images to cluster (or --embeddings FILE for vectors)")
    src = Path(args.path)
    out = Path(args.out) if args.out else Path(f"{src.resolve().name}-conr")
    with command_options(option_names(args, out)):
        return _run(args, src, out)


def _run(args, src: Path, out: Path) -> int:
    from ..cluster.kselect import parse_k

    if not src.exists():
        raise FileNotFoundError(f"{src} does not exist; give the folder that holds your images")
    if not src.is_dir():
        raise NotADirectoryError(f"{src} is a file; give the folder that holds your images")
    try:
        k = parse_k(args.k)
    except ValueError as exc:
        raise ValueError(f"--k {args.k}: {exc}") from None
    if args.grid_size < 1:
        raise ValueError(f"--grid-size {args.grid_size} must be >= 1")
    if args.export:
        export = Path(args.export)
        if export.exists() and any(p.name != ".conr-output" for p in export.iterdir()):
            raise FileExistsError(f"--export {export} already holds files; give a new or empty folder")
    if args.resume and not (out / "run").exists():
        raise FileNotFoundError(f"--resume: there is no run to continue: {out / 'run'} does not exist; check --out "
                                f"or drop --resume to start a new run")
    created = not out.exists()
    try:
        return _cluster(args, src, out, k)
    except BaseException:
        # a run that failed before its first checkpoint leaves no folder behind
        if created and out.exists() and not (out / "run" / "checkpoint.pt").exists():
            import shutil

            shutil.rmtree(out, ignore_errors=True)
        raise


def _cluster(args, src: Path, out: Path, k) -> int:
    from ..data.folder import mark_output_folder, other_images, unread_note
    from ..estimator import CoNR
    from ..io import atomic_write_text, check_writable
    from ..outputs.plots import ClusterSnapshot
    from ..outputs.report import write_outputs
    from ..engine.runlock import acquire_run_lock, release_run_lock

    check_writable(out, need_bytes=64 * 2**20)  # before any decoding or training
    acquire_run_lock(out, "--out")
    mark_output_folder(out)  # an OUT inside PATH is never read back as images
    if _inside(out, src):
        print(f"conr cluster: {out} lies inside {src}; its files are left out of the images")
    run_dir = out / "run"

    if args.checkpoint:
        if args.overrides or args.config or args.resume:
            raise ValueError("--checkpoint reuses a trained model as it is: drop --config, --resume and the "
                             "config overrides (or train anew without --checkpoint)")
        # no --k: the model's own K; --k auto / a range: estimated from these images' features
        est = CoNR.from_checkpoint(args.checkpoint, n_clusters=None if args.k is None else k, device=args.device,
                                   verbose=True)
        est.set_params(on_bad_image=args.on_bad_image)
        print(f"conr cluster: reusing the model in {args.checkpoint} "
              f"({est.config_.model.backbone}, {est.config_.data.image_size} px)")
        est.cluster(src)
        how = f"reused the model in {args.checkpoint}"
        repeat = None
    else:
        if (run_dir / "metrics.jsonl").exists() and not args.resume:
            raise FileExistsError(f"{run_dir} already holds a trained run; pass --checkpoint {run_dir} to reuse "
                                  f"it, --resume to continue it, or choose another --out")
        est = CoNR(n_clusters=k, device=args.device, seed=args.seed, config=args.config, minutes=args.minutes,
                   overrides=list(args.overrides), run_dir=str(run_dir), resume=args.resume,
                   on_bad_image=args.on_bad_image, verbose=True, encoder=args.encoder,
                   encoder_weights=args.encoder_weights)
        print(f"conr cluster: reading the images under {src}")
        est.fit(src)
        how = f"trained in {run_dir}"
        repeat = repeat_command(args, src, out, est.run_record_, est.trainer_.epoch)
        print(f"conr cluster: to repeat this run (same epochs and seed): {repeat}")
        atomic_write_text(run_dir / "repeat.txt", repeat + "\n")

    cfg, data = est.config_, est.data_
    skipped = est.skipped_
    if skipped:
        print(f"warning: {len(skipped)} unreadable image file(s) skipped:")
        for p, why in skipped[:10]:
            print(f"  {p} ({why})")
        if len(skipped) > 10:
            print(f"  ... and {len(skipped) - 10} more (all listed in the report)")
    others = other_images(src)
    if others:
        print(f"warning: left out {unread_note(others)}")
    snap = ClusterSnapshot.from_estimator(est)
    hist = est.history_
    seconds = sum(r.get("epoch_seconds", 0.0) for r in hist)
    m = cfg.model
    selection = getattr(est, "k_selection_", None)
    if selection is not None:
        lo, hi = selection["k_range"]
        print(f"conr cluster: K = {selection['k']} estimated ({selection['criterion']} over K = {lo}..{hi})")
    settings = [
        ["source folder", str(src.resolve())],
        ["K", f"{snap.n_clusters} (estimated: highest {selection['criterion']} over {selection['k_range'][0]}.."
              f"{selection['k_range'][1]})" if selection is not None else f"{snap.n_clusters} (given)"],
        ["model", how],
        ["method", cfg.method],
        *([["encoder", f"{cfg.data.encoder} (frozen; its features are cached), then an mlp head"]]
          if cfg.data.encoder else
          [["network", m.backbone + (f" (width {m.width})" if m.backbone == "small_cnn" and m.width else "")],
           ["image size", f"{cfg.data.image_size} px"]]),
        ["epochs", _epochs_line(est.trainer_.epoch, cfg.train.epochs, est.trainer_.method.stage2_start())],
        ["batch size", cfg.train.batch_size],
        ["device", str(est.trainer_.device)],
        ["training time", f"{seconds / 60:.1f} min" if seconds else "-"],
        ["seed", cfg.train.seed],
    ]
    if repeat is not None:
        settings.append(["repeat this run", repeat])
    budget = getattr(est, "budget_", None)
    if budget:
        settings.append(["time budget", f"{budget['minutes']:g} min: estimated {budget['estimate_seconds'] / 60:.1f} "
                                        f"min, took {budget['actual_seconds'] / 60:.1f} min"])
    record = getattr(est, "run_record_", None)
    if record is not None:  # the automatic choices, and why
        settings.extend(record.settings_rows())
    meta = {"title": f"conr clustering report: {src.resolve().name}", "source": str(src.resolve()),
            "metrics": est.metrics_, "settings": settings, "skipped": skipped,
            "truth_note": f"the {len(data.classes)} sub-folder names under {src}",
            "partition": est.partition_.summary() if getattr(est, "partition_", None) is not None else None}
    print(f"conr cluster: writing the outputs to {out}")
    try:
        written = write_outputs(snap, out, meta, plots=not args.no_plots, max_grid=args.grid_size,
                                seed=cfg.train.seed, k_selection=selection)
    except OSError as exc:
        from ..io import OutputError, is_disk_full

        if not is_disk_full(exc):
            raise
        model = args.checkpoint or run_dir
        raise OutputError(f"no space left on the device while writing {exc.filename or exc}; the trained model in "
                          f"{model} is intact (every file is written atomically). Free some space, then write the "
                          f"outputs without training: conr cluster {src} --out {out} --checkpoint {model}") from None
    if args.export:
        from ..outputs.export import export_clusters

        counts = export_clusters(snap.paths, snap.labels.tolist(), snap.boundary.tolist(), args.export,
                                 args.export_mode, root=src)
        print(f"exported {counts['images']} images ({args.export_mode}) into {args.export}/cluster_XX/ "
              f"({counts['boundary']} boundary samples in cluster_XX/boundary/)")
    sizes = snap.labels.bincount(minlength=snap.n_clusters).tolist()
    print(f"clustered {len(snap.labels)} images into {snap.n_clusters} clusters (sizes {sizes}); "
          f"{len(skipped)} unreadable skipped")
    print(f"report: {written['report']}")
    print(f"assignments: {written['assignments']}")
    print_metrics(est.metrics_)
    release_run_lock(out)
    return 0


def repeat_command(args, src: Path, out: Path, record, trained_epochs: int) -> str:
    """The `conr cluster` command that trains this run again: the same options, with the
    pins of its run record (:meth:`conr.auto.record.RunRecord.repeat_pins`: the epochs the
    budget chose from a timing that varies, where it stopped, the seed, and what else the
    budget decided), into a new output folder. Same machine and versions, CPU or
    train.deterministic=true: the same assignments."""
    import shlex

    parts = ["conr", "cluster", str(src.resolve()), "--out", f"{out}-repeat"]
    if args.k is not None:
        parts += ["--k", str(args.k)]
    if args.config:
        parts += ["--config", str(args.config)]
    if args.device != "auto":
        parts += ["--device", args.device]
    if args.encoder != "auto":
        parts += ["--encoder", args.encoder]
    if args.encoder_weights:
        parts += ["--encoder-weights", str(Path(args.encoder_weights).resolve())]
    parts += ["--seed", str(record.config.train.seed)]
    if args.on_bad_image != "skip":
        parts += ["--on-bad-image", args.on_bad_image]
    pins = record.repeat_pins(trained_epochs)
    pinned = {p.split("=", 1)[0] for p in pins}
    overrides = [o for o in args.overrides if o.split("=", 1)[0] not in pinned | {"train.seed"}]
    return " ".join(shlex.quote(p) for p in parts + overrides + pins)


def _epochs_line(trained: int, planned: int, stage2_start: int | None) -> str:
    """The report's epochs line: epochs trained of planned and, for a method with a stage 2
    (CoNR, SimSiam-ConNR*, MoCo-ConNR*), where it begins and whether the run reached it."""
    line = f"{trained} of {planned}"
    if stage2_start is None:
        return line
    if trained < stage2_start:
        return f"{line} (stopped in stage 1; stage 2 would begin at epoch {stage2_start})"
    return f"{line} (stage 2 from epoch {stage2_start})"


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


def register(sub) -> None:
    p = sub.add_parser("cluster", help="cluster a folder of images: assignments, grids, plots, HTML report",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", nargs="?", help="folder of images (searched recursively)")
    p.add_argument("--embeddings", metavar="FILE",
                   help="cluster vectors you already have instead of images: an N x D table in .npy, .csv or "
                        ".parquet (pyarrow); trains an MLP with CoNR; writes OUT/assignments.csv, features.npy, "
                        "summary.json")
    p.add_argument("--k", default=None, help="number of clusters: K >= 2, 'auto' (the default) or a range of "
                                              "candidates such as 5..30, estimated from the learned features")
    p.add_argument("--out", help="output folder (default: ./<folder name>-conr)")
    p.add_argument("--config", help="YAML config (or shipped name) merged over the automatic settings")
    p.add_argument("--checkpoint", help="reuse a trained model (a run folder or checkpoint.pt); no training")
    p.add_argument("--resume", action="store_true", help="continue the killed training run in OUT/run")
    p.add_argument("--minutes", type=float,
                   help="time budget for training: the first steps are timed and the epochs sized to fit "
                        "(default: from the number of images, 1.5-8 min on a CPU, 5-60 on a GPU; "
                        "train.epochs=N replaces it)")
    p.add_argument("--encoder", default="auto",
                   help="images: auto (colour photos -> the embedded ImageNet encoder efficientnet_lite0, grey "
                        "images -> trained from scratch), none (from scratch), or an encoder: efficientnet_lite0, "
                        "timm:NAME, torchvision:NAME, open_clip:ARCH/TAG (these need network once, or "
                        "--encoder-weights); CoNR then trains on the encoder's features")
    p.add_argument("--encoder-weights", metavar="FILE",
                   help="a local state-dict file (.pth, .pt, .bin, .safetensors) for --encoder: no network needed")
    p.add_argument("--on-bad-image", choices=("skip", "fail"), default="skip",
                   help="unreadable image files: skip them (listed in the report) or stop (default: skip)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-plots", action="store_true", help="skip the t-SNE / neighbour / purity / training plots")
    p.add_argument("--grid-size", type=int, default=64, help="most images per cluster grid (default: 64)")
    p.add_argument("--export", metavar="DIR", help="also sort the images into DIR/cluster_XX/ "
                                                    "(boundary samples in cluster_XX/boundary/)")
    p.add_argument("--export-mode", choices=("copy", "symlink"), default="copy",
                   help="--export copies the files (default) or links them")
    p.add_argument("overrides", nargs="*", help="config overrides: section.key=value (e.g. train.epochs=50)")
    p.set_defaults(func=run)
