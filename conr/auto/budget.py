"""A time budget instead of an epoch guess.

:func:`measure_costs` times a few real training steps (augmentation, forward,
backward, update) and one clustering step (features of every image + k-means) on
a freshly built trainer, then puts its weights and optimiser back, so the
measurement leaves no trace. :func:`epochs_for_budget` turns those costs into the
number of epochs that fits the budget, counting the clustering steps the
schedule will run (every ~10 % of stage 1, every epoch of CoNR's stage 2), rounded
down to :data:`EPOCH_GRID` so that timing noise rarely changes the count.

Repeatability: the step is the fastest quarter's mean of 16 timed steps (a neighbour
process slows some steps, it does not speed any up), a cheap clustering step is timed
twice and the faster kept, UMAP's one-time numba compilation (10 to 40 s, whatever the
machine's load) is counted as a fixed :data:`COMPILE_ALLOWANCE` instead of its measured
time, the CPU time other processes used while the steps were timed scales every measured
time to the quiet machine's (:mod:`conr.auto.machine_load`), and the count is rounded down to
a geometric grid of ratio ~1.25 (..., 64, 80, 100, 128, 160, ...): a re-timing that
moves the fitting count within one grid interval gives the same epochs; a later run of
the same command on the same machine takes the epochs the first one bought
(:mod:`conr.auto.plans`). A run the machine slows down later is let run to
:data:`OVERRUN` times its budget before it is stopped, so that a busier neighbour
changes its length, not its epochs. A run is repeated exactly by fixing its epochs
(``train.epochs=E``) and seed, as the report and budget.json print.
"""
from __future__ import annotations

import copy
import os
import time
from dataclasses import asdict, dataclass, field, replace

import torch

from ..cluster.policy import consensus_allowance, reserved_seconds, seed_fits
from .settings import schedule_for_epochs

__all__ = ["early_finish_note", "finish_budget", "StepCosts", "measure_costs", "epochs_for_budget", "clusterings_for",
           "seconds_for", "EPOCH_GRID", "reserve", "BudgetTiming", "time_budget", "smaller_size", "BudgetPlan",
           "robust_step", "grid_floor", "seconds_left", "COMPILE_ALLOWANCE", "OVERRUN"]


@dataclass
class StepCosts:
    step_seconds: float          # one optimiser step on one batch, both views
    cluster_seconds: float       # features of all images + k-means
    iters_per_epoch: int
    epoch_overhead_seconds: float = 0.0  # per epoch besides the steps: the checkpoint, the bookkeeping

    @property
    def epoch_seconds(self) -> float:
        return self.step_seconds * self.iters_per_epoch + self.epoch_overhead_seconds

    def scaled(self, factor: float) -> "StepCosts":
        """The step's and the clustering's costs times ``factor`` (to the quiet machine's)."""
        return replace(self, step_seconds=factor * self.step_seconds, cluster_seconds=factor * self.cluster_seconds)

    def to_dict(self) -> dict:
        return asdict(self)


COMPILE_ALLOWANCE = 20.0   # seconds the budget counts for UMAP's first-call compilation (measured 10-40 s)
OVERRUN = 1.5              # a budgeted run is stopped once it has taken this many times its budget
CHEAP_CLUSTER_SECONDS = 2.0  # a clustering step cheaper than this is timed twice (the faster kept)
THREAD_CHECK_STEPS = 6     # steps timed again at one thread (the fastest two kept)
THREAD_CHECK_SHARE = 0.02  # the one-thread timing may cost at most this share of the budget
FEWER_THREADS_GAIN = 1.1   # one thread is taken where the run costs at least this many times less
EPOCH_BOOKKEEPING_SECONDS = 0.005  # generators, logging, history: measured ~2-5 ms per epoch on a CPU
# the epoch counts a budget may choose: ratio ~1.25 (2..10 step by one or two)
EPOCH_GRID = (2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 25, 32, 40, 50, 64, 80, 100, 128, 160, 200, 256, 320, 400,
              500, 640, 800, 1000)


