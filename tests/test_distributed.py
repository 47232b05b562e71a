"""Several processes (gloo on CPU) must train like one process with the whole batch.

Two processes with batch b each are compared against one process with batch 2b on
the same data, views and seed, for one CoNR stage-2 step and one BYOL step:
ConAff neighbourhoods, boundary mask, loss, gradients, parameter update, BN
running statistics and the k-means pseudo-labels.

BatchNorm: per-rank batch statistics (b samples) differ from one batch of 2b, so
the exact comparisons run with ``train.sync_bn=true`` (SyncBN on the online,
predictor and target networks). Without SyncBN (the official setting: per-GPU BN
with shuffle-BN on the target) the result *cannot* equal one process; that case
checks instead that the ranks agree with each other exactly (loss, neighbourhoods,
mask, averaged gradients, parameters) and that the target features are exactly
those of shuffle-BN: the gathered batch permuted with the shared seed, each
rank's slice forwarded with its own batch statistics, and un-permuted.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import torch

WORLD = 2
LOCAL_BATCH = 8
GLOBAL_BATCH = WORLD * LOCAL_BATCH
N_IMAGES = 64
EPOCH, ITERATION = 2, 4   # a stage-2 step (stage2.start_epoch = 1)

SCENARIOS = {
    # name: (method, train overrides)
    "conr_sync": ("conr", {"sync_bn": True, "grad_scale_mode": "global"}),
    "conr_sync_per_rank": ("conr", {"sync_bn": True, "grad_scale_mode": "per_rank"}),
    "byol_sync": ("byol", {"sync_bn": True}),
    "conr_shuffle": ("conr", {"sync_bn": False, "shuffle_bn": True}),
    "byol_shuffle": ("byol", {"sync_bn": False, "shuffle_bn": True}),
    # the other methods' batch-level terms, in their stage-2 / post-warm-up form
    "hadis_sync": ("hadis", {"sync_bn": True}),
    "simsiam_connr_sync": ("simsiam_connr", {"sync_bn": True}),
    "moco_connr_sync": ("moco_connr", {"sync_bn": True}),
}
EXACT = ["conr_sync", "byol_sync", "hadis_sync", "simsiam_connr_sync", "moco_connr_sync"]
# HaDis' self-distillation weights are hinges of differences of nearly equal distances: a 1e-7
# change of the inputs moves the loss by ~1e-4 (float32 vs float64 differ as much), so the
# rounding differences of two processes show 10x larger there.
LOOSER = {"hadis_sync": 10.0}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data():
    from conr.data import ImageData

    g = torch.Generator().manual_seed(7)
    labels = torch.arange(N_IMAGES) % 4
    base = torch.rand(4, 1, 8, 8, generator=g)[labels]
    images = ((0.6 * base + 0.4 * torch.rand(N_IMAGES, 1, 8, 8, generator=g)) * 255).to(torch.uint8)
    return ImageData(images=images, labels=labels, name="synthetic", normalization="auto")


def _config(method: str, train: dict):
    from conr.config import load_config

    overrides = [f"method={method}", "model.backbone=small_cnn", "model.width=4", "model.hidden_dim=32",
                 "model.proj_dim=16", f"train.batch_size={GLOBAL_BATCH}", "train.epochs=4", "train.device=cpu",
                 "train.warmup_epochs=0", "train.lr=2.0", "train.threads=1", "stage2.start_epoch=1",
                 "stage2.k=4", "stage2.k1=4", "stage2.k2=2", "stage2.fr0=0.75", "stage2.relax=false",
                 "cluster.n_clusters=4", "data.image_size=8", "run.progress=false", "run.tensorboard=false",
                 "hadis.latent_std=0.0", "hadis.warmup_epochs=1",   # no per-rank noise: comparable exactly
                 "simsiam.proj_hidden_dim=32", "simsiam.proj_dim=16", "simsiam.pred_hidden_dim=8",
                 "moco.dim=16", "moco.hidden_dim=32", "moco.queue_size=32"]
    overrides += [f"train.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in train.items()]
    return load_config(None, overrides)


def _global_step_inputs():
    g = torch.Generator().manual_seed(11)
    v1 = torch.randn(GLOBAL_BATCH, 1, 8, 8, generator=g)
    v2 = torch.randn(GLOBAL_BATCH, 1, 8, 8, generator=g)
    indices = torch.randperm(N_IMAGES, generator=g)[:GLOBAL_BATCH]
    return v1, v2, indices


@contextlib.contextmanager
def _recording(trainer):
    """Record the neighbourhoods, keep masks and target features the loss computes."""
    import conr.methods.stage2 as conr_module

    seen = {"neighbors": [], "keep": [], "targets": []}
    orig_nb, orig_keep = conr_module.batch_neighbors, conr_module.keep_mask
    net = getattr(trainer.method, "net", None)
    if net is None:  # SimSiam / MoCo: nothing to record
        yield seen
        return
    orig_target = net.target

    def nb(*a, **k):
        out = orig_nb(*a, **k)
        seen["neighbors"].append(out.clone())
        return out

    def keep(*a, **k):
        out = orig_keep(*a, **k)
        seen["keep"].append(out.clone())
        return out

    def target(*a, **k):
        out = orig_target(*a, **k)
        seen["targets"].append(out.clone())
        return out

    conr_module.batch_neighbors, conr_module.keep_mask, net.target = nb, keep, target
    try:
        yield seen
    finally:
        conr_module.batch_neighbors, conr_module.keep_mask = orig_nb, orig_keep
        del net.target


def _one_step(method: str, train: dict, rank: int, world: int) -> dict:
    """Build a trainer, cluster, take one optimiser step on the fixed views; return what to compare."""
    from conr.engine import Trainer

    trainer = Trainer(_config(method, train), data=_data(), write=False, log=lambda *a: None)
    cluster = trainer.cluster_step()
    v1, v2, indices = _global_step_inputs()
    b = GLOBAL_BATCH // world
    lo, hi = rank * b, (rank + 1) * b
    before = {n: p.detach().clone() for n, p in trainer.method.named_parameters()}
    ctx = trainer._context(EPOCH, ITERATION, indices[lo:hi], trainer._keep_fraction(EPOCH))
    initial_state = {k: v.clone() for k, v in trainer.method.state_dict().items()}
    with _recording(trainer) as seen:
        loss = trainer.train_step(v1[lo:hi], v2[lo:hi], ctx)
    return {
        "loss": float(loss),
        "stats": {k: float(v) for k, v in ctx.stats.items()},
        "neighbors": seen["neighbors"], "keep": seen["keep"], "targets": seen["targets"],
        "grads": {n: p.grad.clone() for n, p in trainer.method.named_parameters() if p.grad is not None},
        "delta": {n: p.detach() - before[n] for n, p in trainer.method.named_parameters()},
        "state": {k: v.clone() for k, v in trainer.method.state_dict().items()},
        "initial_state": initial_state,
        "pseudo_labels": trainer.pseudo_labels.clone(), "features": trainer.last_features.clone(),
        "cluster": cluster,
    }


def _syncbn_unit(rank: int, world: int) -> dict:
    """SyncBatchNorm on each rank's half vs BatchNorm2d on the whole batch."""
    from conr.engine.distributed import convert_sync_batchnorm

    torch.manual_seed(3)
    bn = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2 * world, 3, 4, 4) * 3 + 1
    w = torch.randn_like(x)
    ref = torch.nn.BatchNorm2d(3)
    ref.load_state_dict(bn.state_dict())
    sync = convert_sync_batchnorm(bn)
    part = slice(2 * rank, 2 * rank + 2)
    xl = x[part].clone().requires_grad_()
    y = sync(xl)
    (y * w[part]).sum().backward()
    return {"y": y.detach(), "x_grad": xl.grad, "w_grad": sync.weight.grad, "b_grad": sync.bias.grad,
            "running": (sync.running_mean.clone(), sync.running_var.clone()), "x": x, "w": w,
            "ref_state": ref.state_dict(), "part": (2 * rank, 2 * rank + 2)}


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=120))
    try:
        results = {name: _one_step(method, train, rank, world) for name, (method, train) in SCENARIOS.items()}
        results["syncbn_unit"] = _syncbn_unit(rank, world)
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both ranks' results from one 2-process gloo launch, and the 1-process references."""
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("dist")
    mp.spawn(_worker, args=(WORLD, _free_port(), str(out)), nprocs=WORLD, join=True)
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = {name: _one_step(method, train, 0, 1) for name, (method, train) in SCENARIOS.items()}
    finally:
        torch.set_num_threads(n)
    return ranks, single


