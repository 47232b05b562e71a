"""Training throughput of the fast path against a reference-style input pipeline, and the
cost of the per-epoch clustering step.

    python benchmarks/throughput.py                                   # GPU if present, else CPU
    python benchmarks/throughput.py --device cuda --batch-sizes 256 512 --steps 50
    OMP_NUM_THREADS=1 python benchmarks/throughput.py --device cpu --backbone small_cnn \\
        --batch-sizes 64 --steps 4 --workers 1

Two paths train the same model (same seed, same batch) with the same step
(``Trainer.train_step``: forward of both view orders, backward, SGD, EMA):

* **fast**: uint8 images held on the device once, both views drawn on the device by
  ``BatchAugment`` inside the step, fused/foreach SGD, optional bf16 autocast,
  ``torch.compile`` of the networks (on with CUDA) and channels_last (on everywhere);
* **reference**: the official code's input pipeline: PIL images, torchvision's
  RandomResizedCrop / flip / RandomApply(ColorJitter) / RandomGrayscale / ToTensor /
  Normalize producing the two views in DataLoader worker processes (--workers),
  pinned and copied to the device; fp32, no compile, PyTorch's default SGD.

Every path runs --warmup steps, then --steps timed steps, for BYOL (stage 1) and CoNR
(stage 2: ConAff neighbourhoods + boundary filter, after one clustering step). On a GPU
each path's steps run back to back, timed together (one synchronisation at the end; the
steps themselves never wait for the host). On the CPU the four (BYOL and CoNR, fast and
reference) take turns step by step, each step timed alone, and the fastest step is
reported (timeit's best-of; the median is in the JSON): other processes on a shared
machine then slow all of them alike, and the best step is the least disturbed. A
reference step includes its wait for the workers. The table gives image pairs per
second and the ratios fast/reference (of pairs/s) and CoNR/BYOL (of step times).

With --flops (default) each method's step is counted once by torch's flop counter
(``torch.utils.flop_counter.FlopCounterMode``: matmuls and convolutions, forward and
backward) and reported as FLOP/s, beside the rate of a dense 1024^3 fp32 matmul measured
in the same run.

Then k-means (k-means++ init, --kmeans-n-init runs, <= 300 iterations, tol 1e-4, cosine)
plus NMI/ACC/ARI on --kmeans-n x --kmeans-dim synthetic features (10 noisy clusters on
the sphere) on the device, and on the CPU (``conr.kmeans``, and ``conr.kmeans[sklearn]`` with
scikit-learn's k-means++ seeds) beside scikit-learn's KMeans with the same settings
(init="k-means++", max_iter=300, tol=1e-4). --kmeans-only skips the training steps.

Data: --data (default: the CIFAR-10 JPEG copy at ../shared/data/cifar10-jpeg next to
the repository); only the images used are decoded. Random uint8 images stand in,
with a note, when the folder is missing. Results: JSON in
benchmarks/results/throughput-<device>.json (or --out).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # this checkout's conr, not another installed copy
    sys.path.insert(0, str(REPO))
DEFAULT_DATA = REPO.parent / "shared" / "data" / "cifar10-jpeg"
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------- data
def load_images(path: str | None, n: int, seed: int = 0):
    """(uint8 [n, 3, 32, 32] tensor, int labels, note): n images of the JPEG copy, or random ones."""
    from conr.config import load_config
    from conr.data.stream import stream_data

    if path and Path(path).is_dir():
        cfg = load_config(None, ["data.name=cifar10", f"data.root={path}", "data.in_memory=false",
                                 "data.image_size=32"])
        streamed = stream_data(cfg.data)
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(streamed), generator=g)[:n].sort().values
        sub = streamed.subset(idx).load()  # decodes only these n files
        return sub.images, sub.labels, f"CIFAR-10 (JPEG q75) from {path}, {n} random images"
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    note = f"NOTE: {path} not found; random uint8 images stand in (throughput only, no real data)"
    return images, torch.arange(n) % 10, note


class ReferencePairs(torch.utils.data.Dataset):
    """The official code's dataset: a PIL image per item, two views by torchvision transforms."""

    def __init__(self, images: np.ndarray, transform):
        self.images, self.transform = images, transform  # uint8 [N, H, W, 3]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        from PIL import Image

        img = Image.fromarray(self.images[i])
        return self.transform(img), self.transform(img), i


