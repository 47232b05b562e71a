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
from dataclasses import asdict, dataclass, replace

import torch

from .settings import schedule_for_epochs

__all__ = ["early_finish_note", "finish_budget", "StepCosts", "measure_costs", "epochs_for_budget", "clusterings_for",
           "seconds_for", "EPOCH_GRID",
           "timed_pixel_stage", "consensus_allowance", "reserved_seconds", "reserve_for_budget", "budget_epochs", "fit_to_budget",
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

    def to_dict(self) -> dict:
        return asdict(self)


COMPILE_ALLOWANCE = 20.0   # seconds the budget counts for UMAP's first-call compilation (measured 10-40 s)
OVERRUN = 1.5              # a budgeted run is stopped once it has taken this many times its budget
CLUSTERING_SHARE = 1 / 3   # the clustering stages' reserve beyond which stage 2 starts from k-means, not a seed
CHEAP_CLUSTER_SECONDS = 2.0  # a clustering step cheaper than this is timed twice (the faster kept)
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


def measure_costs(trainer, steps: int = 16, checkpoints: bool = False) -> StepCosts:
    """Time ``steps`` training steps (after two untimed warm-up steps; the step cost is
    :func:`robust_step` of them) and one clustering step on ``trainer``; its weights, optimiser state and clustering are
    restored afterwards. ``checkpoints``: the run will save a checkpoint every epoch
    (its serialisation is timed too)."""
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


def consensus_allowance(minutes: float | None) -> float | None:
    """Seconds one UMAP + GMM consensus may take in a ``minutes`` budget (None: no budget,
    no limit): half of what a seeded run's reserve may give each of its four pixel-stage
    equivalents (:func:`reserved_seconds`: the pixels' candidates, the features' and the
    joint candidates at stage 2's seed and at the end) within :data:`CLUSTERING_SHARE`,
    the other half left to the rest of each (neighbour search, k-means, spectral,
    scoring) and to self-labelling. So more layouts never cost the seed: with a quarter
    instead, CIFAR-10's 10,000 test images at 12 minutes made three layouts of ~18 s,
    two passes then took over a third of the budget and stage 2 lost its seed (ACC 0.226
    after 40 epochs, where 10 minutes, one layout and a seed gave 0.277 after 25). A large
    set's layouts make a smaller consensus instead of taking the epochs (five a consensus
    took ~5 of CIFAR-10's 10 minutes and left 8 epochs)."""
    return None if minutes is None else CLUSTERING_SHARE * minutes * 60 / 8


def timed_pixel_stage(images, cfg, seed: int, log=print, minutes: float | None = None):
    """The final stage's pixel candidates (conr/cluster/final.py), made before training at
    the loaded size (before any budget resize) and timed, so that the budget can reserve
    what the final stage and the stage-2 seed will cost. ``minutes``: the time budget, which
    bounds the layouts of a consensus (:func:`consensus_allowance`; the stage's
    ``consensus_runs`` then says how many). Returns the stage, its ``seconds`` and the
    ``compile_seconds`` of UMAP's one-time compilation set on it."""
    from ..cluster.final import FinalStage
    from ..cluster.manifold import pixel_vectors, warm_up_umap

    compile_seconds = warm_up_umap()  # numba's first-call compilation, once a process
    start = time.perf_counter()
    c = cfg.cluster
    pixels = pixel_vectors(images.numpy(), seed=seed) if c.final_pixels else None
    stage = FinalStage(pixels, c.n_clusters, seed=seed, rule=c.final_rule, log=log, consensus_runs=c.consensus_runs,
                       consensus_seconds=consensus_allowance(minutes))
    stage.pixel_candidates()
    stage.seconds, stage.compile_seconds = time.perf_counter() - start, compile_seconds
    log(f"final stage: pixel candidates in {stage.seconds:.1f} s (after {compile_seconds:.1f} s of UMAP's one-time "
        f"compilation)")
    return stage


def reserved_seconds(cfg, pixel_stage_seconds: float, epoch_seconds: float = 0.0) -> float:
    """Seconds the budget keeps for the clustering stages around training: the
    candidates on the features at stage 2's start and at the end (each about what
    the pixel candidates took, and as much again for the joint candidate on the
    features' and the pixels' graphs where the pixels are candidates), and the
    self-labelling stage (an epoch of it about a quarter of a training epoch)."""
    c = cfg.cluster
    if c.final != "auto":
        return 0.0
    two_stage = cfg.method in ("conr", "simsiam_connr", "moco_connr")  # a stage 2 to seed
    runs = 2 if two_stage and c.stage2_seed == "final" else 1
    per_run = 2 if c.final_pixels else 1
    return runs * per_run * pixel_stage_seconds + 0.25 * c.self_label_epochs * epoch_seconds


def reserve_for_budget(cfg, pixel_stage_seconds: float, epoch_seconds: float, minutes: float):
    """(:func:`reserved_seconds`, None), or where two passes of the final stage's candidates
    (stage 2's seed and the end) would take more than :data:`CLUSTERING_SHARE` of the
    budget, the reserve of one pass and a note saying that stage 2 starts from k-means
    instead: the candidates cost ~ N (UMAP), and on a large set two passes leave the
    network a few epochs (CIFAR-10's 10,000 test images, 10 minutes on 2 cores: 2)."""
    reserved = reserved_seconds(cfg, pixel_stage_seconds, epoch_seconds)
    if cfg.cluster.stage2_seed != "final" or reserved <= CLUSTERING_SHARE * minutes * 60:
        return reserved, None
    lighter = replace(cfg, cluster=replace(cfg.cluster, stage2_seed="kmeans"))
    note = (f"time budget: the final stage's candidates twice (the stage-2 seed and the end) would take "
            f"{reserved:.0f} s of {minutes * 60:.0f}; stage 2 starts from k-means of the warm-up's features "
            f"instead (cluster.stage2_seed=kmeans)")
    return reserved_seconds(lighter, pixel_stage_seconds, epoch_seconds), note


def seconds_left(minutes: float, elapsed: float, compile_seconds: float = 0.0) -> float:
    """Seconds of a ``minutes`` budget left after ``elapsed`` seconds, of which
    ``compile_seconds`` were UMAP's one-time compilation: that counts as the fixed
    :data:`COMPILE_ALLOWANCE` (its time swings 10-40 s with the machine's load and would
    otherwise move the epoch count between two runs of one command)."""
    allowance = COMPILE_ALLOWANCE if compile_seconds > 0 else 0.0
    return minutes * 60 - (elapsed - compile_seconds + allowance)


def _same_plan(cfg, data, minutes: float, checkpoints: bool, costs: StepCosts, epochs: int):
    """The epochs an earlier budgeted run of the same command bought on this machine
    (:mod:`conr.auto.plans`), else ``epochs`` (then recorded). Returns (epochs, a note)."""
    import hashlib

    from .plans import plan_key, recall_plan, remember_plan

    images = data.images[::max(1, len(data) // 64)]
    key = plan_key(data=hashlib.sha1(images.contiguous().cpu().numpy().tobytes()).hexdigest(), n=len(data),
                   size=data.image_size, channels=data.channels, root=cfg.data.root, method=cfg.method,
                   model=cfg.model, batch=cfg.train.batch_size, k=cfg.cluster.n_clusters, final=cfg.cluster.final,
                   device=cfg.train.device, threads=torch.get_num_threads(), minutes=minutes, checkpoints=checkpoints)
    plan = recall_plan(key, costs.step_seconds)
    if plan is None or plan["epochs"] == epochs:
        remember_plan(key, costs.step_seconds, epochs, data.image_size)
        return epochs, None
    return int(plan["epochs"]), (
        f"time budget: this command bought {plan['epochs']} epochs on this machine before (a step "
        f"{plan['step_seconds'] * 1000:.0f} ms then, {costs.step_seconds * 1000:.0f} ms now, {epochs} epochs by "
        f"this timing alone); it trains {plan['epochs']} again so that it repeats (train.epochs=N sets any length)")


def budget_epochs(cfg, data, minutes: float, started: float, checkpoints: bool = False,
                  pixel_stage_seconds: float = 0.0, compile_seconds: float = 0.0, log=print) -> tuple[int, dict]:
    """Time the first steps of a throw-away trainer on ``data`` and size the epochs to the
    ``minutes`` left since ``started`` (a perf_counter time), less what the clustering stages
    reserve; the ``compile_seconds`` UMAP's compilation took count as :data:`COMPILE_ALLOWANCE`.
    Returns (epochs, the record budget.json keeps)."""
    from ..engine import Trainer
    from .machine_load import LoadWindow, quiet_factor

    probe = Trainer(cfg, data=data, write=False, log=lambda *a: None)
    load = LoadWindow()
    costs = measure_costs(probe, checkpoints=checkpoints)
    other = load.other_cores() if probe.device.type == "cpu" else None
    del probe
    # other processes busy while timing: every measured time is scaled to the quiet machine's,
    # so that a neighbour changes how long the run takes (up to OVERRUN), not its epochs
    # (at most by 1/OVERRUN: the bound overstates a neighbour that fills idle moments, and a run sized
    # for the quiet machine still ends within OVERRUN under the load that was measured)
    f = quiet_factor(other, torch.get_num_threads(), floor=1.0 / OVERRUN)
    costs = replace(costs, step_seconds=f * costs.step_seconds, cluster_seconds=f * costs.cluster_seconds)
    left = seconds_left(minutes, f * (time.perf_counter() - started), f * compile_seconds)
    reserved, seed_note = reserve_for_budget(cfg, f * pixel_stage_seconds, costs.epoch_seconds, minutes)
    if seed_note:
        log(seed_note)
    epochs = epochs_for_budget(left - reserved, costs)
    epochs, plan_note = _same_plan(cfg, data, minutes, checkpoints, costs, epochs)
    if plan_note:
        log(plan_note)
    estimate = time.perf_counter() - started + seconds_for(epochs, costs) + reserved
    info = {"minutes": minutes, "epochs": epochs, "estimate_seconds": round(estimate, 1),
            "reserved_seconds": round(reserved, 1), "image_size": data.image_size,
            "other_cores": None if other is None else round(other, 2), "quiet_factor": round(f, 3),
            "plan": "reused" if plan_note else "timed",
            **({"stage2_seed": "kmeans", "seed_note": seed_note} if seed_note else {}),
            **{k: round(v, 4) if isinstance(v, float) else v for k, v in costs.to_dict().items()}}
    if f < 0.95:
        log(f"time budget: other processes used {other:.1f} of {os.cpu_count()} CPUs while the steps were "
            f"timed; sized for the quiet machine (times x {f:.2f}): a busy machine lengthens the run, up to "
            f"{OVERRUN:g}x the budget, rather than changing its epochs")
    log(f"time budget {minutes:g} min: a step takes {costs.step_seconds * 1000:.0f} ms at "
        f"{data.image_size} px ({costs.iters_per_epoch} per epoch), clustering {costs.cluster_seconds:.1f} s "
        f"-> {epochs} epochs, estimated {estimate / 60:.1f} min in all")
    return epochs, info


def fit_to_budget(data, cfg, started: float, minutes: float, configure, user_size: int | None = None,
                  checkpoints: bool = False, pixel_stage=None, reload=None, log=print):
    """Epochs for the budget; when the budget buys fewer than MIN_BUDGET_EPOCHS at the
    automatic size (``user_size`` None), train smaller images instead (a step's cost ~
    pixels): more epochs beat more pixels. ``configure(data, epochs=None, reasons=None)``
    gives the config for the data (and the epochs, with ``reasons``: {setting: why} for the
    settings the budget changed: the image size, stage 2's seed, a consensus's layouts);
    ``reload(size)``: the images loaded again at ``size`` (None: the loaded ones resized).
    ``pixel_stage``: the final stage from :func:`timed_pixel_stage` (None: none made), whose
    time is reserved and whose consensus layouts the config takes (recorded where fewer).
    Returns (data, config, budget record); the config stops the run once it has taken
    :data:`OVERRUN` times its budget."""
    from ..data.survey import MIN_NET_SIZE
    from .settings import MIN_BUDGET_EPOCHS
    from ..data.base import resize_uint8

    pixel_stage_seconds, compile_seconds = (getattr(pixel_stage, "seconds", 0.0),
                                            getattr(pixel_stage, "compile_seconds", 0.0))

    def timed(data, cfg):
        return budget_epochs(cfg, data, minutes, started, checkpoints=checkpoints,
                             pixel_stage_seconds=pixel_stage_seconds, compile_seconds=compile_seconds, log=log)

    epochs, info = timed(data, cfg)
    note = None
    if epochs < MIN_BUDGET_EPOCHS and user_size is None and data.image_size > MIN_NET_SIZE:
        # the epoch count scales ~ 1 / pixels: the largest size that still buys the minimum
        scale = (epochs / MIN_BUDGET_EPOCHS) ** 0.5
        size = max(MIN_NET_SIZE, 4 * int(data.image_size * scale // 4))
        if size < data.image_size:
            log(f"time budget: {epochs} epochs at {data.image_size} px are too few; training at {size} px instead")
            old = data.image_size
            # reloaded from the source at the new size where there is one (a folder): exactly the
            # images a repeat with data.image_size=<size> loads
            data = reload(size) if reload is not None else replace(data, images=resize_uint8(data.images, size))
            epochs, info = timed(data, configure(data))
            info["reduced_from_size"] = old  # a repeat loads the images at the reduced size
            note = (f"reduced from {old} px so the {info['minutes']:g}-min budget buys "
                    f"more epochs ({epochs}; at least {MIN_BUDGET_EPOCHS} wanted)")
    reasons = {"data.image_size": note} if note else {}
    if info.get("stage2_seed"):  # the reserve left too little for a seeded stage 2 (budget_epochs)
        reasons["cluster.stage2_seed"] = info["seed_note"]
    runs = getattr(pixel_stage, "consensus_runs", cfg.cluster.consensus_runs)
    if runs < cfg.cluster.consensus_runs:  # the budget's layouts of a consensus (a repeat pins them)
        info["consensus_runs"] = int(runs)
        reasons["cluster.consensus_runs"] = (f"time budget: a UMAP + GMM consensus of {runs} layouts, not "
                                             f"{cfg.cluster.consensus_runs}: more would take over the "
                                             f"{consensus_allowance(minutes):.0f} s each may have")
    cfg = configure(data, epochs=epochs, reasons=reasons)
    for key in ("stage2_seed", "consensus_runs"):  # what the budget chose over the automatic settings
        if info.get(key):
            setattr(cfg.cluster, key, info[key])
    # a safety net if the machine gets much busier than when it was timed: stop (checkpointed
    # and clustered) once the run has taken OVERRUN times its budget; a few tens of percent of
    # slowdown change the run's length, not its epochs (so it repeats)
    left = OVERRUN * info["minutes"] * 60 - (time.perf_counter() - started) - info.get("reserved_seconds", 0.0)
    cfg.run.max_epoch_minutes = max(0.05, left / 60)
    return data, cfg, info


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


def finish_budget(budget: dict, started: float, epochs: int, run_dir, log) -> None:
    """Record the time a budgeted run took (and why it ended early, if it did); write
    ``budget.json`` into ``run_dir`` (None: no run folder)."""
    import json
    from pathlib import Path

    from ..io import atomic_write_text

    budget["actual_seconds"] = round(time.perf_counter() - started, 1)
    log(f"time budget {budget['minutes']:g} min: estimated {budget['estimate_seconds'] / 60:.1f} min, "
        f"took {budget['actual_seconds'] / 60:.1f} min")
    early = early_finish_note(budget, epochs)
    if early:
        budget["early_note"] = early
        log(early)
    if run_dir is not None:
        atomic_write_text(Path(run_dir) / "budget.json", json.dumps(budget, indent=1) + "\n")
