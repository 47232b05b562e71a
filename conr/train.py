"""The training loop: data order, augmentation, optimiser and schedules, the
per-epoch clustering step, logging and atomic checkpoints. The method supplies
the loss; this file only composes.
"""
from __future__ import annotations

import json
import math
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from .batchnorm import convert_group_batchnorm
from .boundary import boundary_ratio, relaxed_fraction
from .config import Config, ConfigError, config_to_dict
from .data import AugmentConfig, BatchAugment, ImageData, build_data, eval_transform
from .distributed import (ShuffleBN, all_gather_nograd, all_gather_with_grad, all_reduce_mean, average_gradients,
                          barrier, broadcast_object, convert_sync_batchnorm, destroy, dist_info, init_from_env,
                          sync_buffers)
from .errors import NonFiniteLossError
from .io import append_jsonl, atomic_torch_save, atomic_write_text, check_writable, is_disk_full
from .options import option
from .data.stream import image_chunks
from .cluster.kmeans import kmeans
from .methods import StepContext, build_method
from .metrics import evaluate
from .speed import compile_networks, make_sgd, set_sgd_impl
from .warm_start import init_provenance

__all__ = ["Trainer", "TrainResult", "NonFiniteLossError", "CHECKPOINT_NAME", "load_checkpoint", "lr_at",
           "LR_SCHEDULES"]

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_VERSION = 1


@dataclass
class TrainResult:
    labels: Tensor                    # [N] final cluster of every image
    centers: Tensor                   # [K, D] final k-means centres
    features: Tensor                  # [N, D] final L2-normalised features
    metrics: dict                     # last epoch's record (nmi/acc/ari when labels are known)
    history: list = field(default_factory=list)
    run_dir: Path | None = None


