"""The training loop: epochs of steps, the per-epoch clustering step and the final
clustering, calling its parts: set-up (setup.py), schedules (schedules.py), checkpoints
(checkpoint.py), the run folder (run_folder.py), features (features.py) and the progress,
heartbeat, TensorBoard and time-limit callbacks (callbacks.py). The method supplies the
loss; this file only composes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor

from ..config import Config
from ..data import BatchAugment, ImageData, build_data, eval_transform
from .distributed import (all_reduce_mean, average_gradients, barrier, broadcast_object, destroy, dist_info,
                           sync_buffers)
from ..errors import NonFiniteLossError
from ..methods import StepContext
from ..ops.metrics import evaluate
from ..options import option
from .warm_start import init_provenance
from . import checkpoint, clustering
from .callbacks import Heartbeat, TensorBoard, TimeLimit, progress_bar
from .features import autocast, features, sharded_features
from .run_folder import RunFolder, default_run_dir
from .schedules import keep_fraction, lr_at
from .setup import build_model, check_data, start_runtime
from .step import epoch_generators, make_views, set_learning_rates, step_context

__all__ = ["Trainer", "TrainResult"]

CHECKPOINT_NAME = checkpoint.CHECKPOINT_NAME


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
                 log=print, notes: list[str] | None = None, final_stage=None, k_provisional: bool = False):
        self.cfg = cfg
        self.notes = list(notes or [])  # comment lines at the top of config.yaml (why each automatic setting)
        self.log = log
        t = cfg.train
        # Under torchrun (WORLD_SIZE > 1) this starts the process group: rank 0 alone logs and
        # writes; every rank holds the whole model.
        self.device, self._owns_group = start_runtime(t)
        self.dist = dist_info()
        if not self.dist.is_main:
            self.log = log = _quiet
        self.data = data if data is not None else build_data(cfg.data, seed=t.seed)
        check_data(self.data, cfg, self.dist.world_size, self.log)
        self.mean, self.std = self.data.mean_std()
        self.method, self.optimizer = build_model(cfg, self.data.channels, self.device, self.dist.enabled, log)
        # in-memory data lives on the device once; streamed data (conr/data/stream.py) stays in files
        self.streamed = getattr(self.data, "streamed", False)
        self.images = self.data.images if self.streamed else self.data.images.to(self.device)
        self.true_labels = self.data.labels.to(self.device) if self.data.has_labels else None

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
        self.init_note = None
        self.init_info: dict | None = None  # provenance of init_from: path, epoch, method, config
        self.until_epoch: int | None = None  # fit(until_epoch=...): the epoch this fit stops after
        self._init_recorded = False
        self._aug_cache: dict = {}
        self.last_features: Tensor | None = None  # of the last clustering step [N, D]
        self.final_arrays: tuple | None = None  # cluster.final=spectral/auto: (labels, centres, features)
        self.partition = None             # the run's Partition (conr/cluster/partition.py), set by final_clustering
        self.final_stage = final_stage    # conr/cluster/final.py FinalStage (input candidates); None: built when needed
        self.stage2_seeded = False        # cluster.stage2_seed=final: stage 2 started from the final stage's choice
        self.seed_candidates: list[dict] = []  # the candidate table stage 2's seed was chosen from
        self.seed_candidate_labels: dict = {}  # ... and its candidates' labels, by name
        self.warmup_values: list[float] = []   # stage2.warmup_end=signal: the signal at each stage-1 step ...
        self.warmup_ended: int | None = None   # ... and the epoch after which it started stage 2, if it did
        self.k_provisional = k_provisional  # K is estimated after stage 1 (set_n_clusters): no seed before it
        if write:
            self.run_dir = Path(run_dir) if run_dir is not None else default_run_dir(cfg)
            if self.dist.enabled:  # the timestamped default name is rank 0's
                self.run_dir = Path(broadcast_object(str(self.run_dir)))
        self.tensorboard = TensorBoard(self.run_dir if self.write else None, cfg.run, self.log)
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
                checkpoint.restore(self, checkpoint.load_checkpoint(self.run_dir, self.device), full=True)
        elif init_from is not None:
            ckpt = checkpoint.load_checkpoint(init_from, self.device)
            src = Path(init_from) / CHECKPOINT_NAME if Path(init_from).is_dir() else Path(init_from)
            # raises ConfigError naming the keys when the checkpoint cannot seed this run (conr/warm_start.py)
            self.init_info = init_provenance(ckpt, cfg, self.method, src, channels=self.data.channels,
                                             n_images=len(self.data))
            checkpoint.restore(self, ckpt, full=False)
        error = None
        if self.write:
            try:
                params = sum(p.numel() for p in self.method.parameters())
                need = 3 * 4 * params + len(self.data) * 64  # two weight copies + momentum + labels, roughly
                RunFolder(self.run_dir).prepare(cfg, self.notes, resume, self.history, need_bytes=need * 2)
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
            RunFolder(self.run_dir).release()
        if self._owns_group:
            barrier()
            destroy()
            self._owns_group = False

    @classmethod
    def from_checkpoint(cls, path: str | Path, data: ImageData | None = None, device: str | None = None,
                        overrides: list[str] | None = None, log=print, images: bool = True,
                        ckpt: dict | None = None) -> "Trainer":
        """A read-only trainer holding a saved run's weights and last clustering, for
        evaluation, plots, reports and prediction: the one way a saved model is loaded.
        ``path``: a run folder or a checkpoint file (``ckpt``: its contents, when read
        already). ``data``: the images (default: the dataset the config names);
        ``images=False``: none, only the network (to predict on other images)."""
        ckpt = ckpt if ckpt is not None else checkpoint.load_checkpoint(path, "cpu")
        cfg = checkpoint.checkpoint_config(ckpt, overrides, device)
        if not images:
            data = checkpoint.placeholder_data(ckpt, cfg)
        trainer = cls(cfg, data=data, write=False, log=log)
        checkpoint.restore(trainer, ckpt, full=False, quiet=True)
        trainer.history = list(ckpt.get("history", []))
        src = Path(path)
        trainer.run_dir = src if src.is_dir() else src.parent
        return trainer

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return checkpoint.trainer_state(self)

    def save_checkpoint(self) -> None:
        checkpoint.save(self)

    def set_normalisation(self, mean, std) -> None:
        """The input normalisation the weights expect (a checkpoint's, on other images too)."""
        self.mean, self.std = tuple(mean), tuple(std)
        self._aug_cache.clear()

    # -------------------------------------------------------------- features
    def set_n_clusters(self, k: int, stage2: dict | None = None) -> None:
        """Train on with K = ``k`` (estimated after stage 1) and ``stage2``'s fields (the
        neighbourhood sized for it), the clustering forgotten (the next epoch that needs one
        clusters again, seeding stage 2 with this K where the config says so)."""
        self.cfg = replace(self.cfg, cluster=replace(self.cfg.cluster, n_clusters=int(k)),
                           stage2=replace(self.cfg.stage2, **(stage2 or {})))
        getattr(self.method, "validate_stage2", lambda cfg: None)(self.cfg)   # a stage 2's sizes, on the batch
        self.method.cfg = replace(self.method.cfg, stage2=self.cfg.stage2)
        self.k_provisional = False
        self.until_epoch = None
        self.forget_clustering()

    def forget_clustering(self) -> None:
        """Drop the pseudo-labels, centres and features (the next epoch that needs them clusters again)."""
        self.pseudo_labels = self.centers = self.last_features = None
        self.cluster_epoch = -1

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
            return sharded_features(self.features_of, images, self.dist.rank, self.dist.world_size)
        return self.features_of(images)

    @torch.no_grad()
    def features_of(self, images: Tensor) -> Tensor:
        """L2-normalised features of ``images`` in this process (the evaluation transform; engine/vectors.py's own)."""
        return features(self.method, images, cfg=self.cfg, device=self.device, mean=self.mean, std=self.std)

    def cluster_step(self) -> dict:
        """k-means on the whole dataset's features -> pseudo-labels, centres, scores (engine/clustering.py)."""
        return clustering.cluster_step(self)

    # -------------------------------------------------------------- training
    def _autocast(self):
        return autocast(self.cfg, self.device)

    def augmenter(self, epoch: int) -> BatchAugment:
        """The training views of ``epoch`` (the crop scale the method's stage asks; engine/vectors.py's own)."""
        scale = tuple(self.method.crop_scale(epoch) or self.cfg.augment.scale)
        if scale not in self._aug_cache:
            self._aug_cache[scale] = make_views(self.cfg, scale, self.mean, self.std)
        return self._aug_cache[scale]

    def _epoch_generators(self, epoch: int):
        return epoch_generators(self.cfg.train.seed, epoch, self.dist.rank, self.device)

    def _keep_fraction(self, epoch: int) -> float:
        return keep_fraction(self.cfg.stage2, epoch)

    def _context(self, epoch: int, iteration: int, indices: Tensor, keep_fraction: float) -> StepContext:
        return step_context(self.cfg, self.dist, epoch, iteration, self.total_iters, indices, keep_fraction,
                            self.pseudo_labels, self.centers, self.true_labels)

    def train_step(self, view1: Tensor, view2: Tensor, ctx: StepContext) -> Tensor:
        """One optimiser step on a pair of views; returns the detached loss (no host sync)."""
        lr = lr_at(ctx.iteration, self.total_iters, self.cfg.train.warmup_epochs * self.iters_per_epoch,
                   self.base_lr, self.cfg.train.lr_schedule)
        set_learning_rates(self.optimizer, self.method, ctx.epoch, lr, self.base_lr)
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

    def step(self, x: Tensor, indices: Tensor, epoch: int, iteration: int, generator: torch.Generator,
             keep: float = 1.0, augment: BatchAugment | None = None) -> tuple[Tensor, StepContext]:
        """One training step on this process's uint8 images ``x`` (the dataset's ``indices``):
        two views drawn with ``generator``, the method's loss and an optimiser update at
        ``iteration``'s learning rate. Returns the detached loss (no host sync) and the step's
        context (its ``stats``). The loop calls it; so does the time budget (conr/budget.py)."""
        augment = augment or self.augmenter(epoch)
        v1, v2 = augment(x, generator), augment(x, generator)
        if self.cfg.train.channels_last:
            v1 = v1.contiguous(memory_format=torch.channels_last)
            v2 = v2.contiguous(memory_format=torch.channels_last)
        ctx = self._context(epoch, iteration, indices, keep)
        return self.train_step(v1, v2, ctx), ctx

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
        perm = self.method.epoch_order(epoch, self.pseudo_labels, len(self.data), order_gen).to(self.device)
        augment = self.augmenter(epoch)
        # streamed data: DataLoader workers decode this epoch's batches in the same order as perm
        streamed = (self.images.epoch_batches(perm, t.batch_size, lo=self.dist.rank * self.local_batch,
                                              hi=(self.dist.rank + 1) * self.local_batch,
                                              iters=self.iters_per_epoch, device=self.device)
                    if self.streamed else None)
        keep = self._keep_fraction(epoch)
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
            loss, ctx = self.step(x, local, epoch, it, aug_gen, keep, augment)
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
                if self.tensorboard.writer() is not None:
                    self.tensorboard.scalars({"train/loss": float(shown[1]), "train/lr": last_lr}, it)
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
            record["keep_fraction"] = keep
        for k, v in stat_sums.items():
            record[f"batch_{k}"] = float(v) / n
        return record

    def _cluster_due(self, epoch: int) -> bool:
        T = self.cfg.train.epochs
        every = max(1, self.cfg.cluster.eval_every)
        return (epoch % every == 0 or epoch == T or epoch == self.until_epoch
                or self.method.needs_clusters(epoch + 1))

    def fit(self, until_epoch: int | None = None) -> TrainResult:
        """Train to train.epochs, or stop (clustered, checkpointed) after ``until_epoch``
        with the schedule still that of train.epochs (a stage-1 warm-up to reuse)."""
        t, r = self.cfg.train, self.cfg.run
        if until_epoch is None or r.stop_after_epoch is not None and r.stop_after_epoch < until_epoch:
            until_epoch = r.stop_after_epoch
        self.until_epoch = until_epoch
        last = t.epochs if until_epoch is None else min(t.epochs, until_epoch)
        if self.write:
            self.log(f"run folder: {self.run_dir}")
        if self.init_note and self.write and not self._init_recorded:  # once, also if fit is called again
            record = dict(self.init_info) if self.init_info else {"note": self.init_note}
            RunFolder(self.run_dir).append_event({"event": "init_from", **record})
            self._init_recorded = True
        limit = TimeLimit(r.max_epoch_minutes, self.dist.enabled)
        remaining = max(0, last - self.epoch) * self.iters_per_epoch
        progress = progress_bar(remaining, f"{self.cfg.method}") \
            if r.progress and self.dist.is_main and remaining > 0 else None
        heartbeat = Heartbeat(self, last, progress) if r.progress and self.dist.is_main else None
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
                if limit.over():
                    self.log(f"time limit of {r.max_epoch_minutes} min reached after epoch {epoch}; stopping")
                    break
        finally:
            if progress is not None:
                progress.close()
            self.tensorboard.flush()
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
        RunFolder(self.run_dir).append_metrics(record)
        self.tensorboard.scalars({k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "epoch"},
                                 record["epoch"], prefix="epoch/")
        if {"nmi", "acc", "ari"} <= record.keys():
            part = f" scored={record['scored']}" if record.get("scored", len(self.data)) < len(self.data) else ""
            self.log(f"epoch {record['epoch']}: loss={record['loss']:.4f} nmi={record['nmi']:.4f} "
                     f"acc={record['acc']:.4f} ari={record['ari']:.4f}{part}")

    def result(self) -> TrainResult:
        if self.cluster_epoch != self.epoch or self.pseudo_labels is None:
            rec = self.cluster_step()
            if self.history and self.history[-1].get("epoch") == self.epoch:
                self.history[-1].update(rec)
        feats = self.last_features
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
        checkpoint (engine/clustering.py)."""
        return clustering.final_clustering(self, feats)

    def run_partition(self):
        """The run's Partition when it belongs to the images held (None otherwise: no final
        clustering yet, or other images than the run's)."""
        p = self.partition
        return p if p is not None and p.labels.shape[0] == len(self.data) else None

    def eval_input(self, images: Tensor) -> Tensor:
        """uint8 images -> the network's evaluation input (resize + normalise)."""
        return eval_transform(images, self.cfg.data.image_size, self.mean, self.std)
