"""The epochs a time budget bought, remembered per command and machine.

A time budget times a few steps and buys the epochs that fit. The timing moves by ten
percent between two quiet runs of one command (ORL, 1.5 min: 272 ms and 296 ms a step),
and when the fitting count sits near a value of the epoch grid that is enough to buy 100
epochs once and 80 the next time. So the first budgeted run of a command records what
it measured and bought; a later run of the same command (same images, settings, budget,
device and threads) whose own timing is within :data:`SAME_MACHINE_BAND` of the recorded
one takes the recorded epochs (and CPU threads, where ``train.threads=auto`` chose one),
and says so. A machine several times faster or slower (another GPU, another CPU) plans
afresh. The record is
``$CONR_CACHE_DIR/budget-plans.json`` (default ``~/.cache/conr/``); deleting it, or giving
``train.epochs=N``, ends the reuse.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

__all__ = ["plans_path", "plan_key", "recall_plan", "remember_plan", "same_plan", "SAME_MACHINE_BAND"]

SAME_MACHINE_BAND = 2.0   # a step timed within this factor of the recorded one: the same machine
MAX_PLANS = 500


def plans_path() -> Path:
    root = os.environ.get("CONR_CACHE_DIR")
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "conr"
    return Path(root) / "budget-plans.json"


def plan_key(**fields) -> str:
    """A short hash of what makes two budgeted runs the same command."""
    text = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:20]


def _read(path: Path) -> dict:
    try:
        plans = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return plans if isinstance(plans, dict) else {}


def recall_plan(key: str, step_seconds: float) -> dict | None:
    """The recorded plan of ``key`` if a step of ``step_seconds`` is the same machine's."""
    plan = _read(plans_path()).get(key)
    if not isinstance(plan, dict) or not plan.get("step_seconds") or not plan.get("epochs"):
        return None
    ratio = step_seconds / float(plan["step_seconds"])
    return plan if 1.0 / SAME_MACHINE_BAND <= ratio <= SAME_MACHINE_BAND else None


def remember_plan(key: str, step_seconds: float, epochs: int, image_size: int | None,
                  threads: int | None = None) -> None:
    """Record (atomically) what a budget measured and bought (``threads``: the CPU threads it
    chose, None for torch's count); never fails a run."""
    from ..io import atomic_write_text

    path = plans_path()
    try:
        plans = _read(path)
        plans.pop(key, None)
        plans[key] = {"step_seconds": round(float(step_seconds), 6), "epochs": int(epochs),
                      "image_size": None if image_size is None else int(image_size)}
        if threads is not None:
            plans[key]["threads"] = int(threads)
        while len(plans) > MAX_PLANS:
            plans.pop(next(iter(plans)))
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(plans, indent=1) + "\n")
    except OSError:
        pass  # a read-only home: the run goes on, only its repeatability is not helped


def same_plan(cfg, data, minutes: float, checkpoints: bool, costs, epochs: int, threads: int | None):
    """The epochs and threads an earlier budgeted run of the same command took on this machine
    (the record above; a plan recorded without threads took torch's count), else
    ``epochs`` and ``threads`` (then recorded). ``costs``: the step costs this run timed (a
    :class:`conr.auto.budget.StepCosts`). Returns (epochs, threads, a note)."""
    import hashlib

    import torch

    images = data.images[::max(1, len(data) // 64)]
    key = plan_key(data=hashlib.sha1(images.contiguous().cpu().numpy().tobytes()).hexdigest(), n=len(data),
                   size=getattr(data, "image_size", None), channels=data.channels, root=cfg.data.root, method=cfg.method,
                   model=cfg.model, batch=cfg.train.batch_size, k=cfg.cluster.n_clusters, final=cfg.cluster.final,
                   device=cfg.train.device, threads=torch.get_num_threads(), minutes=minutes, checkpoints=checkpoints,
                   **({"thread_rule": "auto"} if cfg.train.threads == "auto" else {}))  # auto's plans are its own
    plan = recall_plan(key, costs.step_seconds)
    if plan is None or (plan["epochs"], plan.get("threads")) == (epochs, threads):
        remember_plan(key, costs.step_seconds, epochs, getattr(data, "image_size", None), threads)
        return epochs, threads, None
    then = plan.get("threads")
    how = "" if then == threads else f" at {then or torch.get_num_threads()} thread{'s' if then != 1 else ''}"
    return int(plan["epochs"]), then, (
        f"time budget: this command bought {plan['epochs']} epochs{how} on this machine before (a step "
        f"{plan['step_seconds'] * 1000:.0f} ms then, {costs.step_seconds * 1000:.0f} ms now, {epochs} epochs by "
        f"this timing alone); it trains {plan['epochs']}{how} again so that it repeats (train.epochs=N and "
        f"train.threads=N set them)")
