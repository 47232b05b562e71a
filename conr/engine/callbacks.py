"""What the training loop tells the world while it runs, each a small part the trainer
calls at fixed points: the progress bar, the heartbeat between scores lines, TensorBoard
and the time limit. None of them changes what is trained."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from .distributed import broadcast_object

__all__ = ["Heartbeat", "TensorBoard", "TimeLimit", "progress_bar"]

_TB_NOTE_SHOWN = False  # the "TensorBoard is off" note is printed once per process


def progress_bar(total: int, desc: str):
    """A tqdm bar over ``total`` iterations; in a log file (not a terminal) it redraws
    every 30 s instead of ten times a second."""
    from tqdm.auto import tqdm

    interactive = sys.stderr.isatty()
    return tqdm(total=total, unit="it", dynamic_ncols=True, desc=desc, mininterval=0.1 if interactive else 30.0)


class Heartbeat:
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


class TensorBoard:
    """TensorBoard scalars under ``run_dir/tensorboard`` when ``run.tensorboard`` is on
    and the package is there; otherwise off, said once per process (metrics.jsonl has
    every logged value anyway)."""

    def __init__(self, run_dir: Path | None, run_cfg, log=print):
        self.run_dir, self.run_cfg, self.log = run_dir, run_cfg, log
        self._writer = None

    def writer(self):
        """The SummaryWriter (made on first use), or None when TensorBoard is off."""
        if self._writer is None and self.run_dir is not None and self.run_cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(Path(self.run_dir) / "tensorboard"))
            except Exception as exc:  # TensorBoard is an optional extra: keep training, say so once
                global _TB_NOTE_SHOWN
                if not _TB_NOTE_SHOWN:
                    why = "the tensorboard package is not installed" if isinstance(exc, ImportError) else str(exc)
                    self.log(f"note: TensorBoard logging is off ({why}; pip install 'conr[tensorboard]' to get it); "
                             f"metrics.jsonl in the run folder has every logged value")
                    _TB_NOTE_SHOWN = True
                self.run_cfg.tensorboard = False
        return self._writer

    def scalars(self, values: dict, step: int, prefix: str = "") -> None:
        writer = self.writer()
        if writer is not None:
            for k, v in values.items():
                writer.add_scalar(prefix + k, v, step)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()


class TimeLimit:
    """``run.max_epoch_minutes``: stop after the epoch that ends past the limit. With
    several processes rank 0's clock decides for all ranks."""

    def __init__(self, minutes: float | None, distributed: bool = False):
        self.minutes, self.distributed = minutes, distributed
        self.start = time.perf_counter()

    def over(self) -> bool:
        if self.minutes is None:
            return False
        over = (time.perf_counter() - self.start) / 60 > self.minutes
        return broadcast_object(over) if self.distributed else over
