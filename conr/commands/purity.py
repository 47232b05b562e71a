"""conr purity: neighbour purity against K of a checkpoint's features (paper Figure 2)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


DESCRIPTION = """\
Extract the target features of a saved run, cut the clustered set into random batches of the
run's training batch size (the neighbourhood is searched inside a batch, as in training) and
report, for every K, the share of an anchor's K nearest other samples that share its class:
Euclidean (top-K cosine) and ConAff neighbourhoods, each also over the anchors the boundary
filter keeps (k-means of the same features, fraction --keep-fraction, default the run's fr0).
Writes purity.csv and purity.png (default folder: RUN/purity)."""


def run(args) -> int:
    from ..outputs.evaluation import checkpoint_purity, plot_purity, write_purity
    from ..io import atomic_write_text, check_writable
    from .common import load_run, parse_ks, split_overrides

    src = Path(args.checkpoint)
    run_dir = src if src.is_dir() else src.parent
    out = check_writable(Path(args.out) if args.out else run_dir / "purity", need_bytes=4 * 2**20)
    trainer = load_run(src, device=None if args.device == "auto" else args.device,
                       overrides=split_overrides(list(args.overrides)))   # a photo run: its encoder's features
    res = checkpoint_purity(trainer, ks=parse_ks(args.ks), batch_size=args.batch_size, k1=args.k1, k2=args.k2,
                            keep_fraction=args.keep_fraction, n_batches=args.batches,
                            with_filter=not args.no_filter)
    res["epoch"] = trainer.epoch
    res["checkpoint"] = str(src)
    modes = list(res["curves"])
    print(f"conr purity: {trainer.cfg.method} run at epoch {trainer.epoch}, {len(trainer.data)} images, batches of "
          f"{res['batch_size']}, k1={res['k1']} k2={res['k2']}"
          + (f", filter keeps {res['keep_fraction']:.2f}" if res["keep_fraction"] is not None else ""))
    print("K".rjust(6) + "".join(m.rjust(18) for m in modes))
    for j, k in enumerate(res["ks"]):
        print(str(k).rjust(6) + "".join(f"{res['curves'][m][j]:18.4f}" for m in modes))
    csv_path = write_purity(res, out / "purity.csv")
    png = plot_purity({src.name: res}, out / "purity.png",
                      title=f"neighbour purity, {trainer.cfg.method} epoch {trainer.epoch}")
    atomic_write_text(out / "purity.json", json.dumps(res, indent=1) + "\n")
    print(f"wrote {csv_path}\nwrote {png}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("purity", help="neighbour purity vs K of a run's features (Euclidean vs ConAff, filter)",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="run folder or checkpoint file")
    p.add_argument("--out", help="output folder (default: RUN/purity)")
    p.add_argument("--ks", help="comma-separated K (default 1,5,10,20,50,100; those below the batch size)")
    p.add_argument("--batch-size", type=int, help="batch the neighbours are searched in (default: the run's)")
    p.add_argument("--k1", type=int, help="ConAff k1 (default: the run's stage2.k1)")
    p.add_argument("--k2", type=int, help="ConAff k2 (default: the run's stage2.k2)")
    p.add_argument("--keep-fraction", type=float, help="boundary filter's kept fraction (default: stage2.fr0)")
    p.add_argument("--no-filter", action="store_true", help="skip the boundary-filter variants")
    p.add_argument("--batches", type=int, help="score only this many batches (default: all)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. data.root=/new/path")
    p.set_defaults(func=run)
