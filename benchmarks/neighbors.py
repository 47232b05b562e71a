"""Cost of the ConAff neighbourhood against a plain F·Fᵀ top-k, and its share of a training step.

    python benchmarks/neighbors.py                      # CPU, B = 256 ... 8192
    python benchmarks/neighbors.py --device cuda        # on a GPU
    python benchmarks/neighbors.py --sizes 256 512 --step-sizes 256 --backbone small_cnn

For every batch size B it prints the median time and the peak extra memory of
``conr.ops.neighbors.contextual_similarity`` followed by the top-k (what CoNR runs per
view and step) next to ``topk(F Fᵀ)``; then, for the --step-sizes, the time of a
whole BYOL training step (two views, symmetric loss, backward, SGD, EMA) and the
share that the two ConAff computations of a CoNR step add to it. Peak memory is
``torch.cuda.max_memory_allocated`` on a GPU and the growth of the process's
resident-set high-water mark on the CPU (each size measured in a fresh process).
Results are written as JSON to --out.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # this checkout's conr, not another installed copy
    sys.path.insert(0, str(REPO))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_time(fn, device, reps: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_one(op: str, batch: int, dim: int, k: int, k1: int, k2: int, device: str, dtype: str,
                reps: int) -> dict:
    """Time and peak memory of one op at one batch size (run inside a fresh process)."""
    from conr.ops.neighbors import conaff_neighbors

    dev = torch.device(device)
    torch.manual_seed(0)
    feats = F.normalize(torch.randn(batch, dim, device=dev), dim=1).to(getattr(torch, dtype))
    if op == "conaff":
        fn = lambda: conaff_neighbors(feats, k, k1, k2)  # noqa: E731
    else:
        fn = lambda: (feats @ feats.t()).topk(k, dim=1).indices  # noqa: E731
    _sync(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        seconds = _median_time(fn, dev, reps)
        peak = torch.cuda.max_memory_allocated(dev) - base
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        seconds = _median_time(fn, dev, reps)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"op": op, "batch": batch, "seconds": seconds, "peak_bytes": max(0, int(peak))}


def _in_subprocess(args: argparse.Namespace, op: str, batch: int) -> dict:
    code = ("import json,sys; sys.path[:0] = [%r, %r]; from neighbors import measure_one; "
            "print(json.dumps(measure_one(%r, %d, %d, %d, %d, %d, %r, %r, %d)))"
            % (str(Path(__file__).parent), str(REPO), op, batch, args.dim, args.k, args.k1, args.k2, args.device,
               args.dtype, args.reps))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def step_share(batch: int, args: argparse.Namespace) -> dict:
    """Median BYOL step time vs. the two ConAff calls a CoNR step adds (one per view order)."""
    from conr.config import load_config
    from conr.data.base import ImageData
    from conr.ops.neighbors import conaff_neighbors
    from conr.engine import Trainer

    dev = torch.device(args.device)
    cfg = load_config("cifar10", [
        "method=byol", f"model.backbone={args.backbone}", f"train.batch_size={batch}", "train.epochs=1",
        "stage2.start_epoch=0", f"train.device={args.device}", "run.progress=false",
        f"train.precision={'bf16' if args.dtype == 'bfloat16' else 'fp32'}"])
    n = batch
    data = ImageData(images=torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8),
                     labels=torch.zeros(n, dtype=torch.long), name="random", normalization="cifar10")
    trainer = Trainer(cfg, data=data, write=False)
    gen = torch.Generator(device=dev).manual_seed(0)
    aug = trainer.augmenter(1)
    x = trainer.images[:batch]
    v1, v2 = aug(x, gen), aug(x, gen)
    ctx = trainer._context(1, 0, torch.arange(batch, device=dev), 1.0)
    step = _median_time(lambda: trainer.train_step(v1, v2, ctx), dev, args.step_reps)
    feats = F.normalize(torch.randn(batch, 256, device=dev), dim=1)
    conaff = _median_time(lambda: conaff_neighbors(feats, args.k, args.k1, args.k2), dev, max(3, args.reps))
    return {"batch": batch, "backbone": args.backbone, "byol_step_seconds": step,
            "conaff_seconds_per_call": conaff, "conaff_share_of_step": 2 * conaff / step}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096, 8192])
    p.add_argument("--step-sizes", type=int, nargs="*", default=[256, 512])
    p.add_argument("--backbone", default="resnet18_cifar")
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--k1", type=int, default=10)
    p.add_argument("--k2", type=int, default=2)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--step-reps", type=int, default=3)
    p.add_argument("--out", default=None, help="JSON output (default: benchmarks/results/neighbors-<device>.json)")
    args = p.parse_args()

    device_name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(f"device: {args.device} ({device_name}), threads {torch.get_num_threads()}, dtype {args.dtype}, "
          f"D={args.dim}, k={args.k}, k1={args.k1}, k2={args.k2}")
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / f"neighbors-{args.device.split(':')[0]}.json"

    def save(rows, shares, complete=False) -> None:
        """Write what is measured so far (atomically): a run cut short still leaves its rows."""
        from conr.io import atomic_write_text

        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps({"complete": complete, "device": args.device, "device_name": device_name,
                                           "dtype": args.dtype, "threads": torch.get_num_threads(), "k": args.k,
                                           "k1": args.k1, "k2": args.k2, "dim": args.dim, "sizes": rows,
                                           "step_share": shares, "torch": torch.__version__}, indent=2))

    rows, shares = [], []
    print(f"{'B':>6} | {'F·Fᵀ top-k':>12} {'peak MiB':>9} | {'ConAff':>10} {'peak MiB':>9} | {'ratio':>6}")
    for b in args.sizes:
        plain = _in_subprocess(args, "plain", b)
        conaff = _in_subprocess(args, "conaff", b)
        ratio = conaff["seconds"] / plain["seconds"]
        rows.append({"batch": b, "plain_seconds": plain["seconds"], "plain_peak_bytes": plain["peak_bytes"],
                     "conaff_seconds": conaff["seconds"], "conaff_peak_bytes": conaff["peak_bytes"],
                     "time_ratio": ratio})
        print(f"{b:>6} | {plain['seconds'] * 1e3:>10.2f}ms {plain['peak_bytes'] / 2**20:>9.1f} | "
              f"{conaff['seconds'] * 1e3:>8.2f}ms {conaff['peak_bytes'] / 2**20:>9.1f} | {ratio:>6.1f}")
        save(rows, shares)
    if args.step_sizes:
        print(f"\nshare of a training step ({args.backbone}, both view orders => two ConAff calls per step)")
        print(f"{'B':>6} | {'BYOL step':>10} | {'ConAff x2':>10} | {'share':>6}")
        for b in args.step_sizes:
            s = step_share(b, args)
            shares.append(s)
            save(rows, shares)
            print(f"{b:>6} | {s['byol_step_seconds'] * 1e3:>8.1f}ms | {2 * s['conaff_seconds_per_call'] * 1e3:>8.2f}ms"
                  f" | {100 * s['conaff_share_of_step']:>5.2f}%")
    save(rows, shares, complete=True)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