def robust_step(times: list[float]) -> float:
    """A step's cost from repeated timings: the mean of the fastest quarter (at least 2).
    Noise only adds time (another process, a page fault, a frequency dip), so the fast
    steps are the machine's own cost; the slow ones say how busy it was while timed."""
    fast = sorted(times)[:max(2, len(times) // 4)]
    return sum(fast) / len(fast)


def grid_floor(epochs: int) -> int:
    """The largest :data:`EPOCH_GRID` value <= ``epochs`` (``epochs`` itself below the grid)."""
    below = [g for g in EPOCH_GRID if g <= epochs]
    return max(below) if below else int(epochs)


def measure_costs(trainer, steps: int = 16, checkpoints: bool = False,
                  step_times: list | None = None) -> StepCosts:
    """Time ``steps`` training steps (after two untimed warm-up steps; the step cost is
    :func:`robust_step` of them) and one clustering step on ``trainer``; its weights, optimiser state and clustering are
    restored afterwards. ``checkpoints``: the run will save a checkpoint every epoch
    (its serialisation is timed too). ``step_times``: a list the timed steps' seconds are
    appended to (all of them, not only the fastest quarter the cost is made of)."""
    method_state = copy.deepcopy(trainer.method.state_dict())
    optim_state = copy.deepcopy(trainer.optimizer.state_dict())
    rng = torch.get_rng_state()
    b = trainer.cfg.train.batch_size
    n = len(trainer.data)
    gen = torch.Generator(device=trainer.device).manual_seed(12345)
    augment = trainer.augmenter(1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(12345))
    perm = torch.cat([perm] * (1 + (steps + 2) * b // n))
    streamed = (trainer.images.epoch_batches(perm, b, lo=0, hi=b, iters=steps + 2, device=trainer.device)
                if trainer.streamed else None)
    times = []
    try:
        trainer.method.train()
        for i in range(steps + 2):
            idx = perm[i * b:(i + 1) * b].to(trainer.device)
            start = time.perf_counter()
            x = next(streamed) if streamed is not None else trainer.images[idx]
            loss, _ = trainer.step(x, idx, 1, 0, gen, augment=augment)  # the loop's own step
            float(loss)  # wait for the device
            if i > 1:
                times.append(time.perf_counter() - start)
        cluster_seconds = float("inf")
        for _ in range(2):  # noise only adds time: a cheap clustering step is timed twice
            start = time.perf_counter()
            trainer.cluster_step()
            cluster_seconds = min(cluster_seconds, time.perf_counter() - start)
            if cluster_seconds > CHEAP_CLUSTER_SECONDS:
                break
        overhead = EPOCH_BOOKKEEPING_SECONDS
        if checkpoints:
            import io

            for _ in range(2):  # the first call pays one-time costs
                start = time.perf_counter()
                torch.save(trainer.state_dict(), io.BytesIO())
            overhead += 1.5 * (time.perf_counter() - start)  # serialise, then write and rename on disk
    finally:
        if step_times is not None:
            step_times.extend(times)
        trainer.method.load_state_dict(method_state)
        trainer.optimizer.load_state_dict(optim_state)
        trainer.forget_clustering()
        torch.set_rng_state(rng)
    return StepCosts(step_seconds=robust_step(times), cluster_seconds=cluster_seconds, iters_per_epoch=trainer.iters_per_epoch,
                     epoch_overhead_seconds=overhead)


def clusterings_for(epochs: int) -> int:
    """Clustering steps a run of ``epochs`` makes under :func:`schedule_for_epochs`:
    every ``eval_every`` epochs in stage 1, every epoch in stage 2, and the final one
    (counted twice: the final labels' graph clustering costs about one more)."""
    s = schedule_for_epochs(epochs)
    start, every = s["stage2"]["start_epoch"], s["cluster"]["eval_every"]
    return start // every + (epochs - start) + 2


def seconds_for(epochs: int, costs: StepCosts) -> float:
    """Training plus clustering time of a run of ``epochs``."""
    return epochs * costs.epoch_seconds + clusterings_for(epochs) * costs.cluster_seconds


def epochs_for_budget(seconds: float, costs: StepCosts, lo: int = 2, hi: int = 1000) -> int:
    """The most epochs (``lo``..``hi``) on :data:`EPOCH_GRID` whose training and clustering
    fit in ``seconds`` (the cost is not monotone: the evaluation cadence steps with the
    epochs, so every grid value is checked)."""
    fits = [e for e in EPOCH_GRID if lo <= e <= hi and seconds_for(e, costs) <= seconds]
    return max(fits) if fits else lo


def seconds_left(minutes: float, elapsed: float, compile_seconds: float = 0.0) -> float:
    """Seconds of a ``minutes`` budget left after ``elapsed`` seconds, of which
    ``compile_seconds`` were UMAP's one-time compilation: that counts as the fixed
    :data:`COMPILE_ALLOWANCE` (its time swings 10-40 s with the machine's load and would
    otherwise move the epoch count between two runs of one command)."""
    allowance = COMPILE_ALLOWANCE if compile_seconds > 0 else 0.0
    return minutes * 60 - (elapsed - compile_seconds + allowance)


def reserve(cfg, input_seconds: float, epoch_seconds: float, minutes: float) -> tuple[float, str | None]:
    """Seconds kept for the final stage (:func:`conr.cluster.policy.reserved_seconds`) and,
    where the passes of its candidates a seeded stage 2 makes (two, more with refreshes) would
    not fit (:func:`conr.cluster.policy.seed_fits`), the reserve of one pass and a note that
    stage 2 starts from k-means instead: the candidates cost ~ N (UMAP), and on a large set
    two passes leave the network few epochs."""
    c = cfg.cluster

    def seconds(seed: str) -> float:
        return reserved_seconds(cfg.method, c.final, seed, c.final_pixels, c.self_label_epochs, input_seconds,
                                epoch_seconds, c.stage2_refreshes, c.final_rule)

    reserved = seconds(c.stage2_seed)
    if c.stage2_seed != "final" or seed_fits(reserved, minutes):
        return reserved, None
    passes = ("twice (the stage-2 seed and the end)" if not c.stage2_refreshes else
              f"{2 + c.stage2_refreshes} times (the stage-2 seed, {c.stage2_refreshes} refreshes and the end)")
    note = (f"time budget: the final stage's candidates {passes} would take "
            f"{reserved:.0f} s of {minutes * 60:.0f}; stage 2 starts from k-means of the warm-up's features "
            f"instead (cluster.stage2_seed=kmeans)")
    return seconds("kmeans"), note


@dataclass(frozen=True)
class BudgetTiming:
    """What one timing of a run's steps found: the epochs that fit and why."""
    epochs: int
    image_size: int | None
    reserved_seconds: float
    estimate_seconds: float
    costs: StepCosts
    other_cores: float | None
    quiet_factor: float
    train_seconds: float = 0.0  # what the budget left for the epochs (after what came before and the reserve)
    plan_note: str | None = None
    seed_note: str | None = None
    threads: int | None = None          # the CPU threads the run takes (None: torch's count, as it is)
    thread_note: str | None = None
    thread_steps: dict | None = None    # {threads: seconds a step} where one thread was timed too


def one_thread_check_fits(costs: StepCosts, minutes: float) -> bool:
    """Whether timing the steps again at one thread (a few steps and two clusterings, each up
    to twice as long) costs at most :data:`THREAD_CHECK_SHARE` of a ``minutes`` budget: it
    does for an MLP on vectors or a small CNN on small images, not for a ResNet's second-long
    steps, where waking the other threads is a negligible share of a step anyway."""
    check = 2.0 * ((THREAD_CHECK_STEPS + 2) * costs.step_seconds + 2 * costs.cluster_seconds)
    return check <= THREAD_CHECK_SHARE * minutes * 60


def fewer_threads_pay(epochs: int, all_threads: StepCosts, one_thread: StepCosts) -> bool:
    """Whether a run of ``epochs`` costs at least :data:`FEWER_THREADS_GAIN` times less at one
    thread than at all of them (both timings scaled to the quiet machine)."""
    return FEWER_THREADS_GAIN * seconds_for(epochs, one_thread) <= seconds_for(epochs, all_threads)


def time_budget(cfg, data, minutes: float, started: float, *, trainer_type=None, checkpoints: bool = False,
                input_seconds: float = 0.0, compile_seconds: float = 0.0, log=print) -> BudgetTiming:
    """Time the first steps of a throw-away trainer (``trainer_type``, the engine's Trainer by
    default) on ``data`` and size the epochs to the ``minutes`` left since ``started`` (a
    perf_counter time), less what the final stage reserves (its input candidates took
    ``input_seconds``; UMAP's compilation, ``compile_seconds``, counts as
    :data:`COMPILE_ALLOWANCE`). With ``train.threads=auto`` on a CPU of more than one thread,
    light steps are timed at one thread too and the run takes the count that buys more
    (:func:`one_thread_check_fits`, :func:`fewer_threads_pay`)."""
    from ..engine import Trainer
    from ..threads import torch_threads
    from .machine_load import LoadWindow, quiet_factor
    from .plans import same_plan

    probe = (trainer_type or Trainer)(cfg, data=data, write=False, log=lambda *a: None)
    load = LoadWindow()
    costs = measure_costs(probe, checkpoints=checkpoints)
    threads = torch.get_num_threads()
    single = None
    if (probe.device.type == "cpu" and cfg.train.threads == "auto" and threads > 1
            and one_thread_check_fits(costs, minutes)):
        with torch_threads(1):
            single = measure_costs(probe, steps=THREAD_CHECK_STEPS, checkpoints=checkpoints)
    other = load.other_cores() if probe.device.type == "cpu" else None
    del probe
    # other processes busy while timing: every measured time is scaled to the quiet machine's,
    # so that a neighbour changes how long the run takes (up to OVERRUN), not its epochs
    # (at most by 1/OVERRUN: the bound overstates a neighbour that fills idle moments, and a run sized
    # for the quiet machine still ends within OVERRUN under the load that was measured)
    f = quiet_factor(other, threads, floor=1.0 / OVERRUN)
    costs = costs.scaled(f)
    left = seconds_left(minutes, f * (time.perf_counter() - started), f * compile_seconds)
    reserved, seed_note = reserve(cfg, f * input_seconds, costs.epoch_seconds, minutes)
    if seed_note:
        log(seed_note)
    epochs = epochs_for_budget(left - reserved, costs)
    chosen, thread_note, thread_steps = None, None, None
    if single is not None:
        single = single.scaled(quiet_factor(other, 1, floor=1.0 / OVERRUN))
        faster = fewer_threads_pay(epochs, costs, single)
        thread_steps = {str(threads): round(costs.step_seconds, 4), "1": round(single.step_seconds, 4)}
        thread_note = (f"threads: a step takes {single.step_seconds * 1000:.0f} ms at one thread, "
                       f"{costs.step_seconds * 1000:.0f} ms at {threads}; "
                       + ("one buys more epochs (train.threads=N sets the count)" if faster else
                          f"{threads} kept (one would not save {FEWER_THREADS_GAIN - 1:.0%})"))
        if faster:
            chosen = 1
            reserved, seed_note = reserve(cfg, f * input_seconds, single.epoch_seconds, minutes)
            epochs = epochs_for_budget(left - reserved, single)
        log(thread_note)
    epochs, chosen, plan_note = same_plan(cfg, data, minutes, checkpoints, single if chosen else costs, epochs,
                                          chosen)
    if chosen == 1 and single is not None:  # the count this run takes (a recalled plan's, too)
        costs = single
    if plan_note:
        log(plan_note)
    estimate = time.perf_counter() - started + seconds_for(epochs, costs) + reserved
    if f < 0.95:
        log(f"time budget: other processes used {other:.1f} of {os.cpu_count()} CPUs while the steps were "
            f"timed; sized for the quiet machine (times x {f:.2f}): a busy machine lengthens the run, up to "
            f"{OVERRUN:g}x the budget, rather than changing its epochs")
    size = getattr(data, "image_size", None)
    log(f"time budget {minutes:g} min: a step takes {costs.step_seconds * 1000:.0f} ms"
        + (f" at {size} px" if size else "") + f" ({costs.iters_per_epoch} per epoch), clustering "
        f"{costs.cluster_seconds:.1f} s -> {epochs} epochs, estimated {estimate / 60:.1f} min in all")
    return BudgetTiming(epochs=epochs, image_size=size, reserved_seconds=reserved, estimate_seconds=estimate,
                        costs=costs, other_cores=other, quiet_factor=f, train_seconds=left - reserved,
                        plan_note=plan_note, seed_note=seed_note, threads=chosen, thread_note=thread_note,
                        thread_steps=thread_steps)


def smaller_size(timing: BudgetTiming, user_size: int | None) -> int | None:
    """The image size to train at instead, where the budget buys fewer than
    MIN_BUDGET_EPOCHS epochs at the automatic size (a step's cost ~ pixels: more epochs
    beat more pixels); None: keep the size (the user chose it, or it is the smallest)."""
    from ..data.survey import MIN_NET_SIZE
    from .settings import MIN_BUDGET_EPOCHS

    size = timing.image_size
    if size is None or user_size is not None or timing.epochs >= MIN_BUDGET_EPOCHS or size <= MIN_NET_SIZE:
        return None
    scale = (timing.epochs / MIN_BUDGET_EPOCHS) ** 0.5  # the epoch count scales ~ 1 / pixels
    smaller = max(MIN_NET_SIZE, 4 * int(size * scale // 4))
    return smaller if smaller < size else None


@dataclass(frozen=True)
class BudgetPlan:
    """What a time budget decided for a run, with its reasons and what it measured: the
    epochs, the image size (reduced where it bought too few), stage 2's seed (dropped where
    two passes of the final stage would not fit), a consensus's layouts (fewer where they
    would take too long), the CPU threads (one where it buys more), and the time after which
    the run is stopped."""
    minutes: float
    epochs: int
    reserved_seconds: float
    estimate_seconds: float
    max_epoch_minutes: float
    image_size: int | None = None
    reduced_from_size: int | None = None
    stage2_seed: str | None = None
    consensus_runs: int | None = None
    threads: int | None = None                    # CPU threads where the budget chose fewer than torch's
    reasons: dict = field(default_factory=dict)   # {config key: why the budget set it}
    measured: dict = field(default_factory=dict)  # the step's costs and the machine's load while timed

    @classmethod
    def decide(cls, timing: BudgetTiming, minutes: float, started: float, *, default_layouts: int,
               layouts: int | None = None, reduced_from_size: int | None = None) -> "BudgetPlan":
        """The plan from the last timing; ``layouts``: the consensus's layouts the input's
        candidates could afford (None: no consensus made), ``default_layouts`` the setting's."""
        reasons = {}
        if reduced_from_size is not None:
            reasons["data.image_size"] = (f"reduced from {reduced_from_size} px so the {minutes:g}-min budget "
                                          f"buys more epochs ({timing.epochs}; at least "
                                          f"{_min_budget_epochs()} wanted)")
        if timing.seed_note:
            reasons["cluster.stage2_seed"] = timing.seed_note
        if timing.threads is not None:
            reasons["train.threads"] = timing.thread_note or timing.plan_note
        fewer = layouts is not None and layouts < default_layouts
        if fewer:
            reasons["cluster.consensus_runs"] = (f"time budget: a UMAP + GMM consensus of {layouts} layouts, not "
                                                 f"{default_layouts}: more would take over the "
                                                 f"{consensus_allowance(minutes):.0f} s each may have")
        # a safety net if the machine gets much busier than when it was timed: stop (checkpointed and
        # clustered) once the run has taken OVERRUN times its budget
        left = OVERRUN * minutes * 60 - (time.perf_counter() - started) - timing.reserved_seconds
        measured = {"other_cores": None if timing.other_cores is None else round(timing.other_cores, 2),
                    "quiet_factor": round(timing.quiet_factor, 3), "plan": "reused" if timing.plan_note else "timed",
                    "train_seconds": round(timing.train_seconds, 1),
                    **({"seed_note": timing.seed_note} if timing.seed_note else {}),
                    **({"thread_steps": timing.thread_steps} if timing.thread_steps else {}),
                    **{k: round(v, 4) if isinstance(v, float) else v for k, v in timing.costs.to_dict().items()}}
        return cls(minutes=minutes, epochs=timing.epochs, reserved_seconds=round(timing.reserved_seconds, 1),
                   estimate_seconds=round(timing.estimate_seconds, 1), max_epoch_minutes=max(0.05, left / 60),
                   image_size=timing.image_size, reduced_from_size=reduced_from_size,
                   stage2_seed="kmeans" if timing.seed_note else None,
                   consensus_runs=int(layouts) if fewer else None, threads=timing.threads, reasons=reasons,
                   measured=measured)

    def overrides(self) -> dict:
        """{config key: value} the plan sets over the automatic settings."""
        out = {"train.epochs": self.epochs, "run.max_epoch_minutes": self.max_epoch_minutes}
        if self.stage2_seed:
            out["cluster.stage2_seed"] = self.stage2_seed
        if self.consensus_runs:
            out["cluster.consensus_runs"] = self.consensus_runs
        if self.threads:
            out["train.threads"] = self.threads
        return out

    def record(self) -> dict:
        """The budget.json record (before the run's actual time is known)."""
        out = {"minutes": self.minutes, "epochs": self.epochs, "estimate_seconds": self.estimate_seconds,
               "reserved_seconds": self.reserved_seconds, "image_size": self.image_size, **self.measured}
        for key in ("reduced_from_size", "stage2_seed", "consensus_runs", "threads"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


def _min_budget_epochs() -> int:
    from .settings import MIN_BUDGET_EPOCHS

    return MIN_BUDGET_EPOCHS


def early_finish_note(budget: dict, epochs: int) -> str | None:
    """Why a run finished well inside its time budget (None when it used 90 % or more)."""
    used, have = budget.get("actual_seconds", 0.0), 60.0 * budget["minutes"]
    if used >= 0.9 * have:
        return None
    why = ("the epochs reached the cap of 1,000" if epochs >= 1000 else
           f"{epochs} epochs is the largest value of the epoch grid ({', '.join(map(str, EPOCH_GRID[:3]))}, ..., "
           f"about x1.25 apart) that fits: the count is rounded down so that timing noise does not change it "
           f"and the run repeats (train.epochs=N sets any length)")
    return f"finished in {used / 60:.1f} of {have / 60:g} min: {why}"


def finish_budget(plan: BudgetPlan, started: float, epochs: int, run_dir, log, pins: list[str] | None = None) -> dict:
    """The budget's record with the time the run took (and why it ended early, if it did) and
    the overrides that repeat it (``pins``); written once as ``budget.json`` into ``run_dir``
    (None: no run folder). Returns the record."""
    import json
    from pathlib import Path

    from ..io import atomic_write_text

    budget = plan.record()
    budget["actual_seconds"] = round(time.perf_counter() - started, 1)
    log(f"time budget {budget['minutes']:g} min: estimated {budget['estimate_seconds'] / 60:.1f} min, "
        f"took {budget['actual_seconds'] / 60:.1f} min")
    early = early_finish_note(budget, epochs)
    if early:
        budget["early_note"] = early
        log(early)
    if pins:
        budget["repeat_overrides"] = list(pins)
    if run_dir is not None:
        atomic_write_text(Path(run_dir) / "budget.json", json.dumps(budget, indent=1) + "\n")
    return budget
