"""conr plot: the paper's figures (t-SNE, Euclidean vs ConAff neighbours, purity
vs K, training curves) for any run folder."""
from __future__ import annotations

from pathlib import Path


def _checkpoint_of(run: Path) -> Path:
    """A run folder, a checkpoint file, or a `conr cluster` output folder (its run/)."""
    from ..engine import CHECKPOINT_NAME

    if run.is_file() or (run / CHECKPOINT_NAME).exists():
        return run
    if (run / "run" / CHECKPOINT_NAME).exists():
        return run / "run"
    raise FileNotFoundError(f"no {CHECKPOINT_NAME} in {run}; give a run folder written by conr train / conr cluster")


def run(args) -> int:
    from ..io import check_writable
    from ..outputs.plots import PLOTS, ClusterSnapshot, history_from_run, make_plots
    from .common import load_run

    src = _checkpoint_of(Path(args.run_dir))
    run_dir = src if src.is_dir() else src.parent
    which = [w.strip() for w in args.only.split(",")] if args.only else list(PLOTS)
    unknown = [w for w in which if w not in PLOTS]
    if unknown:
        raise ValueError(f"--only {args.only}: unknown plot(s) {unknown}; choose from {', '.join(PLOTS)}")
    out = check_writable(Path(args.out) if args.out else run_dir / "plots", need_bytes=16 * 2**20)
    trainer = load_run(src, device=None if args.device == "auto" else args.device, overrides=list(args.overrides))
    print(f"conr plot: {trainer.cfg.method} run at epoch {trainer.epoch}, {len(trainer.data)} images")
    snap = ClusterSnapshot.from_trainer(trainer, history_from_run(run_dir, trainer.history))
    make_plots(snap, out, which, seed=trainer.cfg.train.seed)
    for name in which:
        print(f"wrote {out / (name + '.png')}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("plot", help="t-SNE, neighbour, purity and training plots of a run folder")
    p.add_argument("run_dir", help="run folder (or checkpoint file, or a conr cluster output folder)")
    p.add_argument("--out", help="where the PNGs go (default: RUN_DIR/plots)")
    p.add_argument("--only", help="comma-separated subset of: tsne,neighbors,purity,training")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("overrides", nargs="*", help="config overrides for reloading the data, e.g. data.root=/new/path")
    p.set_defaults(func=run)
