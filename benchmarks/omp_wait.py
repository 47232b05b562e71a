"""How OpenMP's waiting threads change a CPU training step: quiet and beside busy neighbours.

    python benchmarks/omp_wait.py                       # all policies, loads and workloads
    python benchmarks/omp_wait.py --loads quiet "torch job" --repeats 2

PyTorch's CPU wheels run their parallel regions on GNU OpenMP (libgomp). Between two
regions its worker threads wait, and how they wait is read once, when torch loads:

* ``default`` (no variable): spin a while (GOMP_SPINCOUNT, 300,000 polls), then sleep;
* ``PASSIVE`` (OMP_WAIT_POLICY): sleep at once; every region then pays a wake-up;
* ``ACTIVE``: spin until the next region, never sleep;
* ``spin=10000`` (GOMP_SPINCOUNT): spin 10,000 polls, then sleep;
* ``PASSIVE, 1 thread`` (and OMP_NUM_THREADS=1): no other thread to wait for, what
  ``train.threads=auto`` picks where the time budget finds it faster.

Each cell is one child process that sets its policy before torch loads, builds the
trainer a run builds (the automatic settings of ``conr.auto.resolve``) and times its
step as the time budget does (``conr.auto.budget.measure_costs``: the fastest quarter
of 16 steps), ``--repeats`` times (the fastest kept). Workloads: ``vectors``, a table
of 2,000 x 1,280 float32 rows (an encoder's features: EfficientNet-Lite0 gives 1,280)
with K = 10, on the MLP backbone; ``digits``, scikit-learn's 1,797 digit images at
their 8 px, under the automatic settings (a small CNN, batch 64). Only the step's length matters here, so the rows are random.

Neighbours, running for the whole cell: none (``quiet``), one or two Python loops each
spinning on a core, or another training job (torch, small matrix products back to back,
under the same policy: two conr runs at once). The child's threads stay at torch's
default, one per core, but under the last policy. Two tables: the mean step (what a run
pays) and the step as the budget times it, in milliseconds with each policy's ratio to
the best policy of the same workload and neighbours; the JSON (--out) has every timing.
Run it alone: its own neighbours are the load.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

POLICIES = {  # name: the environment the child starts with (None: no variable at all)
    "default": {},
    "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "ACTIVE": {"OMP_WAIT_POLICY": "ACTIVE"},
    "spin=10000": {"GOMP_SPINCOUNT": "10000"},
    "PASSIVE, 1 thread": {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"},
}
WORKLOADS = ("vectors", "digits")
SPIN = "import time\nend = time.time() + 600\nwhile time.time() < end:\n    pass\n"
# another training job: small parallel regions back to back, torch's default threads, the same policy
TORCH_JOB = ("import time, torch\nw = torch.randn(512, 512)\nx = torch.randn(256, 512)\nend = time.time() + 600\n"
             "while time.time() < end:\n    y = torch.relu(x @ w)\n    y.sum().item()\n")
LOADS = {"quiet": [], "1 spinner": [SPIN], "2 spinners": [SPIN, SPIN], "torch job": [TORCH_JOB]}


def _child(workload: str, repeats: int) -> dict:
    """Runs in the child: the step of ``workload``'s trainer, timed ``repeats`` times."""
    import torch  # before conr: the policy the parent gave is the one libgomp reads

    sys.path.insert(0, str(ROOT))
    from conr.auto.budget import measure_costs
    from conr.auto.resolve import image_settings, user_settings, vector_settings
    from conr.estimator import CoNR

    user = user_settings(CoNR(n_clusters=10, seed=0, device="cpu").get_params())
    if workload == "vectors":
        from conr.data.vectors import VectorData
        from conr.engine.vectors import VectorTrainer

        x = torch.randn(2000, 1280, generator=torch.Generator().manual_seed(0))
        data = VectorData(images=x, labels=torch.full((2000,), -1, dtype=torch.long))
        cfg, _, _ = vector_settings(user, len(data), k=10)
        trainer = VectorTrainer(cfg, data, write=False, log=lambda *a: None)
    else:
        from conr.data.digits import load_digits
        from conr.data.survey import survey_images
        from conr.engine import Trainer

        data = load_digits()
        cfg, _, _ = image_settings(user, survey_images(data.images), data, device_type="cpu", k=10)
        trainer = Trainer(cfg, data=data, write=False, log=lambda *a: None)
    costs, times = [], []
    for _ in range(repeats):
        costs.append(measure_costs(trainer, step_times=times).step_seconds)
    return {"step_seconds": min(costs), "mean_step_seconds": sum(times) / len(times), "costs": costs,
            "times": times, "threads": torch.get_num_threads(), "batch": cfg.train.batch_size}


def _cell(policy: str, workload: str, load: str, repeats: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    env.update(POLICIES[policy])
    spinners = [subprocess.Popen([sys.executable, "-c", code], env=env) for code in LOADS[load]]
    try:
        time.sleep(2.0 if spinners else 0.0)  # the neighbours running (torch loads in ~1 s)
        out = subprocess.run([sys.executable, __file__, "--child", workload, "--repeats", str(repeats)],
                             env=env, capture_output=True, text=True, check=True).stdout
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    return json.loads(out.strip().splitlines()[-1])


def _table(cells: list[dict], args, key: str, what: str) -> str:
    lines = [f"{what}, ms, and the ratio to the best policy of its row:", "",
             "| workload | neighbours | " + " | ".join(args.policies) + " |", "|---|---|" + "---|" * len(args.policies)]
    for workload in args.workloads:
        for load in args.loads:
            row = {c["policy"]: c[key] for c in cells if (c["workload"], c["load"]) == (workload, load)}
            best = min(row.values())
            lines.append(f"| {workload} | {load} | " + " | ".join(
                f"{row[p] * 1000:.1f} ({row[p] / best:.2f}x)" for p in args.policies) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    ap.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    ap.add_argument("--loads", nargs="+", default=list(LOADS), choices=list(LOADS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(RESULTS / "omp_wait.json"))
    ap.add_argument("--child", choices=WORKLOADS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, args.repeats)))
        return 0

    cells = []
    for workload in args.workloads:
        for load in args.loads:
            for policy in args.policies:
                r = _cell(policy, workload, load, args.repeats)
                cells.append({"workload": workload, "load": load, "policy": policy, **r})
                print(f"{workload:8s} {load:10s} {policy:12s} {r['step_seconds'] * 1000:7.1f} ms a step as the "
                      f"budget times it, {r['mean_step_seconds'] * 1000:7.1f} ms on average", flush=True)
    table = "\n\n".join(_table(cells, args, key, what) for key, what in (
        ("mean_step_seconds", "Mean step (what a run pays)"),
        ("step_seconds", "Step as the time budget times it (the fastest quarter of 16)")))
    print("\n" + table)
    from conr.io import atomic_write_text

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"command": "python benchmarks/omp_wait.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "cpus": os.cpu_count(), "cells": cells, "table": table}
    atomic_write_text(out, json.dumps(doc, indent=1) + "\n")
    atomic_write_text(out.with_suffix(".md"), f"`{doc['command'].strip()}` ({os.cpu_count()} CPUs)\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