def _close(a, b, rtol=1e-4, atol=1e-6):
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


def _assert_same_dicts(a: dict, b: dict, f: float = 1.0, **tol):
    """Entry-wise closeness: rtol 1e-4, and an absolute tolerance of 1e-5 x the largest entry
    of the whole dict (a Linear bias just before a BatchNorm has a mathematically zero
    gradient: what it gets is rounding noise, exactly 0 in one process, ~1e-7 in two)."""
    assert a.keys() == b.keys()
    scale = max((float(v.float().abs().max()) for v in b.values() if v.numel()), default=0.0)
    for k in a:
        kw = {"rtol": 1e-4 * f, "atol": max(1e-7, 1e-5 * scale) * f}
        kw.update(tol)
        try:
            _close(a[k].float(), b[k].float(), **kw)
        except AssertionError as exc:
            raise AssertionError(f"{k}: {exc}") from None


# ------------------------------------------------------------------ exact: SyncBN
@pytest.mark.slow  # the `runs` fixture: a 2-process gloo launch that trains
@pytest.mark.parametrize("name", EXACT)
def test_two_processes_equal_one_process_with_syncbn(runs, name):
    ranks, single = runs
    ref = single[name]
    for r in ranks:
        _assert_same_dicts(r[name]["initial_state"], ref["initial_state"], rtol=0, atol=0)  # same start
    f = LOOSER.get(name, 1.0)
    # per-rank terms (BYOL's) are per-rank means: the global batch's loss is the mean over ranks
    assert sum(r[name]["loss"] for r in ranks) / WORLD == pytest.approx(ref["loss"], rel=1e-5 * f, abs=1e-6 * f)
    if name in ("conr_sync", "simsiam_connr_sync", "moco_connr_sync"):
        for r in ranks:  # wholly gathered losses: every rank holds the global value
            assert r[name]["loss"] == pytest.approx(ref["loss"], rel=1e-5, abs=1e-6)  # cosines: O(1) terms
    for r in ranks:
        _assert_same_dicts(r[name]["grads"], ref["grads"], f=f)
        _assert_same_dicts(r[name]["delta"], ref["delta"], f=f)
        _assert_same_dicts(r[name]["state"], ref["state"], f=f)  # includes every BN's running statistics


