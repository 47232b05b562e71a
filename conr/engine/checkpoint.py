"""A run's checkpoint: what it holds, writing it (atomically, with a note naming the fix
when the disk is full), reading it, and putting it back into a trainer, for a resumed
run, a warm start or a model loaded for evaluation and prediction (one way for all:
``Trainer.from_checkpoint``). It holds plain data only and is read without running
anything the file names (conr/engine/safe_pickle.py): a checkpoint someone hands over
cannot run code."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch

from ..config import ConfigError, apply_overrides, config_from_dict, config_to_dict
from ..data.base import ImageData
from ..errors import NonFiniteLossError, OutputError, UnsafeCheckpointError
from ..io import atomic_torch_save, is_disk_full
from ..options import option
from .safe_pickle import plain_data, safe_torch_load
from .speed import set_sgd_impl

__all__ = ["CHECKPOINT_NAME", "CHECKPOINT_VERSION", "load_checkpoint", "checkpoint_config", "placeholder_data",
           "trainer_state", "restore", "save", "rewrite", "disk_full_note"]

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_VERSION = 1


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """The checkpoint of a run folder or ``.pt`` file, read as plain data: a file that
    holds code or other objects raises UnsafeCheckpointError and runs nothing."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}; give a run folder or a .pt file written by conr")
    try:
        ckpt = safe_torch_load(path, map_location)
    except UnsafeCheckpointError:
        raise
    except Exception as exc:
        raise ValueError(f"{path} is not a readable conr checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or "method_state" not in ckpt:
        raise ValueError(f"{path} is not a conr checkpoint (no method_state)")
    return ckpt


def checkpoint_config(ckpt: dict, overrides: list[str] | None = None, device: str | None = None):
    """The saved run's config for a read-only trainer: no progress bar, ``overrides`` and
    ``device`` (None: the saved one) applied."""
    raw = apply_overrides(ckpt["config"], list(overrides or []) + ["run.progress=false"])
    if device is not None:
        raw = apply_overrides(raw, [f"train.device={device}"])
    return config_from_dict(raw)


def placeholder_data(ckpt: dict, cfg):
    """Blank rows of the checkpoint's kind, enough for one batch and K clusters: a trainer
    that only holds the weights (to predict on other images): images of its channels and
    size, or for a run on vectors (the ``mlp`` backbone), zero vectors of its width."""
    info = ckpt.get("data", {})
    n, size = max(cfg.train.batch_size, cfg.cluster.n_clusters), cfg.data.image_size
    if cfg.model.backbone == "mlp":
        from ..data.vectors import VectorData

        return VectorData(images=torch.zeros(n, info.get("channels", 1)), labels=torch.full((n,), -1, dtype=torch.long),
                          name=info.get("name", "vectors"),
                          representation="encoder" if cfg.data.encoder else "vectors")
    return ImageData(images=torch.zeros(n, info.get("channels", 3), size, size, dtype=torch.uint8),
                     labels=torch.full((n,), -1, dtype=torch.long), name=info.get("name", "data"),
                     normalization="imagenet")


def trainer_state(trainer) -> dict:
    """Everything a run needs to continue (and its outputs need to be read), as plain
    data: numpy values become tensors and Python numbers, so the file loads with
    ``weights_only=True`` (a TypeError names anything that could not)."""
    final = trainer.final_arrays
    return plain_data({
        "version": CHECKPOINT_VERSION,
        "config": config_to_dict(trainer.cfg),
        "epoch": trainer.epoch,
        "method": trainer.cfg.method,
        "method_state": trainer.method.state_dict(),
        "optimizer_state": trainer.optimizer.state_dict(),
        "pseudo_labels": None if trainer.pseudo_labels is None else trainer.pseudo_labels.cpu(),
        "centers": None if trainer.centers is None else trainer.centers.cpu(),
        "cluster_epoch": trainer.cluster_epoch,
        "final_labels": final[0] if final else None,
        "final_centers": final[1] if final else None,
        "final_features": final[2] if final else None,
        "partition": trainer.partition.to_dict() if trainer.partition is not None else None,
        "stage2_seeded": trainer.stage2_seeded,
        "seed_candidates": list(trainer.seed_candidates),   # the seed's table and its candidates' labels: the
        "seed_candidate_labels": {k: torch.as_tensor(v).cpu() for k, v in trainer.seed_candidate_labels.items()},
        "warmup_values": list(trainer.warmup_values),
        "warmup_ended": trainer.warmup_ended,
        "history": trainer.history,
        "data": {"name": trainer.data.name, "n": len(trainer.data), "channels": trainer.data.channels,
                 "mean": list(trainer.mean), "std": list(trainer.std)},
    })


def restore(trainer, ckpt: dict, full: bool, quiet: bool = False) -> None:
    """Put ``ckpt`` back into ``trainer``. ``full``: a resumed run (optimiser, history, the
    same data, every weight); else a warm start or a read-only model (weights; the
    clustering only when the data has the saved size). ``quiet``: no init note."""
    info = ckpt.get("data", {})
    if info.get("channels", trainer.data.channels) != trainer.data.channels:
        raise ValueError(f"checkpoint was trained on {info.get('channels')}-channel images, this data has "
                         f"{trainer.data.channels}")
    if info.get("mean") is not None and info.get("std") is not None:
        # the input normalisation the weights were trained with, even on other images
        trainer.set_normalisation(tuple(info["mean"]), tuple(info["std"]))
    missing, unexpected = trainer.method.load_state_dict(ckpt["method_state"], strict=False)
    method = trainer.cfg.method
    if missing and full:
        raise ValueError(f"checkpoint does not match method {method!r}: missing {missing[:5]}")
    if unexpected and full:
        raise ValueError(f"checkpoint does not match method {method!r}: unexpected {unexpected[:5]}")
    trainer.epoch = int(ckpt["epoch"])
    same_data = info.get("n") == len(trainer.data)
    if full:
        if not same_data:
            raise ValueError(f"checkpoint was trained on {info.get('n')} images, this data has "
                             f"{len(trainer.data)}; resume with the same data config")
        trainer.optimizer.load_state_dict(ckpt["optimizer_state"])
        set_sgd_impl(trainer.optimizer, trainer.device)  # the saved groups carry the saving device's choice
        trainer.history = list(ckpt.get("history", []))
        trainer.warmup_values = [float(v) for v in ckpt.get("warmup_values", [])]
        trainer.warmup_ended = ckpt.get("warmup_ended")
        if trainer.warmup_ended is not None:  # the resumed run's stage 2 starts where the signal started it
            from .warmup_end import move_stage2

            move_stage2(trainer, int(trainer.warmup_ended))
    if same_data and ckpt.get("pseudo_labels") is not None:
        trainer.pseudo_labels = ckpt["pseudo_labels"].to(trainer.device)
        trainer.centers = ckpt["centers"].to(trainer.device)
        trainer.cluster_epoch = int(ckpt.get("cluster_epoch", -1))
        trainer.stage2_seeded = bool(ckpt.get("stage2_seeded", False))
        trainer.seed_candidates = list(ckpt.get("seed_candidates", []))   # the ending's warm-up votes
        trainer.seed_candidate_labels = dict(ckpt.get("seed_candidate_labels", {}))
        if trainer.centers.shape[0] != trainer.cfg.cluster.n_clusters:
            # a clustering with another K (the provisional one of a run that estimated K at the
            # end of stage 1 and stopped before clustering again): stale, cluster before use
            trainer.cluster_epoch = -1
    if same_data and ckpt.get("partition") is not None:
        from ..cluster.partition import Partition

        trainer.partition = Partition.from_dict(ckpt["partition"])
        if ckpt.get("final_labels") is not None:
            trainer.final_arrays = (ckpt["final_labels"], ckpt["final_centers"], ckpt.get("final_features"))
    if not full and not quiet:
        src = ckpt.get("config", {})
        trainer.init_note = trainer.init_info["note"] if trainer.init_info else (
            f"initialised from a {ckpt.get('method')} checkpoint at epoch {trainer.epoch} "
            f"(data {info.get('name')}, backbone {src.get('model', {}).get('backbone')}, "
            f"seed {src.get('train', {}).get('seed')})")
        trainer.log(trainer.init_note)
        if trainer.epoch >= trainer.cfg.train.epochs:
            raise ConfigError(f"the init checkpoint is at epoch {trainer.epoch} but train.epochs="
                              f"{trainer.cfg.train.epochs}; raise train.epochs to train further")


def save(trainer) -> None:
    """The end-of-epoch checkpoint (and epochNNNN.pt / stage1.pt when due); never NaN weights."""
    if not trainer.write:
        return
    check_weights_finite(trainer.method, trainer.epoch, trainer.run_dir)
    state = trainer_state(trainer)
    r, run_dir, epoch = trainer.cfg.run, trainer.run_dir, trainer.epoch
    # the extra files first and checkpoint.pt last: a kill in between replays this epoch on
    # resume and writes them again
    with disk_full_note(run_dir):
        if r.save_every and epoch % r.save_every == 0:
            atomic_torch_save(state, run_dir / f"epoch{epoch:04d}.pt")
        if trainer.method.stage2_start() == epoch + 1:  # the last stage-1 epoch
            atomic_torch_save(state, run_dir / "stage1.pt")
        atomic_torch_save(state, run_dir / CHECKPOINT_NAME)


def rewrite(trainer) -> None:
    """Write the checkpoint again (the final clustering added), when the run has one."""
    if trainer.write and trainer.run_dir is not None and (trainer.run_dir / CHECKPOINT_NAME).exists():
        atomic_torch_save(trainer_state(trainer), trainer.run_dir / CHECKPOINT_NAME)


@contextmanager
def disk_full_note(run_dir: Path):
    """A full disk while writing the run's files: say which file, that the last
    checkpoint is intact (writes are atomic) and the command that continues."""
    try:
        yield
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        ckpt = run_dir / CHECKPOINT_NAME
        if ckpt.exists():
            try:
                done = int(load_checkpoint(ckpt, "cpu")["epoch"])
            except Exception:
                done = None
            kept = f"the last checkpoint {ckpt}" + (f" (epoch {done})" if done is not None else "") + \
                " is intact"
        else:
            kept = "no checkpoint was written yet (the run restarts from epoch 1)"
        cmd = option("resume-command") if option("resume-command") != "resume-command" else \
            f"conr train --run-dir {run_dir} --resume"
        raise OutputError(f"no space left on the device while writing {getattr(exc, 'filename', None) or exc}; "
                          f"{kept}. Free some space, then continue with: {cmd}") from None


def check_weights_finite(method, epoch: int, run_dir: Path | None) -> None:
    """A finite last loss can still leave NaN/inf weights (the last step diverged): never save those."""
    for name, value in method.state_dict().items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            where = run_dir / CHECKPOINT_NAME if run_dir else None
            kept = (f"the last good checkpoint is kept at {where}" if where and where.exists()
                    else "no checkpoint was written")
            raise NonFiniteLossError(f"weights became NaN/inf at epoch {epoch} ({name}); {kept}. "
                                     f"Lower train.lr or use train.precision=fp32")
