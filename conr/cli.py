"""Command line: ``conr demo | train | methods``.

Errors a user can fix (bad config, missing data, K too large, NaN loss, an
unwritable folder) print one clear line and exit with status 2; ``--debug``
shows the traceback instead.
"""
from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

__all__ = ["main", "build_parser"]

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, FloatingPointError)


def _methods_epilog() -> str:
    from .methods import METHODS

    lines = [f"  {name:10s} {cls.description}" for name, cls in sorted(METHODS.items())]
    return "methods (config key `method`):\n" + "\n".join(lines)


def _print_metrics(metrics: dict) -> None:
    if {"nmi", "acc", "ari"} <= metrics.keys():
        print(f"nmi={metrics['nmi']:.4f} acc={metrics['acc']:.4f} ari={metrics['ari']:.4f}")


def cmd_demo(args) -> int:
    from .config import load_config
    from .train import Trainer

    overrides = list(args.overrides)
    name = f"demo-{datetime.now():%Y%m%d-%H%M%S}"
    cfg = load_config("digits", [f"run.out_dir={args.out_dir}", f"run.name={name}"] + overrides)
    print(f"conr demo: {cfg.method} on scikit-learn digits ({cfg.train.epochs} epochs, BYOL warm-up "
          f"for {cfg.stage2.start_epoch}, then CoNR), on {cfg.train.device}")
    result = Trainer(cfg).fit()
    _print_metrics(result.metrics)
    return 0


def cmd_train(args) -> int:
    from .config import load_config
    from .train import Trainer

    if args.list_methods:
        print(_methods_epilog())
        return 0
    if args.config is None and not args.resume:
        raise ValueError("conr train needs --config FILE (or a shipped config name such as cifar10)")
    run_dir = Path(args.run_dir) if args.run_dir else None
    if args.resume:
        if run_dir is None:
            raise ValueError("--resume needs --run-dir RUN_FOLDER (the folder holding checkpoint.pt)")
        cfg_path = args.config or (run_dir / "config.yaml")
        cfg = load_config(cfg_path, args.overrides)
    else:
        cfg = load_config(args.config, args.overrides)
    trainer = Trainer(cfg, run_dir=run_dir, resume=args.resume, init_from=args.init_from)
    result = trainer.fit()
    _print_metrics(result.metrics)
    print(f"run folder: {result.run_dir}")
    return 0


def cmd_methods(args) -> int:
    print(_methods_epilog())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="conr", description="Deep image clustering with CoNR.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="BYOL warm-up then CoNR on scikit-learn digits (offline, CPU, minutes)")
    demo.add_argument("--out-dir", default="runs", help="where the run folder goes (default: runs)")
    demo.add_argument("overrides", nargs="*", help="config overrides, e.g. train.epochs=50")
    demo.set_defaults(func=cmd_demo)

    train = sub.add_parser("train", help="train a method from a YAML config",
                           epilog=_methods_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("--config", help="YAML file, or the name of a shipped config (e.g. cifar10)")
    train.add_argument("--run-dir", help="run folder (default: run.out_dir/run.name)")
    train.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its checkpoint")
    train.add_argument("--init-from", help="start from another run's checkpoint (e.g. a stage-1 BYOL run)")
    train.add_argument("--list-methods", action="store_true", help="list the known methods and exit")
    train.add_argument("overrides", nargs="*", help="config overrides: section.key=value (e.g. stage2.k=20)")
    train.set_defaults(func=cmd_train)

    methods = sub.add_parser("methods", help="list the known methods")
    methods.set_defaults(func=cmd_methods)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; the last epoch's checkpoint is kept", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