@pytest.mark.slow  # the `runs` fixture (2-process gloo launch)
def test_conaff_neighbourhoods_and_boundary_mask_match_one_process(runs):
    ranks, single = runs
    ref = single["conr_sync"]
    assert len(ref["neighbors"]) == 2 and len(ref["keep"]) == 2      # symmetric loss: two view orders
    for r in ranks:
        got = r["conr_sync"]
        for a, b in zip(got["neighbors"], ref["neighbors"]):
            # the same neighbourhood of every anchor (as a set: the loss sums over it; the order
            # of exactly tied contextual similarities follows rounding noise)
            assert a.shape == (GLOBAL_BATCH, 4)
            assert torch.equal(a.sort(dim=1).values, b.sort(dim=1).values)
        for a, b in zip(got["keep"], ref["keep"]):
            assert a.shape == (GLOBAL_BATCH,)
            assert torch.equal(a, b)
        assert 0 < int(got["keep"][0].sum()) < GLOBAL_BATCH              # the filter dropped some anchors
    # the target features of the local slice are the rows of the one-process batch
    for rank, r in enumerate(ranks):
        rows = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
        for a, b in zip(r["conr_sync"]["targets"], ref["targets"]):
            _close(a, b[rows])


@pytest.mark.slow  # the `runs` fixture (2-process gloo launch)
def test_kmeans_pseudo_labels_identical_on_all_ranks_and_as_one_process(runs):
    ranks, single = runs
    ref = single["conr_sync"]
    for r in ranks:
        assert torch.equal(r["conr_sync"]["pseudo_labels"], ref["pseudo_labels"])
        _close(r["conr_sync"]["features"], ref["features"])       # sharded extraction, all-gathered
        assert r["conr_sync"]["cluster"]["nmi"] == pytest.approx(ref["cluster"]["nmi"])


@pytest.mark.slow  # the `runs` fixture (2-process gloo launch)
def test_per_rank_mode_is_one_over_world_size_of_the_global_gradient(runs):
    """grad_scale_mode=per_rank: the stage-2 loss's gradient flows into the own slice only,
    then the ranks' gradients are averaged: exactly 1/world_size of the global gradient."""
    ranks, single = runs
    for r in ranks:
        per_rank, glob = r["conr_sync_per_rank"], r["conr_sync"]
        assert per_rank["loss"] == glob["loss"]                   # the same loss value, a different gradient
        assert per_rank["grads"].keys() == glob["grads"].keys()
        for k in glob["grads"]:
            # scaling by the power of two 1/2 commutes exactly with the float arithmetic
            torch.testing.assert_close(per_rank["grads"][k], glob["grads"][k] / WORLD, rtol=1e-6, atol=0)
            _close(per_rank["grads"][k], single["conr_sync"]["grads"][k] / WORLD)