def _quiet(*args, **kwargs) -> None:
    """The log of ranks other than 0."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but no CUDA device is available; use train.device=cpu")
    return dev


LR_SCHEDULES = ("official_cosine", "cosine_to_zero")


def lr_at(iteration: int, total: int, warmup: int, base: float, schedule: str = "official_cosine") -> float:
    """The learning rate of the 0-based ``iteration`` of a run of ``total`` iterations,
    ``warmup`` of them a linear warm-up, stepped every iteration (spec 2).

    Warm-up: ``base·(iteration + 1)/warmup``. After it, with ``e = (iteration + 1)/iters``
    the epochs done (fractional, the official code's n_iter counted from 1), W the warm-up
    and T all epochs:

    * ``official_cosine`` (default, the official CoNR / ProPos code):
      ``0.5·base·(1 + cos(π·(e − W)/T))``, i.e. ``(iteration + 1 − warmup)/total``: the
      cosine divides by all epochs, not T − W, so it never reaches 0;
    * ``cosine_to_zero``: ``0.5·base·(1 + cos(π·(iteration − warmup)/(total − warmup)))``,
      0 at the last iteration.
    """
    if warmup > 0 and iteration < warmup:
        return base * (iteration + 1) / warmup
    if schedule == "official_cosine":
        return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, (iteration + 1 - warmup) / max(1, total))))
    if schedule == "cosine_to_zero":
        span = max(1, total - warmup)
        return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, (iteration - warmup) / span)))
    raise ValueError(f"unknown LR schedule {schedule!r}; choose one of {', '.join(LR_SCHEDULES)} "
                     f"(config key train.lr_schedule)")


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}; give a run folder or a .pt file written by conr")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:
        raise ValueError(f"{path} is not a readable conr checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or "method_state" not in ckpt:
        raise ValueError(f"{path} is not a conr checkpoint (no method_state)")
    return ckpt


_TB_NOTE_SHOWN = False  # the "TensorBoard is off" note is printed once per process


class _Heartbeat:
    """During long stretches without a scores line (k-means runs every few epochs),
    say once in a while how far training is and when the next line will come, so a
    slow machine looks slow rather than stuck."""

    QUIET_S = 30.0  # say something when the next line is further away than this ...
    EVERY_S = 60.0  # ... at most this often

    def __init__(self, trainer, last: int, progress=None):
        self.trainer, self.last, self.progress = trainer, last, progress
        self.start = time.perf_counter()
        self.start_epoch = trainer.epoch
        self.said = -float("inf")

    def after_epoch(self, epoch: int, record: dict) -> None:
        now = time.perf_counter()
        if "nmi" in record or "kmeans_iters" in record:
            self.said = now  # a scores line was just printed
        per_epoch = (now - self.start) / max(1, epoch - self.start_epoch)
        nxt = self.trainer.next_scores_epoch(epoch, self.last)
        eta = per_epoch * (nxt - epoch)
        if epoch >= self.last or eta < self.QUIET_S or now - self.said < self.EVERY_S and epoch > self.start_epoch + 1:
            return
        stage = f" (stage {record['stage']})" if "stage" in record else ""
        msg = (f"epoch {epoch}/{self.trainer.cfg.train.epochs}{stage}: {per_epoch:.1f} s per epoch; "
               f"next update after epoch {nxt} in ~{eta:.0f} s")
        if self.progress is not None:
            self.progress.write(msg)
        else:
            self.trainer.log(msg)
        self.said = now


class Trainer:
    """Trains one method on one dataset and clusters it.

    Args:
        cfg: the run configuration.
        data: images to train on (default: the dataset ``cfg.data`` names).
        run_dir: folder for logs and checkpoints (default: runs/<name>); None with
            ``write=False`` trains without touching the disk.
        resume: continue from ``run_dir``'s checkpoint.
        init_from: start from another run's checkpoint (e.g. a stage-1 BYOL run);
            training continues at the epoch after it.
    """

    def __init__(self, cfg: Config, data: ImageData | None = None, run_dir: str | Path | None = None,
                 resume: bool = False, init_from: str | Path | None = None, write: bool = True,
                 log=print, notes: list[str] | None = None, final_stage=None):
        self.cfg = cfg
        self.notes = list(notes or [])  # comment lines at the top of config.yaml (why each automatic setting)
        self.log = log
        t = cfg.train
        if t.threads:
            torch.set_num_threads(t.threads)
        if t.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        # Under torchrun (WORLD_SIZE > 1) this starts the process group: NCCL on cuda:LOCAL_RANK,
        # gloo on CPU. Rank 0 alone logs and writes; every rank holds the whole model.
        self.device, self._owns_group = init_from_env(resolve_device(t.device))
        self.dist = dist_info()
        if not self.dist.is_main:
            self.log = log = _quiet
        self.data = data if data is not None else build_data(cfg.data, seed=t.seed)
        self._check_data()
        self.mean, self.std = self.data.mean_std()

        torch.manual_seed(t.seed)
        self.method = build_method(cfg, self.data.channels).to(self.device)
        if t.sync_bn and self.dist.enabled:
            convert_sync_batchnorm(self.method)  # same Parameter objects: before the optimiser anyway
        if t.bn_group_size:  # per-GPU BatchNorm groups on one device (conr/batchnorm.py)
            convert_group_batchnorm(self.method, t.bn_group_size)
        if t.channels_last:
            self.method = self.method.to(memory_format=torch.channels_last)
        # fused SGD on CUDA, foreach elsewhere: the same update as the per-parameter loop (conr/speed.py)
        self.optimizer = make_sgd(self.method.param_groups(), self.device, momentum=t.momentum,
                                  weight_decay=t.weight_decay)
        if t.compile:  # networks' forward compiled in place; same parameters and state-dict keys
            compile_networks(self.method, self.device, log=log)
        # in-memory data lives on the device once; streamed data (conr/data/stream.py) stays in files
        self.streamed = getattr(self.data, "streamed", False)
        self.images = self.data.images if self.streamed else self.data.images.to(self.device)
        has_truth = self.data.has_labels
        self.true_labels = self.data.labels.to(self.device) if has_truth else None

        self.local_batch = t.batch_size // self.dist.world_size
        self.iters_per_epoch = len(self.data) // t.batch_size
        self.total_iters = self.iters_per_epoch * t.epochs
        self.base_lr = t.lr * t.batch_size / 256.0

        self.epoch = 0
        self.pseudo_labels: Tensor | None = None
        self.centers: Tensor | None = None
        self.cluster_epoch = -1
        self.history: list[dict] = []
        self.write = write and self.dist.is_main
        self.run_dir = None
        self._tb = None
        self.init_note = None
        self.init_info: dict | None = None  # provenance of init_from: path, epoch, method, config
        self._until_epoch: int | None = None
        self._init_recorded = False
        self._aug_cache: dict = {}
        self._last_features: Tensor | None = None
        self._final: tuple | None = None  # cluster.final=spectral/auto: (labels, centres, features)
        self.partition = None             # the run's Partition (conr/cluster/partition.py), set by final_clustering
        self.final_stage = final_stage    # conr/cluster/final.py FinalStage (pixel candidates); None: built when needed
        self.stage2_seeded = False        # cluster.stage2_seed=final: stage 2 started from the final stage's choice
        if write:
            self.run_dir = Path(run_dir) if run_dir is not None else self._default_run_dir()
            if self.dist.enabled:  # the timestamped default name is rank 0's
                self.run_dir = Path(broadcast_object(str(self.run_dir)))
        if resume:
            if self.run_dir is None or not (self.run_dir / CHECKPOINT_NAME).exists():
                if self.run_dir is None or not (self.run_dir / "config.yaml").exists():
                    what = "does not exist" if self.run_dir is not None and not self.run_dir.exists() \
                        else "holds no checkpoint"
                    raise FileNotFoundError(f"--resume: the run folder {self.run_dir} {what}; start without "
                                            f"--resume or point {option('--run-dir')} at the run to continue")
                # killed before its first checkpoint: nothing to restore, replay from epoch 0
                self.log(f"{self.run_dir} has no checkpoint yet (stopped during epoch 1); starting it over")
            else:
                self._restore(load_checkpoint(self.run_dir, self.device), full=True)
        elif init_from is not None:
            ckpt = load_checkpoint(init_from, self.device)
            src = Path(init_from) / CHECKPOINT_NAME if Path(init_from).is_dir() else Path(init_from)
            # raises ConfigError naming the keys when the checkpoint cannot seed this run (conr/warm_start.py)
            self.init_info = init_provenance(ckpt, cfg, self.method, src, channels=self.data.channels,
                                             n_images=len(self.data))
            self._restore(ckpt, full=False)
        error = None
        if self.write:
            try:
                self._prepare_run_dir(resume)
            except Exception as exc:  # all ranks stop with rank 0's message instead of hanging
                error = exc
        if self.dist.enabled:
            error = broadcast_object(error)
        if error is not None:
            raise error

    def close(self) -> None:
        """Release the run folder; destroy the process group if this trainer started it
        (the end of a torchrun run)."""
        if self.write and self.run_dir is not None:
            from .runlock import release_run_lock

            release_run_lock(self.run_dir)
        if self._owns_group:
            barrier()
            destroy()
            self._owns_group = False

    @classmethod
    def from_checkpoint(cls, path: str | Path, data: ImageData | None = None, device: str | None = None,
                        overrides: list[str] | None = None, log=print) -> "Trainer":
        """A read-only trainer holding a saved run's weights and last clustering, for
        evaluation, plots and reports. ``path``: a run folder or a checkpoint file."""
        from .config import apply_overrides, config_from_dict

        ckpt = load_checkpoint(path, "cpu")
        raw = apply_overrides(ckpt["config"], list(overrides or []) + ["run.progress=false"])
        if device is not None:
            raw = apply_overrides(raw, [f"train.device={device}"])
        cfg = config_from_dict(raw)
        trainer = cls(cfg, data=data, write=False, log=log)
        trainer._restore(ckpt, full=False, quiet=True)
        trainer.history = list(ckpt.get("history", []))
        src = Path(path)
        trainer.run_dir = src if src.is_dir() else src.parent
        return trainer

    # ------------------------------------------------------------------ setup
    def _check_data(self) -> None:
        n, t, k = len(self.data), self.cfg.train, self.cfg.cluster.n_clusters
        if n == 0:
            raise ValueError("the dataset is empty; point data.root at a folder with images")
        if k > n:
            raise ConfigError(f"{option('cluster.n_clusters', k)} exceeds the number of images ({n}); lower K")
        if t.batch_size > n:
            raise ConfigError(f"train.batch_size={t.batch_size} exceeds the number of images ({n}); "
                              f"lower train.batch_size to at most {n}")
        if t.batch_size % self.dist.world_size:
            raise ConfigError(f"train.batch_size={t.batch_size} is the global batch and must divide by "
                              f"the number of processes ({self.dist.world_size})")
        local = t.batch_size // self.dist.world_size
        if t.bn_group_size and local % t.bn_group_size:
            raise ConfigError(f"train.bn_group_size={t.bn_group_size} must divide the per-process batch "
                              f"({local} = train.batch_size / {self.dist.world_size} processes)")
        for path, why in self.data.skipped[:5]:
            self.log(f"warning: skipped unreadable image {path} ({why})")
        if len(self.data.skipped) > 5:
            self.log(f"warning: ... and {len(self.data.skipped) - 5} more unreadable images skipped")

    def _default_run_dir(self) -> Path:
        r = self.cfg.run
        name = r.name or f"{self.cfg.data.name}-{self.cfg.method}-{datetime.now():%Y%m%d-%H%M%S}"
        return Path(r.out_dir) / name

    def _prepare_run_dir(self, resume: bool) -> None:
        params = sum(p.numel() for p in self.method.parameters())
        need = 3 * 4 * params + len(self.data) * 64  # two weight copies + momentum + labels, roughly
        check_writable(self.run_dir, need_bytes=need * 2)
        from .runlock import acquire_run_lock

        acquire_run_lock(self.run_dir, option("--run-dir"))  # one process per run folder
        if not resume and (self.run_dir / "metrics.jsonl").exists():
            raise FileExistsError(f"{self.run_dir} already holds a run; pass --resume to continue it or "
                                  f"choose another {option('run.name')}")
        if resume:
            for stale in self.run_dir.glob(".*.tmp"):  # temp files of an atomic write that was killed
                stale.unlink(missing_ok=True)
            # a run killed after logging an epoch but before its checkpoint replays that epoch:
            # keep exactly the epochs the checkpoint holds, so no line is duplicated
            lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.history)
            atomic_write_text(self.run_dir / "metrics.jsonl", lines)
        import yaml

        header = "".join(f"# {line}\n" for line in
                         (["automatic settings (conr/autoconfig.py), why each was chosen:"] + self.notes
                          if self.notes else []))
        atomic_write_text(self.run_dir / "config.yaml",
                          header + yaml.safe_dump(config_to_dict(self.cfg), sort_keys=False))

    def _tensorboard(self):
        if self._tb is None and self.write and self.cfg.run.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
            except Exception as exc:  # TensorBoard is an optional extra: keep training, say so once
                global _TB_NOTE_SHOWN
                if not _TB_NOTE_SHOWN:
                    why = "the tensorboard package is not installed" if isinstance(exc, ImportError) else str(exc)
                    self.log(f"note: TensorBoard logging is off ({why}; pip install 'conr[tensorboard]' to get it); "
                             f"metrics.jsonl in the run folder has every logged value")
                    _TB_NOTE_SHOWN = True
                self.cfg.run.tensorboard = False
        return self._tb

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {
            "version": CHECKPOINT_VERSION,
            "config": config_to_dict(self.cfg),
            "epoch": self.epoch,
            "method": self.cfg.method,
            "method_state": self.method.state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "pseudo_labels": None if self.pseudo_labels is None else self.pseudo_labels.cpu(),
            "centers": None if self.centers is None else self.centers.cpu(),
            "cluster_epoch": self.cluster_epoch,
            "final_labels": self._final[0] if self._final else None,
            "final_centers": self._final[1] if self._final else None,
            "final_features": self._final[2] if self._final else None,
            "partition": self.partition.to_dict() if self.partition is not None else None,
            "stage2_seeded": self.stage2_seeded,
            "history": self.history,
            "data": {"name": self.data.name, "n": len(self.data), "channels": self.data.channels,
                     "mean": list(self.mean), "std": list(self.std)},
        }

    def _restore(self, ckpt: dict, full: bool, quiet: bool = False) -> None:
        info = ckpt.get("data", {})
        if info.get("channels", self.data.channels) != self.data.channels:
            raise ValueError(f"checkpoint was trained on {info.get('channels')}-channel images, this data has "
                             f"{self.data.channels}")
        if info.get("mean") is not None and info.get("std") is not None:
            # the input normalisation the weights were trained with, even on other images
            self.mean, self.std = tuple(info["mean"]), tuple(info["std"])
            self._aug_cache.clear()
        missing, unexpected = self.method.load_state_dict(ckpt["method_state"], strict=False)
        if missing and full:
            raise ValueError(f"checkpoint does not match method {self.cfg.method!r}: missing {missing[:5]}")
        if unexpected and full:
            raise ValueError(f"checkpoint does not match method {self.cfg.method!r}: unexpected {unexpected[:5]}")
        self.epoch = int(ckpt["epoch"])
        same_data = info.get("n") == len(self.data)
        if full:
            if not same_data:
                raise ValueError(f"checkpoint was trained on {info.get('n')} images, this data has "
                                 f"{len(self.data)}; resume with the same data config")
            self.optimizer.load_state_dict(ckpt["optimizer_state"])
            set_sgd_impl(self.optimizer, self.device)  # the saved groups carry the saving device's choice
            self.history = list(ckpt.get("history", []))
        if same_data and ckpt.get("pseudo_labels") is not None:
            self.pseudo_labels = ckpt["pseudo_labels"].to(self.device)
            self.centers = ckpt["centers"].to(self.device)
            self.cluster_epoch = int(ckpt.get("cluster_epoch", -1))
            self.stage2_seeded = bool(ckpt.get("stage2_seeded", False))
            if self.centers.shape[0] != self.cfg.cluster.n_clusters:
                # a clustering with another K (the provisional one of a run that estimated K at the
                # end of stage 1 and stopped before clustering again): stale, cluster before use
                self.cluster_epoch = -1
        if same_data and ckpt.get("partition") is not None:
            from .cluster.partition import Partition

            self.partition = Partition.from_dict(ckpt["partition"])
            if ckpt.get("final_labels") is not None:
                self._final = (ckpt["final_labels"], ckpt["final_centers"], ckpt.get("final_features"))
        if not full and not quiet:
            src = ckpt.get("config", {})
            self.init_note = self.init_info["note"] if self.init_info else (
                f"initialised from a {ckpt.get('method')} checkpoint at epoch {self.epoch} "
                f"(data {info.get('name')}, backbone {src.get('model', {}).get('backbone')}, "
                f"seed {src.get('train', {}).get('seed')})")
            self.log(self.init_note)
            if self.epoch >= self.cfg.train.epochs:
                raise ConfigError(f"the init checkpoint is at epoch {self.epoch} but train.epochs="
                                  f"{self.cfg.train.epochs}; raise train.epochs to train further")

    def save_checkpoint(self) -> None:
        if not self.write:
            return
        self._check_weights_finite()
        state = self.state_dict()
        r = self.cfg.run
        # the extra files first and checkpoint.pt last: a kill in between replays this epoch on
        # resume and writes them again
        with self._disk_full_note():
            if r.save_every and self.epoch % r.save_every == 0:
                atomic_torch_save(state, self.run_dir / f"epoch{self.epoch:04d}.pt")
            if self.method.stage2_start() == self.epoch + 1:  # the last stage-1 epoch
                atomic_torch_save(state, self.run_dir / "stage1.pt")
            atomic_torch_save(state, self.run_dir / CHECKPOINT_NAME)

    @contextmanager
    def _disk_full_note(self):
        """A full disk while writing the run's files: say which file, that the last
        checkpoint is intact (writes are atomic) and the command that continues."""
        try:
            yield
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            from .io import OutputError

            ckpt = self.run_dir / CHECKPOINT_NAME
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
                f"conr train --run-dir {self.run_dir} --resume"
            raise OutputError(f"no space left on the device while writing {getattr(exc, 'filename', None) or exc}; "
                              f"{kept}. Free some space, then continue with: {cmd}") from None

    def _check_weights_finite(self) -> None:
        """A finite last loss can still leave NaN/inf weights (the last step diverged): never save those."""
        for name, value in self.method.state_dict().items():
            if value.is_floating_point() and not torch.isfinite(value).all():
                where = self.run_dir / CHECKPOINT_NAME if self.write and self.run_dir else None
                kept = (f"the last good checkpoint is kept at {where}" if where and where.exists()
                        else "no checkpoint was written")
                raise NonFiniteLossError(f"weights became NaN/inf at epoch {self.epoch} ({name}); {kept}. "
                                         f"Lower train.lr or use train.precision=fp32")

    # -------------------------------------------------------------- features
    @property
    def last_features(self) -> Tensor | None:
        """The features of the last clustering step [N, D] (None before the first), read-only."""
        return self._last_features

    @torch.no_grad()
    def extract_features(self, images: Tensor | None = None, shard: bool | None = None) -> Tensor:
        """L2-normalised features of ``images`` (default: the whole dataset), test transform.

        With several processes and the default images, each rank extracts every
        world_size-th image and the features are all-gathered (BatchNorm is in eval
        mode, so each feature depends on its image only): every rank must call it."""
        if shard is None:
            shard = images is None and self.dist.enabled
        images = self.images if images is None else images
        if shard and self.dist.enabled:
            return self._sharded_features(images)
        return self._features(images)

    def _sharded_features(self, images: Tensor) -> Tensor:
        n, rank, world = images.shape[0], self.dist.rank, self.dist.world_size
        per = -(-n // world)
        local = self._features(images[rank::world])          # rank r: images r, r+W, r+2W, ...
        pad = local.new_zeros(per - local.shape[0], local.shape[1])
        gathered = all_gather_nograd(torch.cat([local, pad]))
        out = local.new_empty(n, local.shape[1])
        for r in range(world):
            count = len(range(r, n, world))
            out[r::world] = gathered[r * per:r * per + count]
        return out

    @torch.no_grad()
    def _features(self, images: Tensor) -> Tensor:
        was_training = self.method.training
        self.method.eval()
        out = []
        bs = self.cfg.cluster.eval_batch_size
        for chunk in image_chunks(images, bs, self.device):  # a tensor, or streamed files
            x = eval_transform(chunk, self.cfg.data.image_size,
                               self.mean, self.std)
            if self.cfg.train.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with self._autocast():
                f = self.method.features(x).float()
                if self.cfg.cluster.flip_average:  # the mean over a view the network was trained to equate
                    f = F.normalize(f, dim=1) + F.normalize(self.method.features(torch.flip(x, dims=[3])).float(), dim=1)
                out.append(f)
        self.method.train(was_training)
        return F.normalize(torch.cat(out), dim=1)

    @torch.no_grad()
    def cluster_step(self) -> dict:
        """k-means on the whole dataset's features -> pseudo-labels, centres, scores.

        With several processes: buffers are made identical, features are extracted
        in shards and all-gathered, k-means runs on rank 0 and its labels, centres
        and scores are broadcast, so every rank holds the same pseudo-labels."""
        c = self.cfg.cluster
        start = time.perf_counter()
        sync_buffers(self.method)
        feats = self.extract_features()
        if not torch.isfinite(feats).all():
            raise NonFiniteLossError(f"features became NaN/inf at epoch {self.epoch}; the model diverged "
                                     f"(lower train.lr); the last good checkpoint is kept")
        payload = None
        if self.centers is not None and self.centers.shape[0] != c.n_clusters:
            self.stage2_seeded = False  # K changed (estimated after stage 1): seed again with the new K
        seeding = c.stage2_seed == "final" and not self.stage2_seeded and self._stage2_next()
        if self.dist.is_main:
            if seeding:  # stage 2 starts from the best label-free partition there is (conr/cluster/final.py)
                result = self._seed_partition(feats)
            elif c.stage2_seed == "final" and self.stage2_seeded and self.centers is not None:
                from .cluster.stage import carry_partition

                result = carry_partition(feats, self.pseudo_labels, c.n_clusters)
            else:
                result = kmeans(feats, c.n_clusters, metric=c.metric, max_iter=c.max_iter, tol=c.tol,
                                n_init=c.n_init, seed=self.cfg.train.seed)
            record = {"kmeans_iters": result.n_iter, "cluster_seconds": time.perf_counter() - start,
                      "feature_std": float(feats.std(dim=0).mean())}  # ~1/sqrt(D) healthy, ~0 collapsed
            if seeding:
                record["stage2_seed"] = self._seed_source
            if self.data.n_labelled:  # scored over the labelled images only (STL-10: its 13k of 113k)
                record.update(evaluate(self.data.labels, result.labels.cpu()), scored=self.data.n_labelled)
            payload = (result.labels, result.centers, record)
        if self.dist.enabled:
            if payload is not None:
                payload = (payload[0].cpu(), payload[1].cpu(), payload[2])
            payload = broadcast_object(payload)
        labels, centers, record = payload
        self.pseudo_labels, self.centers = labels.to(self.device), centers.to(self.device)
        self.cluster_epoch = self.epoch
        self.stage2_seeded = self.stage2_seeded or seeding
        self._last_features = feats
        return record

    # -------------------------------------------------------------- training
    def _autocast(self):
        if self.cfg.train.precision == "bf16" and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast(self.device.type, enabled=False)

    def _augmenter(self, epoch: int) -> BatchAugment:
        """The view distribution at ``epoch`` (the method may change the crop scale by stage)."""
        a = self.cfg.augment
        scale = tuple(self.method.crop_scale(epoch) or a.scale)
        if scale not in self._aug_cache:
            self._aug_cache[scale] = BatchAugment(AugmentConfig(
                size=self.cfg.data.image_size, scale=scale, ratio=tuple(a.ratio), hflip_p=a.hflip_p,
                jitter=tuple(a.jitter), jitter_p=a.jitter_p, gray_p=a.gray_p, blur_p=a.blur_p,
                blur_sigma=tuple(a.blur_sigma), rotation=a.rotation, mean=self.mean, std=self.std))
        return self._aug_cache[scale]

    def _epoch_generators(self, epoch: int):
        """Data order (shared by all ranks) and augmentation randomness (per rank),
        both functions of (seed, epoch): a resumed epoch replays exactly."""
        seed = self.cfg.train.seed
        order = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        aug = torch.Generator(device=self.device).manual_seed((seed * 1_000_003 + epoch) * 7919 + self.dist.rank)
        return order, aug

    def _keep_fraction(self, epoch: int) -> float:
        s = self.cfg.stage2
        if not s.boundary_filter:
            return 1.0
        if not s.relax:
            return s.fr0
        return relaxed_fraction(epoch, s.start_epoch, s.t_end, s.fr0)

    def _context(self, epoch: int, iteration: int, indices: Tensor, keep_fraction: float) -> StepContext:
        ctx = StepContext(epoch=epoch, iteration=iteration, total_iterations=self.total_iters,
                          indices=indices, pseudo_labels=self.pseudo_labels, centers=self.centers,
                          true_labels=self.true_labels, keep_fraction=keep_fraction)
        if self.dist.enabled:
            t = self.cfg.train
            ctx.world_size = self.dist.world_size
            ctx.gather = all_gather_nograd
            ctx.gather_with_grad = partial(all_gather_with_grad, grad_scale_mode=t.grad_scale_mode)
            if t.shuffle_bn and not t.sync_bn:  # with SyncBN the target's statistics are global already
                ctx.shuffle_bn = ShuffleBN(seed=t.seed * 1_000_003 + iteration)
        elif self.cfg.train.bn_group_size and self.cfg.train.shuffle_bn:
            # one process, BN groups standing for ranks: shuffle across the groups with the permutation
            # the ranks would share, so the target's BN batches are those of the multi-GPU run
            ctx.shuffle_bn = ShuffleBN(seed=self.cfg.train.seed * 1_000_003 + iteration, local=True)
        return ctx

    def train_step(self, view1: Tensor, view2: Tensor, ctx: StepContext) -> Tensor:
        """One optimiser step on a pair of views; returns the detached loss (no host sync)."""
        mults = self.method.lr_multipliers(ctx.epoch)
        lr = lr_at(ctx.iteration, self.total_iters, self.cfg.train.warmup_epochs * self.iters_per_epoch,
                   self.base_lr, self.cfg.train.lr_schedule)
        fixed = self.method.fixed_lr_groups()
        for group in self.optimizer.param_groups:
            group["lr"] = (self.base_lr if group["name"] in fixed else lr) * mults[group["name"]]
        with self._autocast():
            loss = self.method.training_loss(view1, view2, ctx)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.dist.enabled:
            # mean over ranks of d(L_r)/dθ: the gradient of the global loss (see conr/distributed.py)
            average_gradients(self.method.parameters())
        self.optimizer.step()
        self.method.after_step(ctx)
        ctx.stats["lr"] = lr
        return loss.detach()

    def _check_finite(self, loss_sum: Tensor, epoch: int, it: int) -> None:
        if not torch.isfinite(loss_sum):
            where = self.run_dir / CHECKPOINT_NAME if self.write and self.run_dir else None
            kept = (f"the last good checkpoint (epoch {self.epoch}) is kept at {where}"
                    if where and where.exists() else "no checkpoint was overwritten")
            raise NonFiniteLossError(
                f"loss became NaN/inf in epoch {epoch} (by iteration {it}); {kept}. Lower train.lr, "
                f"check the input images, or use train.precision=fp32")

    def train_epoch(self, epoch: int, progress=None) -> dict:
        t = self.cfg.train
        self.method.train()
        order_gen, aug_gen = self._epoch_generators(epoch)
        # losses that draw from the global RNG (HaDis' latent noise) replay exactly on resume too
        torch.manual_seed((((self.cfg.train.seed * 1_000_003 + epoch) * 7919 + self.dist.rank) * 31 + 17) % 2**63)
        weights = self.method.sampling_weights(epoch, self.pseudo_labels)
        if weights is None:
            perm = torch.randperm(len(self.data), generator=order_gen).to(self.device)
        else:
            perm = torch.multinomial(weights.double().cpu(), len(self.data), replacement=True,
                                     generator=order_gen).to(self.device)
        augment = self._augmenter(epoch)
        # streamed data: DataLoader workers decode this epoch's batches in the same order as perm
        streamed = (self.images.epoch_batches(perm, t.batch_size, lo=self.dist.rank * self.local_batch,
                                              hi=(self.dist.rank + 1) * self.local_batch,
                                              iters=self.iters_per_epoch, device=self.device)
                    if self.streamed else None)
        keep_fraction = self._keep_fraction(epoch)
        loss_sum = torch.zeros((), device=self.device)
        stat_sums: dict[str, Tensor] = {}
        lo, hi = self.dist.rank * self.local_batch, (self.dist.rank + 1) * self.local_batch
        log_every = max(1, self.cfg.run.log_every)
        last_lr = 0.0
        for i in range(self.iters_per_epoch):
            it = (epoch - 1) * self.iters_per_epoch + i
            batch = perm[i * t.batch_size:(i + 1) * t.batch_size]
            local = batch[lo:hi]
            x = next(streamed) if streamed is not None else self.images[local]
            v1, v2 = augment(x, aug_gen), augment(x, aug_gen)
            if t.channels_last:
                v1 = v1.contiguous(memory_format=torch.channels_last)
                v2 = v2.contiguous(memory_format=torch.channels_last)
            ctx = self._context(epoch, it, local, keep_fraction)
            loss = self.train_step(v1, v2, ctx)
            loss_sum += loss
            last_lr = ctx.stats.pop("lr")
            for k, v in ctx.stats.items():
                if isinstance(v, Tensor):
                    stat_sums[k] = stat_sums.get(k, 0) + v.detach().float()
            if (i + 1) % log_every == 0 or i + 1 == self.iters_per_epoch:
                shown = all_reduce_mean(torch.stack([loss_sum, loss.float()]))  # all ranks stop together
                self._check_finite(shown[0], epoch, i + 1)
                if progress is not None:
                    progress.set_postfix(epoch=epoch, loss=f"{float(shown[0]) / (i + 1):.4f}", refresh=False)
                tb = self._tensorboard()
                if tb is not None:
                    tb.add_scalar("train/loss", float(shown[1]), it)
                    tb.add_scalar("train/lr", last_lr, it)
            if progress is not None:
                progress.update(1)
        n = max(1, self.iters_per_epoch)
        loss_sum = all_reduce_mean(loss_sum)  # per-rank losses (BYOL) -> the global batch's mean
        if self.dist.enabled and stat_sums:
            keys = sorted(stat_sums)
            means = all_reduce_mean(torch.stack([torch.as_tensor(stat_sums[k], device=self.device).float()
                                                 for k in keys]))
            stat_sums = dict(zip(keys, means))
        record = {"epoch": epoch, "loss": float(loss_sum) / n, "lr": last_lr,
                  "stage": 2 if self.method.in_stage2(epoch) else 1}
        if self.method.uses_keep_fraction() and record["stage"] == 2:
            record["keep_fraction"] = keep_fraction
        for k, v in stat_sums.items():
            record[f"batch_{k}"] = float(v) / n
        return record

    def _cluster_due(self, epoch: int) -> bool:
        T = self.cfg.train.epochs
        every = max(1, self.cfg.cluster.eval_every)
        return (epoch % every == 0 or epoch == T or epoch == self._until_epoch
                or self.method.needs_clusters(epoch + 1))

    def fit(self, until_epoch: int | None = None) -> TrainResult:
        """Train to train.epochs, or stop (clustered, checkpointed) after ``until_epoch``
        with the schedule still that of train.epochs (a stage-1 warm-up to reuse)."""
        t, r = self.cfg.train, self.cfg.run
        if until_epoch is None or r.stop_after_epoch is not None and r.stop_after_epoch < until_epoch:
            until_epoch = r.stop_after_epoch
        self._until_epoch = until_epoch
        last = t.epochs if until_epoch is None else min(t.epochs, until_epoch)
        if self.write:
            self.log(f"run folder: {self.run_dir}")
        if self.init_note and self.write and not self._init_recorded:  # once, also if fit is called again
            record = dict(self.init_info) if self.init_info else {"note": self.init_note}
            append_jsonl(self.run_dir / "events.jsonl", {"event": "init_from", **record})
            self._init_recorded = True
        start_time = time.perf_counter()
        remaining = max(0, last - self.epoch) * self.iters_per_epoch
        progress = None
        if r.progress and self.dist.is_main and remaining > 0:
            from tqdm.auto import tqdm

            # in a log file (not a terminal) redraw every 30 s instead of ten times a second
            interactive = sys.stderr.isatty()
            progress = tqdm(total=remaining, unit="it", dynamic_ncols=True, desc=f"{self.cfg.method}",
                            mininterval=0.1 if interactive else 30.0)
        heartbeat = _Heartbeat(self, last, progress) if r.progress and self.dist.is_main else None
        try:
            while self.epoch < last:
                epoch = self.epoch + 1
                if self.method.needs_clusters(epoch) and self.cluster_epoch != epoch - 1:
                    self.cluster_step()
                epoch_start = time.perf_counter()
                record = self.train_epoch(epoch, progress)
                sync_buffers(self.method)  # BN running stats: mean over ranks, identical everywhere
                record["epoch_seconds"] = time.perf_counter() - epoch_start
                self.epoch = epoch
                if self._cluster_due(epoch):
                    record.update(self.cluster_step())
                self.history.append(record)
                self._log_epoch(record)
                self.save_checkpoint()
                if heartbeat is not None:
                    heartbeat.after_epoch(epoch, record)
                over = r.max_epoch_minutes is not None and (time.perf_counter() - start_time) / 60 > r.max_epoch_minutes
                if r.max_epoch_minutes is not None and self.dist.enabled:
                    over = broadcast_object(over)  # rank 0's clock decides for all ranks
                if over:
                    self.log(f"time limit of {r.max_epoch_minutes} min reached after epoch {epoch}; stopping")
                    break
        finally:
            if progress is not None:
                progress.close()
            if self._tb is not None:
                self._tb.flush()
        return self.result()

    def next_scores_epoch(self, epoch: int, last: int) -> int:
        """The first epoch after ``epoch`` whose end prints a scores line (or ``last``)."""
        for e in range(epoch + 1, last + 1):
            if self._cluster_due(e):
                return e
        return last

    def _log_epoch(self, record: dict) -> None:
        if not self.write:
            return
        with self._disk_full_note():
            append_jsonl(self.run_dir / "metrics.jsonl", record)
        tb = self._tensorboard()
        if tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "epoch":
                    tb.add_scalar(f"epoch/{k}", v, record["epoch"])
        if {"nmi", "acc", "ari"} <= record.keys():
            partial = f" scored={record['scored']}" if record.get("scored", len(self.data)) < len(self.data) else ""
            self.log(f"epoch {record['epoch']}: loss={record['loss']:.4f} nmi={record['nmi']:.4f} "
                     f"acc={record['acc']:.4f} ari={record['ari']:.4f}{partial}")

    def result(self) -> TrainResult:
        if self.cluster_epoch != self.epoch or self.pseudo_labels is None:
            rec = self.cluster_step()
            if self.history and self.history[-1].get("epoch") == self.epoch:
                self.history[-1].update(rec)
        feats = self._last_features
        if feats is None:
            feats = self.extract_features()
        labels, centers = self.final_clustering(feats)
        metrics = dict(self.history[-1]) if self.history else {}
        if self.data.n_labelled:
            metrics.update(evaluate(self.data.labels, labels), scored=self.data.n_labelled)
        return TrainResult(labels=labels, centers=centers, features=feats.cpu(),
                           metrics=metrics, history=list(self.history), run_dir=self.run_dir)

    def final_clustering(self, feats: Tensor) -> tuple[Tensor, Tensor]:
        """The labels and centres a run reports, kept as ``self.partition`` and in the
        checkpoint: the last k-means pseudo-labels (``cluster.final: kmeans``), a spectral
        clustering of the features' k-NN graph (``spectral``, conr/spectral.py), or the
        final stage's choice among candidates on the features and the pixels, then the
        self-labelling stage (``auto``, conr/cluster/)."""
        from .cluster.partition import Partition

        final = self.cfg.cluster.final
        labels, centers = self.pseudo_labels.cpu(), self.centers.cpu()
        partition = Partition(labels=labels, centers=centers, source="kmeans")
        if final == "spectral" and self.dist.is_main:
            from .cluster.spectral import spectral_clustering

            result = spectral_clustering(feats, self.cfg.cluster.n_clusters, seed=self.cfg.train.seed)
            partition = Partition(labels=result.labels, centers=result.centers, source="spectral/features",
                                  assign="nearest_image")
        elif final == "auto" and self.dist.is_main:
            from .cluster.stage import final_partition

            partition = final_partition(self, feats)
        self.partition = partition
        if final != "kmeans" and self.dist.is_main:
            self._final = (partition.labels, partition.centers, feats.cpu().float())
            if self.write and self.run_dir is not None and (self.run_dir / CHECKPOINT_NAME).exists():
                atomic_torch_save(self.state_dict(), self.run_dir / CHECKPOINT_NAME)
        return partition.labels, partition.centers

    def run_partition(self):
        """The run's Partition when it belongs to the images held (None otherwise: no final
        clustering yet, or other images than the run's)."""
        p = self.partition
        return p if p is not None and p.labels.shape[0] == len(self.data) else None

    def _stage2_next(self) -> bool:
        """Whether the epoch after the current one is a stage-2 epoch of a two-stage method."""
        return self.method.in_stage2(self.epoch + 1)

    def _seed_partition(self, feats: Tensor):
        from .cluster.stage import seed_partition

        result, self._seed_source = seed_partition(self, feats)
        return result

    def augmenter(self, epoch: int) -> BatchAugment:
        """The training views of ``epoch`` (public: the self-labelling stage trains with them)."""
        return self._augmenter(epoch)

    def eval_input(self, images: Tensor) -> Tensor:
        """uint8 images -> the network's evaluation input (resize + normalise)."""
        return eval_transform(images, self.cfg.data.image_size, self.mean, self.std)

    def boundary_ratios(self) -> Tensor:
        """Boundary ratio of every image under the current clustering (for reports)."""
        feats = self.extract_features()
        return boundary_ratio(feats, self.centers, self.pseudo_labels, self.cfg.stage2.ratio_variant).cpu()