def reference_transform(scale, size: int = 32):
    from torchvision import transforms as T

    return T.Compose([
        T.RandomResizedCrop(size, scale=scale),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.ToTensor(),
        T.Normalize(CIFAR10_MEAN, CIFAR10_STD),
    ])


# -------------------------------------------------------------------- trainers
def make_trainer(method: str, args, batch: int, images, labels, fast: bool):
    from conr.config import load_config
    from conr.data import ImageData
    from conr.engine import Trainer

    over = [f"method={method}", f"model.backbone={args.backbone}", f"train.batch_size={batch}",
            "train.epochs=100", "train.warmup_epochs=0", f"train.device={args.device}", "run.progress=false",
            "stage2.start_epoch=0", "cluster.n_clusters=10", "train.seed=0",
            f"train.precision={args.precision if fast else 'fp32'}",
            f"train.compile={str(bool(fast and args.compile)).lower()}",
            f"train.channels_last={str(bool(fast and args.channels_last)).lower()}"]
    cfg = load_config("cifar10", over)
    data = ImageData(images=images, labels=labels, name="bench", normalization="cifar10")
    trainer = Trainer(cfg, data=data, write=False, log=lambda m: print(f"    {m}"))
    if not fast:  # PyTorch's default SGD, as the reference code constructs it
        t = cfg.train
        trainer.optimizer = torch.optim.SGD(trainer.method.param_groups(), lr=0.0, momentum=t.momentum,
                                            weight_decay=t.weight_decay)
    if method == "conr":
        trainer.cluster_step()  # pseudo-labels and centres for the boundary filter (not timed)
    _sync(trainer.device)
    return trainer


def fast_stepper(trainer):
    """One step of Trainer.train_epoch's body per call (epoch 1: stage 2 for CoNR): indices from
    the epoch's permutation, both views drawn on the device, the step; no host synchronisation."""
    t = trainer.cfg.train
    n, b = len(trainer.data), t.batch_size
    augment = trainer.augmenter(1)
    keep = trainer._keep_fraction(1)
    perm_gen = torch.Generator().manual_seed(1)
    aug_gen = torch.Generator(device=trainer.device).manual_seed(2)
    state = {"i": 0, "perm": None, "loss": torch.zeros((), device=trainer.device)}
    per_epoch = n // b

    def step() -> None:
        i = state["i"]
        j = i % per_epoch
        if j == 0:
            state["perm"] = torch.randperm(n, generator=perm_gen).to(trainer.device)
        local = state["perm"][j * b:(j + 1) * b]
        x = trainer.images[local]
        v1, v2 = augment(x, aug_gen), augment(x, aug_gen)
        if t.channels_last:
            v1 = v1.contiguous(memory_format=torch.channels_last)
            v2 = v2.contiguous(memory_format=torch.channels_last)
        ctx = trainer._context(1, i, local, keep)
        state["loss"] += trainer.train_step(v1, v2, ctx)
        state["i"] = i + 1

    step.loss = lambda: float(state["loss"])
    return step


def reference_stepper(trainer, args, images_np: np.ndarray):
    """One step per call of the reference pipeline: the next pair of views from the DataLoader
    workers (a step includes its wait for them), pinned, copied, then the same train_step."""
    dev = trainer.device
    b = trainer.cfg.train.batch_size
    scale = tuple(trainer.method.crop_scale(1) or trainer.cfg.augment.scale)
    ds = ReferencePairs(images_np, reference_transform(scale))
    sampler = torch.utils.data.RandomSampler(ds, replacement=True, num_samples=b * (args.warmup + args.steps),
                                             generator=torch.Generator().manual_seed(3))
    kw = {"prefetch_factor": 2} if args.workers > 0 else {}
    loader = torch.utils.data.DataLoader(ds, batch_size=b, sampler=sampler, drop_last=True,
                                         num_workers=args.workers, pin_memory=dev.type == "cuda", **kw)
    keep = trainer._keep_fraction(1)
    state = {"i": 0, "loss": torch.zeros((), device=dev), "batches": None}

    def step() -> None:
        if state["batches"] is None:  # the workers start with this path's first step
            state["batches"] = iter(loader)
        v1, v2, idx = next(state["batches"])
        v1 = v1.to(dev, non_blocking=True)
        v2 = v2.to(dev, non_blocking=True)
        local = idx.to(dev, non_blocking=True)
        ctx = trainer._context(1, state["i"], local, keep)
        state["loss"] += trainer.train_step(v1, v2, ctx)
        state["i"] += 1

    step.loss = lambda: float(state["loss"])
    return step