# -------------------------------------------------- not exact: per-rank BN + shuffle-BN
@pytest.mark.slow  # the `runs` fixture (2-process gloo launch)
def test_without_syncbn_ranks_agree_and_targets_are_shuffle_bn(runs):
    """Per-rank BatchNorm cannot equal one batch of 2b; checked instead: both ranks hold the
    same gathered loss, neighbourhoods, mask, averaged gradients and parameters, and each
    target feature is that of its sample forwarded inside the shuffled slice it fell in."""
    from conr.engine.distributed import shuffle_permutation
    from conr.engine import Trainer

    ranks, _ = runs
    a, b = ranks[0]["conr_shuffle"], ranks[1]["conr_shuffle"]
    assert a["loss"] == b["loss"]
    for x, y in zip(a["neighbors"] + a["keep"], b["neighbors"] + b["keep"]):
        assert torch.equal(x, y)
    _assert_same_dicts(a["grads"], b["grads"], rtol=0, atol=0)
    params = a["delta"].keys()  # BN running statistics differ per rank until the epoch's sync_buffers
    _assert_same_dicts({k: a["state"][k] for k in params}, {k: b["state"][k] for k in params}, rtol=0, atol=0)
    assert torch.equal(a["pseudo_labels"], b["pseudo_labels"])

    # emulate shuffle-BN in one process from the same initial weights
    method, train = SCENARIOS["conr_shuffle"]
    cfg = _config(method, train)
    trainer = Trainer(cfg, data=_data(), write=False, log=lambda *a: None)
    trainer.method.load_state_dict(a["initial_state"])
    net = trainer.method.net
    net.train()
    v1, v2, _ = _global_step_inputs()
    seed = cfg.train.seed * 1_000_003 + ITERATION

    def target_net(x):
        return torch.nn.functional.normalize(net.target_projector(net.target_encoder(x)).float(), dim=1)

    with torch.no_grad():
        for call, view in enumerate((v2, v1)):               # the loss's two view orders
            perm = shuffle_permutation(GLOBAL_BATCH, seed * 1009 + call)
            shuffled = torch.cat([target_net(view[perm][r * LOCAL_BATCH:(r + 1) * LOCAL_BATCH])
                                  for r in range(WORLD)])
            expected = torch.empty_like(shuffled)
            expected[perm] = shuffled
            plain = torch.cat([target_net(view[r * LOCAL_BATCH:(r + 1) * LOCAL_BATCH]) for r in range(WORLD)])
            assert not torch.allclose(expected, plain, atol=1e-3)  # the shuffle changes the BN statistics
            for rank, r in enumerate(ranks):
                rows = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
                _close(r["conr_shuffle"]["targets"][call], expected[rows])


@pytest.mark.slow  # the `runs` fixture (2-process gloo launch)
def test_syncbatchnorm_equals_batchnorm_on_the_gathered_batch(runs):
    ranks, _ = runs
    u = ranks[0]["syncbn_unit"]
    ref = torch.nn.BatchNorm2d(3)
    ref.load_state_dict(u["ref_state"])
    x = u["x"].clone().requires_grad_()
    y = ref(x)
    (y * u["w"]).sum().backward()
    w_grad = sum(r["syncbn_unit"]["w_grad"] for r in ranks)   # the trainer sums (averages) these over ranks
    b_grad = sum(r["syncbn_unit"]["b_grad"] for r in ranks)
    for r in ranks:
        lo, hi = r["syncbn_unit"]["part"]
        _close(r["syncbn_unit"]["y"], y.detach()[lo:hi])
        _close(r["syncbn_unit"]["x_grad"], x.grad[lo:hi])
        _close(r["syncbn_unit"]["running"][0], ref.running_mean)
        _close(r["syncbn_unit"]["running"][1], ref.running_var)
    _close(w_grad, ref.weight.grad)
    _close(b_grad, ref.bias.grad)


def test_single_process_helpers_are_identities():
    from conr.engine import distributed as d

    x = torch.randn(4, 3, requires_grad=True)
    assert d.all_gather_nograd(x) is x
    assert d.all_gather_with_grad(x, "per_rank") is x
    assert d.all_reduce_sum_with_grad(x) is x
    assert d.broadcast_object({"a": 1}) == {"a": 1}
    net = torch.nn.Linear(3, 2)
    torch.testing.assert_close(d.ShuffleBN(0)(net, x), net(x))
    with pytest.raises(ValueError, match="grad_scale_mode"):
        d.all_gather_with_grad(x, "mean")
    assert torch.equal(d.shuffle_permutation(10, 5), d.shuffle_permutation(10, 5))


