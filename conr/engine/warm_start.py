"""Starting a run from another run's checkpoint (``init_from``): the compatibility
checks and the provenance record.

The paper's stage-2 runs resumed from BYOL checkpoints taken at epoch t0; here any
conr checkpoint can seed a run whose network has the same shape (BYOL -> CoNR or
HaDis, CoNR -> CoNR with other stage-2 switches, ...). Before any weight is loaded,
:func:`init_provenance` checks that the checkpoint fits the new run and raises a
:class:`~conr.config.ConfigError` naming the keys to change when it does not (another
backbone or head width, another method family, images with other channels, an epoch
past the end of the schedule). It returns the record that the trainer logs and writes
to ``events.jsonl``: the checkpoint's path, epoch, method, data and its full config,
with the config keys in which the new run differs.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from ..config import Config, ConfigError, config_to_dict

__all__ = ["init_provenance", "config_differences"]

# keys that say where and how a run is written or executed, not what it computes
_IGNORED = ("run.", "train.device", "train.threads", "train.compile", "data.workers", "data.in_memory",
            "data.download", "cluster.eval_batch_size")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_differences(old: dict, new: dict, ignore=_IGNORED) -> dict[str, list]:
    """{dotted key: [old value, new value]} for every key where two config dicts differ,
    leaving out output/execution keys (run.*, device, threads, ...)."""
    a, b = _flatten(old or {}), _flatten(new or {})
    out = {}
    for key in sorted(set(a) | set(b)):
        if any(key == i or (i.endswith(".") and key.startswith(i)) for i in ignore):
            continue
        if a.get(key) != b.get(key):
            out[key] = [a.get(key), b.get(key)]
    return out


def init_provenance(ckpt: dict, cfg: Config, method: nn.Module, path: str | Path,
                    channels: int | None = None, n_images: int | None = None) -> dict:
    """Check that ``ckpt`` can initialise a run of ``cfg`` (whose freshly built
    network is ``method``) and return its provenance record; raise ConfigError with
    the fix otherwise."""
    src = ckpt.get("config") or {}
    src_model = src.get("model") or {}
    src_method = ckpt.get("method") or src.get("method")
    info = ckpt.get("data") or {}
    epoch = int(ckpt.get("epoch", 0))
    where = str(path)
    problems = []
    if src_model.get("backbone") not in (None, cfg.model.backbone):
        problems.append(f"model.backbone: the checkpoint has {src_model['backbone']!r}, this config "
                        f"{cfg.model.backbone!r}")
    if channels is not None and info.get("channels") not in (None, channels):
        problems.append(f"images: the checkpoint was trained on {info['channels']}-channel images, this data "
                        f"has {channels}")
    own = method.state_dict()
    theirs = ckpt.get("method_state") or {}
    shapes = [f"{k} {tuple(theirs[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in theirs and hasattr(theirs[k], "shape") and tuple(theirs[k].shape) != tuple(v.shape)]
    missing = [k for k in own if k not in theirs]
    if shapes and not problems:
        widths = ", ".join(f"model.{k}={src_model[k]!r}" for k in ("width", "hidden_dim", "proj_dim")
                           if k in src_model and src_model[k] != getattr(cfg.model, k))
        problems.append(f"weight shapes differ ({'; '.join(shapes[:3])}{' ...' if len(shapes) > 3 else ''})"
                        + (f"; the checkpoint was trained with {widths}" if widths else ""))
    if missing and not problems:
        problems.append(f"the checkpoint ({src_method}) holds no weights for {len(missing)} of the "
                        f"{len(own)} tensors of a {cfg.method} network (e.g. {', '.join(missing[:3])}): "
                        f"{src_method} and {cfg.method} do not share a network")
    if problems:
        raise ConfigError(f"--init-from {where} cannot start this run: " + "; ".join(problems)
                          + ". Use a checkpoint trained with the same model section (and a method with the "
                            "same network), or change the config to match it")
    if epoch >= cfg.train.epochs:
        raise ConfigError(f"--init-from {where}: the checkpoint is at epoch {epoch} but train.epochs="
                          f"{cfg.train.epochs}; raise train.epochs to train further")
    diffs = config_differences(src, config_to_dict(cfg))
    src_train = src.get("train") or {}
    bits = [f"initialised from {where}: a {src_method} checkpoint at epoch {epoch}",
            f"(data {info.get('name')}, {info.get('n')} images, backbone {src_model.get('backbone')}, "
            f"seed {src_train.get('seed')}, schedule of {src_train.get('epochs')} epochs)"]
    note = " ".join(bits)
    if n_images is not None and info.get("n") not in (None, n_images):
        note += f"; it saw {info.get('n')} images, this run has {n_images} (its pseudo-labels are not reused)"
    if src_train.get("epochs") not in (None, cfg.train.epochs):
        note += (f"; its LR/EMA schedule ran over {src_train.get('epochs')} epochs, this run continues on a "
                 f"schedule of {cfg.train.epochs}")
    if diffs:
        shown = ", ".join(f"{k} {v[0]!r} -> {v[1]!r}" for k, v in list(diffs.items())[:8])
        note += f"; config changes: {shown}" + (f" (+{len(diffs) - 8} more)" if len(diffs) > 8 else "")
    return {"path": str(Path(path).resolve()), "epoch": epoch, "method": src_method,
            "data": {k: info.get(k) for k in ("name", "n", "channels")}, "config": src,
            "differences": diffs, "note": note}