def time_steps(steppers: dict, args, device: torch.device) -> dict[str, list[float]]:
    """--warmup untimed steps of every path, then --steps timed ones.

    On a GPU each path runs its steps back to back and is timed as a whole (one
    synchronisation at the end). On the CPU the paths (BYOL and CoNR, fast and reference)
    take turns step by step and each step is timed alone (no asynchrony there): other
    processes on a shared machine then slow all paths alike."""
    times = {name: [] for name in steppers}
    if device.type == "cpu":
        for step in steppers.values():
            for _ in range(args.warmup):
                step()
        for _ in range(args.steps):
            for name, step in steppers.items():
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)
    else:
        for name, step in steppers.items():  # warm-up right before: the workers' queue in steady state
            for _ in range(args.warmup):
                step()
            _sync(device)
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    for name, step in steppers.items():
        assert np.isfinite(step.loss()), name
    return times


# ---------------------------------------------------------------------- FLOP/s
def step_flops(step) -> int | None:
    """FLOPs of one (untimed) step as torch's flop counter sees them: matmuls and
    convolutions forward and backward; element-wise work (augmentation, BN, SGD) counts 0.
    None (with a note) when the counter cannot run the step."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with FlopCounterMode(display=False) as counter:
            step()
    except Exception as exc:  # the timings stand without it
        print(f"    note: FLOPs not counted ({type(exc).__name__}: {exc})")
        return None
    return int(counter.get_total_flops())


def matmul_flop_rate(device: torch.device, n: int = 1024, reps: int = 5) -> dict:
    """Best-of-``reps`` FLOP/s of an n x n x n fp32 matmul: what this device's BLAS reaches
    with the same threads, the yardstick for a step's rate."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return {"n": n, "reps": reps, "seconds": best, "flop_per_s": 2 * n ** 3 / best}