# ------------------------------------------------------------ end to end: torchrun
DIGITS_YAML = """\
method: conr
data: {name: digits, split: all, image_size: 16, subset: 512}
augment: {scale: [0.6, 1.0], hflip_p: 0.0, rotation: 15.0, jitter: [0.4, 0.4, 0.0, 0.0], gray_p: 0.0}
model: {backbone: small_cnn, width: 8, hidden_dim: 64, proj_dim: 32}
train: {epochs: 3, batch_size: 128, lr: 0.05, warmup_epochs: 1, ema_base: 0.99, ema_schedule: constant,
        device: cpu}
stage2: {start_epoch: 2, k: 5, k1: 5, k2: 2, t_end: 4}
cluster: {n_clusters: 10, eval_every: 1}
run: {progress: false, tensorboard: false}
"""


def _launch(args, nproc: int | None, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    if nproc is None:
        cmd = [sys.executable, "-m", "conr", "train", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "conr", "train", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def _metric_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith(("epoch ", "nmi="))]


@pytest.mark.slow
def test_torchrun_two_processes_train_and_resume_on_one_and_two(tmp_path):
    import json

    cfg = tmp_path / "digits_small.yaml"
    cfg.write_text(DIGITS_YAML)
    run = tmp_path / "run"
    first = _launch(["--config", str(cfg), "--run-dir", str(run)], 2, tmp_path)
    lines = _metric_lines(first.stdout)
    assert len([x for x in lines if x.startswith("epoch ")]) == 3, first.stdout   # one writer: no duplicates
    assert [x for x in lines if x.startswith("nmi=")] == lines[-1:]                  # one closing report
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    assert ckpt["epoch"] == 3 and ckpt["pseudo_labels"].shape == (512,)

    # resume on ONE process from the 2-process checkpoint, then on two again
    one = _launch(["--run-dir", str(run), "--resume", "train.epochs=4"], None, tmp_path)
    assert _metric_lines(one.stdout)[0].startswith("epoch 4:"), one.stdout
    two = _launch(["--run-dir", str(run), "--resume", "train.epochs=5"], 2, tmp_path)
    assert _metric_lines(two.stdout)[0].startswith("epoch 5:"), two.stdout
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5]
    assert all({"nmi", "acc", "ari", "loss"} <= r.keys() for r in records)
    assert [r["stage"] for r in records] == [1, 1, 2, 2, 2]


# ------------------------------------------- exact: per-GPU BN as BN groups in one process
@pytest.mark.slow  # the `runs` fixture (2-process gloo launch)
@pytest.mark.parametrize("name", ["conr_shuffle", "byol_shuffle"])
def test_bn_groups_in_one_process_equal_per_rank_bn_with_shuffle(runs, name):
    """train.bn_group_size = the per-rank batch: one process with the whole batch normalises
    as the ranks did (per-rank BatchNorm, shuffle-BN on the target): the same loss,
    gradients and update, and BN running statistics equal to the ranks' buffers averaged
    (what sync_buffers makes them at the end of the epoch)."""

    ranks, _ = runs
    method, train = SCENARIOS[name]
    single = _one_step(method, {**train, "bn_group_size": LOCAL_BATCH}, 0, 1)
    a = ranks[0][name]
    _assert_same_dicts(single["initial_state"], a["initial_state"], rtol=0, atol=0)
    assert sum(r[name]["loss"] for r in ranks) / WORLD == pytest.approx(single["loss"], rel=1e-5, abs=1e-6)
    _assert_same_dicts(single["grads"], a["grads"])
    _assert_same_dicts(single["delta"], a["delta"])
    averaged = {k: sum(r[name]["state"][k].double() for r in ranks) / WORLD for k in a["state"]
                if "running_" in k}
    assert averaged  # the nets have BatchNorm layers
    _assert_same_dicts({k: single["state"][k].double() for k in averaged}, averaged)
    if name == "conr_shuffle":
        for x, y in zip(single["neighbors"] + single["keep"], a["neighbors"] + a["keep"]):
            assert torch.equal(x.sort(dim=1).values if x.dim() == 2 else x,
                               y.sort(dim=1).values if y.dim() == 2 else y)
    # and without grouping one process is measurably different (the test can fail)
    plain = _one_step(method, train, 0, 1)
    assert max(float((plain["grads"][k] - a["grads"][k]).abs().max()) for k in a["grads"]) > 1e-4
