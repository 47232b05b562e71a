"""conr sweep: run an experiment grid (the paper's ablations and sweeps) resumably and
write one CSV and one plot."""
from __future__ import annotations

import argparse


DESCRIPTION = """\
Run every row of a grid file (conr/configs/sweeps/*.yaml, or your own): an optional shared
warm-up (a stage-1 BYOL run trained once, each row then starts from its checkpoint as the
paper's runs did), then one training run per row, each in OUT/<row>. Rows already finished
are skipped and a row stopped part-way resumes, so running the command again completes a
sweep. OUT receives results.csv (final and best NMI / ACC / ARI per row), epochs.csv
(per-epoch metrics) and results.png. Grids of kind "purity" compute the neighbour purity of
checkpoints' features instead (paper Figure 2): purity.csv and purity.png.

Config overrides (section.key=value or --section.key=value) apply to the warm-up and to
every row, after the grid's own values, e.g. data.root=/data/cifar10 train.device=cuda."""


def run(args) -> int:
    from ..sweep import load_sweep, run_sweep, shipped_grids
    from .common import split_overrides

    if args.list:
        for p in shipped_grids():
            print(p.stem)
        return 0
    if not args.grid:
        raise ValueError("conr sweep needs a grid file (or --list for the shipped ones)")
    sweep = load_sweep(args.grid, split_overrides(list(args.overrides)), args.out)
    if args.dry_run:
        print(f"grid {sweep.path} ({sweep.kind}); base {sweep.base}; results in {sweep.out}")
        if sweep.description:
            print("  " + sweep.description.replace("\n", "\n  "))
        shared = " ".join(sweep.shared + sweep.cli)
        if sweep.warmup is not None:
            w = sweep.warmup
            print(f"warm-up: conr train --config {sweep.base} --run-dir {w.run_dir} --until-epoch {w.until_epoch} "
                  f"{shared} {' '.join(w.overrides)}".rstrip())
        for r in sweep.rows:
            init = f" --init-from {sweep.warmup.run_dir}/checkpoint.pt" if sweep.warmup is not None else ""
            print(f"row {r.name}: conr train --config {sweep.base} --run-dir {r.run_dir}{init} {shared} "
                  f"{' '.join(r.overrides)}".rstrip())
        for name, why in sweep.dropped:
            print(f"left out {name}: {why}")
        if sweep.kind == "purity":
            for name, src in sweep.purity["checkpoints"].items():
                print(f"purity {name}: {src}")
        return 0
    only = [x.strip() for x in args.rows.split(",") if x.strip()] if args.rows else None
    result = run_sweep(sweep, only=only)
    for key, path in result["paths"].items():
        print(f"wrote {path}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("sweep", help="run an experiment grid (ablations, sweeps): one CSV and one plot",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("grid", nargs="?", help="grid YAML file, or the name of a shipped grid (e.g. table2_cpu)")
    p.add_argument("--out", help="results folder (default: the grid's out, else runs/sweeps/<grid name>)")
    p.add_argument("--rows", help="comma-separated row names to run now (the CSV lists every finished row)")
    p.add_argument("--dry-run", action="store_true", help="check the grid and print the equivalent commands")
    p.add_argument("--list", action="store_true", help="list the shipped grid files")
    p.add_argument("overrides", nargs="*", help="config overrides for every run, e.g. data.root=/path")
    p.set_defaults(func=run)