# ---------------------------------------------------------------------- k-means
def synthetic_features(n: int, d: int, k: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.nn.functional.normalize(torch.randn(k, d, generator=g), dim=1)
    labels = torch.randint(0, k, (n,), generator=g)
    x = centers[labels] + 0.35 * torch.randn(n, d, generator=g)  # NMI ~0.73, ~35 Lloyd iterations at 60k x 256
    return torch.nn.functional.normalize(x, dim=1), labels


def kmeans_bench(device: str, args) -> list[dict]:
    from conr.cluster.kmeans import kmeans
    from conr.ops.metrics import evaluate

    feats, labels = synthetic_features(args.kmeans_n, args.kmeans_dim, args.kmeans_k)
    rows = []
    devices = [device] if device == "cpu" else [device, "cpu"]
    for dev_name in devices:
        dev = torch.device(dev_name)
        x = feats.to(dev)
        # CPU: also with scikit-learn's k-means++ seeds (seeding="sklearn") beside the default draw
        seedings = ["auto", "sklearn"] if dev_name == "cpu" else ["auto"]
        kmeans(x[:2048], args.kmeans_k, max_iter=5, seed=0)  # warm-up (kernels, allocator)
        for seeding in seedings:
            _sync(dev)
            start = time.perf_counter()
            result = kmeans(x, args.kmeans_k, metric="cosine", max_iter=300, tol=1e-4, n_init=args.kmeans_n_init,
                            seed=0, seeding=seeding)
            scores = evaluate(labels, result.labels.cpu())
            seconds = time.perf_counter() - start
            impl = "conr.kmeans" if seeding == "auto" else f"conr.kmeans[{seeding}]"
            rows.append({"impl": impl, "device": dev_name, "seconds": seconds, "iters": result.n_iter,
                         "n_init": args.kmeans_n_init, **scores})
    if not args.skip_sklearn:
        from sklearn.cluster import KMeans

        x = feats.numpy()
        start = time.perf_counter()
        km = KMeans(n_clusters=args.kmeans_k, init="k-means++", n_init=args.kmeans_n_init, max_iter=300, tol=1e-4,
                    random_state=0).fit(x)
        scores = evaluate(labels, km.labels_)
        seconds = time.perf_counter() - start
        rows.append({"impl": "sklearn.KMeans", "device": "cpu", "seconds": seconds, "iters": int(km.n_iter_),
                     "n_init": args.kmeans_n_init, **scores})
    return rows


# ------------------------------------------------------------------------ main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--backbone", default="resnet18_cifar")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="CIFAR-10 JPEG ImageFolder tree (train/, test/)")
    p.add_argument("--images", type=int, default=None, help="images in the pool (default: 2 x the largest batch)")
    p.add_argument("--steps", type=int, default=30, help="timed steps per path")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation, workers, allocator)")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="DataLoader workers of the reference path")
    p.add_argument("--methods", nargs="+", default=["byol", "conr"], choices=["byol", "conr"])
    p.add_argument("--precision", choices=["fp32", "bf16"], default=None, help="fast path (default: bf16 on CUDA)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile in the fast path (default: on with CUDA)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                   help="channels_last in the fast path (default: on; on the CPU it halves a small CNN's step)")
    p.add_argument("--kmeans-n", type=int, default=60000)
    p.add_argument("--kmeans-dim", type=int, default=256)
    p.add_argument("--kmeans-k", type=int, default=10)
    p.add_argument("--kmeans-n-init", type=int, default=1, help="k-means restarts (the official runs: 10)")
    p.add_argument("--kmeans-only", action="store_true", help="skip the training steps")
    p.add_argument("--skip-kmeans", action="store_true")
    p.add_argument("--skip-sklearn", action="store_true")
    p.add_argument("--flops", action=argparse.BooleanOptionalAction, default=None,
                   help="count each step's FLOPs (torch.utils.flop_counter) and report FLOP/s beside a dense matmul "
                        "(default: on the CPU; on a GPU the counted step would retrace a compiled network)")
    p.add_argument("--out", default=None)
    args = p.parse_args()

    cuda = args.device.startswith("cuda")
    args.precision = args.precision or ("bf16" if cuda else "fp32")
    args.compile = cuda if args.compile is None else args.compile
    args.flops = (not cuda) if args.flops is None else args.flops
    device_name = torch.cuda.get_device_name(torch.device(args.device)) if cuda else (platform.processor() or "cpu")
    print(f"device: {args.device} ({device_name}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"backbone {args.backbone}, workers {args.workers}")
    print(f"fast path: precision {args.precision}, compile {args.compile}, channels_last {args.channels_last}; "
          f"reference: fp32, PIL transforms in {args.workers} worker(s)")

    batch_sizes = [] if args.kmeans_only else args.batch_sizes
    n_images, note = 0, "training steps skipped (--kmeans-only)"
    if batch_sizes:
        n_images = args.images or 2 * max(batch_sizes)
        images, labels, note = load_images(args.data, n_images)
        images_np = images.permute(0, 2, 3, 1).contiguous().numpy()
    print(note)
    dev = torch.device(args.device)
    matmul = matmul_flop_rate(dev) if batch_sizes and args.flops else None
    if matmul:
        print(f"dense fp32 matmul {matmul['n']}x{matmul['n']}: {matmul['flop_per_s'] / 1e9:.1f} GFLOP/s (best of "
              f"{matmul['reps']})")

    out = Path(args.out) if args.out else Path(__file__).parent / "results" / f"throughput-{args.device.split(':')[0]}.json"
    rows, ratios, km_rows = [], [], []

    def save(complete: bool = False) -> None:
        """Write what is measured so far (atomically): a run cut short still leaves its rows."""
        from conr.io import atomic_write_text

        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps({
            "complete": complete, "device": args.device, "device_name": device_name, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "backbone": args.backbone, "data": note, "images": n_images, "warmup": args.warmup, "steps": args.steps,
            "workers": args.workers, "fast": {"precision": args.precision, "compile": args.compile,
                                              "channels_last": args.channels_last},
            "matmul": matmul, "rows": rows, "ratios": ratios, "kmeans": km_rows}, indent=2))

    how = "best step" if not cuda else "mean step"
    if batch_sizes:
        head = f" {'GFLOP/s':>8} {'/mm':>6}" if args.flops else ""
        print(f"\n{'B':>5} {'method':>6} {'path':>10} | {'pairs/s':>9} {'ms/step':>9}{head}   ({how})")
    for b in batch_sizes:
        steppers, trainers = {}, []
        for method in args.methods:
            fast = make_trainer(method, args, b, images, labels, fast=True)
            ref = make_trainer(method, args, b, images, labels, fast=False)
            steppers[(method, "fast")] = fast_stepper(fast)
            steppers[(method, "reference")] = reference_stepper(ref, args, images_np)
            trainers += [fast, ref]
        times = time_steps(steppers, args, dev)
        # one more (untimed) fast step per method, counted; the reference path runs the same model step
        counted = {m: step_flops(steppers[(m, "fast")]) for m in args.methods} if args.flops else {}
        flops = {(m, pth): counted[m] for (m, pth) in steppers if counted.get(m)}
        for (method, path), t in times.items():
            seconds = sum(t)
            # CPU: the fastest step (as timeit's best-of), the least disturbed by other processes
            step = min(t) if len(t) > 1 else seconds / args.steps
            row = {"batch": b, "method": method, "path": path, "steps": args.steps, "seconds": seconds,
                   "step_seconds": t if len(t) > 1 else None,
                   "median_step_seconds": statistics.median(t) if len(t) > 1 else None,
                   "pairs_per_s": b / step, "ms_per_step": 1e3 * step}
            extra = ""
            if (method, path) in flops:
                row["flops_per_step"] = flops[(method, path)]
                row["flop_per_s"] = flops[(method, path)] / step
                if matmul:
                    row["flop_rate_over_matmul"] = row["flop_per_s"] / matmul["flop_per_s"]
                    extra = f" {row['flop_per_s'] / 1e9:>8.2f} {row['flop_rate_over_matmul']:>6.2f}"
            rows.append(row)
            print(f"{b:>5} {method:>6} {path:>10} | {row['pairs_per_s']:>9.1f} {row['ms_per_step']:>9.1f}{extra}",
                  flush=True)
        del steppers, trainers
        save()
        if cuda:
            torch.cuda.empty_cache()

    def rate(b, m, pth):
        return next((r["pairs_per_s"] for r in rows if (r["batch"], r["method"], r["path"]) == (b, m, pth)), None)

    print(f"\n{'B':>5} | {'fast/ref BYOL':>13} {'fast/ref CoNR':>13} | {'CoNR/BYOL fast':>14} {'CoNR/BYOL ref':>13}")
    for b in batch_sizes:
        r = {"batch": b}
        for m in args.methods:
            if rate(b, m, "fast") and rate(b, m, "reference"):
                r[f"fast_over_reference_{m}"] = rate(b, m, "fast") / rate(b, m, "reference")
        for pth in ("fast", "reference"):
            if rate(b, "byol", pth) and rate(b, "conr", pth):
                # time ratio: a CoNR step costs this many BYOL steps
                r[f"conr_over_byol_time_{pth}"] = rate(b, "byol", pth) / rate(b, "conr", pth)
        ratios.append(r)

        def fmt(key):
            return f"{r[key]:.2f}" if key in r else "-"
        print(f"{b:>5} | {fmt('fast_over_reference_byol'):>13} {fmt('fast_over_reference_conr'):>13} | "
              f"{fmt('conr_over_byol_time_fast'):>14} {fmt('conr_over_byol_time_reference'):>13}")
    if batch_sizes:
        print("(fast/ref: ratio of pairs/s; CoNR/BYOL: ratio of step times; GFLOP/s: torch's flop count of one "
              "step / best step time, /mm: its share of the dense matmul's rate)")

    if not args.skip_kmeans:
        print(f"\nk-means + NMI/ACC/ARI on {args.kmeans_n} x {args.kmeans_dim} features, K={args.kmeans_k} "
              f"(k-means++, n_init={args.kmeans_n_init}, max_iter=300, tol=1e-4)")
        km_rows = kmeans_bench(args.device, args)
        print(f"{'impl':>20} {'device':>7} | {'seconds':>8} {'iters':>6} | {'nmi':>6} {'acc':>6}")
        for r in km_rows:
            print(f"{r['impl']:>20} {r['device']:>7} | {r['seconds']:>8.3f} {r['iters']:>6} | "
                  f"{r['nmi']:>6.3f} {r['acc']:>6.3f}")

    save(complete=True)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
