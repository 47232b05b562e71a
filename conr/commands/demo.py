"""conr demo: BYOL warm-up then CoNR on scikit-learn's bundled digits, offline."""
from __future__ import annotations

import argparse
from datetime import datetime

from .common import print_metrics

DESCRIPTION = """\
BYOL warm-up then CoNR on scikit-learn's 1,797 bundled 8x8 digits (offline, CPU).
The shipped schedule is 120 epochs, stage 2 (CoNR) from epoch 81, boundary filter
relaxed until epoch 95; train.epochs=N scales that schedule to N epochs (e.g.
train.epochs=30: CoNR from epoch 21), unless stage2.start_epoch / stage2.t_end are
given too. The run ends with nmi=... acc=... ari=... (ACC 0.91-0.96 over seeds 0-2 with the
shipped schedule; README "The demo's result")."""


def scaled_schedule(epochs: int, base_epochs: int, start: int, t_end: int, eval_every: int) -> list[str]:
    """Overrides that keep the stage-2 start, the relaxation window and the scoring
    interval at the same fractions of the run when train.epochs changes from
    ``base_epochs`` to ``epochs`` (stage 2 keeps at least one epoch)."""
    if epochs < 2:
        raise ValueError(f"train.epochs={epochs}: the demo needs at least 2 epochs (BYOL, then CoNR)")
    new_start = min(epochs - 1, max(1, round(start * epochs / base_epochs)))
    new_end = min(epochs, max(new_start + 1, round(t_end * epochs / base_epochs)))
    every = max(1, round(eval_every * epochs / base_epochs))
    return [f"stage2.start_epoch={new_start}", f"stage2.t_end={new_end}", f"cluster.eval_every={every}"]


def demo_config(out_dir: str, name: str, user_overrides: list[str]):
    """The digits config with the user's overrides; train.epochs=N alone scales the
    stage-2 schedule (:func:`scaled_schedule`)."""
    from ..config import load_config, parse_override

    # the final labels from the final stage (conr/cluster/final.py), not from one k-means draw of the last
    # epoch, with the pixels' candidates and the joint one as `conr cluster` has them (docs/results.md, "The
    # demo": every seed higher than on the features alone)
    overrides = [f"run.out_dir={out_dir}", f"run.name={name}", "cluster.final=auto"] + list(user_overrides)
    keys = {".".join(parse_override(o)[0]) for o in user_overrides}
    if "train.epochs" in keys and not keys & {"stage2.start_epoch", "stage2.t_end"}:
        base = load_config("digits")
        epochs = [parse_override(o)[1] for o in user_overrides if parse_override(o)[0] == ["train", "epochs"]][-1]
        if isinstance(epochs, bool) or not isinstance(epochs, int):
            raise ValueError(f"train.epochs={epochs!r} must be a whole number of epochs")
        scaled = scaled_schedule(epochs, base.train.epochs, base.stage2.start_epoch, base.stage2.t_end,
                                 base.cluster.eval_every)
        if "cluster.eval_every" in keys:
            scaled = scaled[:2]
        overrides = scaled + overrides  # the user's own overrides still win
    return load_config("digits", overrides)


def run(args) -> int:
    from ..engine import Trainer

    cfg = demo_config(args.out_dir, f"demo-{datetime.now():%Y%m%d-%H%M%S}", list(args.overrides))
    print(f"conr demo: {cfg.method} on scikit-learn digits, {cfg.train.epochs} epochs (BYOL for "
          f"{cfg.stage2.start_epoch}, then CoNR), device {cfg.train.device}")
    result = Trainer(cfg).fit()
    print(f"run folder: {result.run_dir}")
    print_metrics(result.metrics)
    return 0


def register(sub) -> None:
    p = sub.add_parser("demo", help="BYOL warm-up then CoNR on scikit-learn digits (offline, CPU, minutes)",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", default="runs", help="where the run folder goes (default: runs)")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. train.epochs=30 (the stage-2 schedule "
                                                 "scales with it)")
    p.set_defaults(func=run)
