"""Helpers shared by the sub-commands."""
from __future__ import annotations

import argparse


class OverrideParser(argparse.ArgumentParser):
    """A sub-command parser that lets positionals and options mix in any order
    (``PATH --k 3 --out o train.epochs=5``; plain argparse refuses positionals after
    options once the first positional is consumed) and also takes config overrides
    written ``--section.key=value``, appended to ``args.overrides``."""

    _inside = False

    def parse_known_args(self, args=None, namespace=None):
        if self._inside:
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            ns, rest = self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False
        dotted = [a for a in rest if a.startswith("--") and "=" in a and "." in a.split("=", 1)[0]]
        if dotted:
            ns.overrides = list(getattr(ns, "overrides", None) or []) + [a[2:] for a in dotted]
        return ns, [a for a in rest if a not in dotted]


# What `conr methods` and `conr train --help` list, kept here so that they answer without
# importing torch (tests/test_cli_fast.py checks it against the registry in conr/methods/).
METHOD_SUMMARIES = {
    "byol": "BYOL instance concordance for every epoch (the paper's baseline)",
    "conr": "CoNR: BYOL warm-up, then ConAff neighbourhoods + progressive boundary filtering",
    "hadis": "HaDis: BYOL with latent noise + hardness-aware self-distillation + prototypical contrast over "
             "pseudo-clusters",
    "moco": "MoCo v2: momentum key encoder, queue of negatives, InfoNCE with temperature (baseline)",
    "moco_connr": "MoCo v2, then ConNR*: InfoNCE with the ConAff neighbourhood of each key as positives",
    "simsiam": "SimSiam: projector + predictor, D = -cos with stop-gradient, symmetric (baseline)",
    "simsiam_connr": "SimSiam, then ConNR*: D(p1, stopgrad z2^j) averaged over the ConAff neighbourhood of z2",
}


def methods_listing() -> str:
    lines = [f"  {name:14s} {text}" for name, text in sorted(METHOD_SUMMARIES.items())]
    return "methods (config key `method`):\n" + "\n".join(lines)


def print_metrics(metrics: dict) -> None:
    """The closing line of a run: nmi=… acc=… ari=… (fractions)."""
    if {"nmi", "acc", "ari"} <= metrics.keys():
        scored = f" scored={metrics['scored']}" if "scored" in metrics else ""
        print(f"nmi={metrics['nmi']:.4f} acc={metrics['acc']:.4f} ari={metrics['ari']:.4f}{scored}")


def split_overrides(items: list[str]) -> list[str]:
    """Config overrides given as ``key=value`` or ``--key=value``; anything else is an error."""
    out = []
    for item in items:
        if item.startswith("--"):
            item = item[2:]
        if "=" not in item:
            raise ValueError(f"unknown argument {item!r}; overrides look like data.root=/path")
        out.append(item)
    return out


def parse_ks(text: str | None) -> list[int] | None:
    """Neighbour counts written ``5,10,20`` (--ks / --purity-ks); None when not given."""
    if not text:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"neighbour counts {text!r} (--ks / --purity-ks): give comma-separated integers, "
                         "e.g. 5,10,20") from None


def load_run(path, device: str | None = None, overrides: list[str] | None = None, log=print):
    """A saved run's trainer with its rows, for eval, plot and purity: the images its config names,
    or for a run on an encoder's features, that encoder's features of its folder (read
    from the feature cache where they are there)."""
    from ..engine import Trainer, load_checkpoint
    from ..engine.checkpoint import checkpoint_config

    ckpt = load_checkpoint(path, "cpu")
    cfg = checkpoint_config(ckpt, overrides, device)
    if not cfg.data.encoder:
        return Trainer.from_checkpoint(path, device=device, overrides=overrides, log=log, ckpt=ckpt)
    from ..auto.photos import photo_data
    from ..encoders import load_encoder
    from ..engine.vectors import VectorTrainer

    if not cfg.data.root:
        raise ValueError(f"the run in {path} clustered in-memory images through {cfg.data.encoder}: there is no "
                         f"folder to read again; give data.root=/the/folder")
    encoder = load_encoder(cfg.data.encoder, weights=cfg.data.encoder_weights)
    data = photo_data(cfg.data.root, encoder, on_bad_image=cfg.data.on_bad_image, log=log)
    return VectorTrainer.from_checkpoint(path, data=data, device=device, overrides=overrides, log=log, ckpt=ckpt)
