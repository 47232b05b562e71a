"""conr train: train any registered method from a YAML config."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import methods_listing, print_metrics


def run(args) -> int:
    from ..config import load_config
    from ..engine import Trainer

    if args.list_methods:
        print(methods_listing())
        return 0
    run_dir = Path(args.run_dir) if args.run_dir else None
    if args.resume:
        if run_dir is None:
            raise ValueError("--resume needs --run-dir RUN_FOLDER (the folder holding checkpoint.pt)")
        if not run_dir.exists():
            raise FileNotFoundError(f"--resume: the run folder {run_dir} does not exist; check --run-dir, or start "
                                    f"a new run without --resume")
        if args.config is None and not (run_dir / "config.yaml").exists():
            raise FileNotFoundError(f"--resume: {run_dir} holds no config.yaml, so it is not a conr run folder "
                                    f"(or the run was stopped before it began); check --run-dir")
        cfg = load_config(args.config or (run_dir / "config.yaml"), args.overrides)
    elif args.config is None:
        raise ValueError("conr train needs --config FILE (or a shipped config name such as cifar10)")
    else:
        cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print(resolved_config_text(cfg, args.config, args.overrides), end="")
        return 0
    trainer = Trainer(cfg, run_dir=run_dir, resume=args.resume, init_from=args.init_from)
    # on an error the process just exits: torchrun then stops the other ranks
    result = trainer.fit(until_epoch=args.until_epoch)
    trainer.close()  # under torchrun: destroy the process group this run started
    if trainer.dist.is_main:  # one writer: rank 0 reports
        print(f"run folder: {result.run_dir}")
        print_metrics(result.metrics)
    return 0


def resolved_config_text(cfg, source, overrides) -> str:
    """The config a run would use, every key resolved (inherited files, overrides, defaults),
    as YAML that ``--config`` reads back."""
    import yaml

    from ..config import config_to_dict, resolve_config_path

    where = resolve_config_path(source) if source is not None else "defaults"
    head = f"# resolved config of {where}" + (f" with {' '.join(overrides)}" if overrides else "") + "\n"
    head += "# where each value comes from: the comments of the config file (official code / paper text)\n"
    return head + yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None)


def register(sub) -> None:
    p = sub.add_parser("train", help="train a method from a YAML config", epilog=methods_listing(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML file, or the name of a shipped config (e.g. cifar10)")
    p.add_argument("--run-dir", help="run folder (default: run.out_dir/run.name)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its checkpoint")
    p.add_argument("--init-from", help="start from another run's checkpoint (e.g. a stage-1 BYOL run)")
    p.add_argument("--until-epoch", type=int, help="stop after this epoch, the schedule still that of train.epochs "
                   "(e.g. a BYOL warm-up to t0 for --init-from: method=byol --until-epoch 800)")
    p.add_argument("--list-methods", action="store_true", help="list the known methods and exit")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (file, its _base_ files, overrides, defaults) as YAML and exit "
                        "without training")
    p.add_argument("overrides", nargs="*", help="config overrides: section.key=value (e.g. stage2.k=20)")
    p.set_defaults(func=run)
