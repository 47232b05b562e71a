"""The fast training step: no host-device synchronisation inside a step, fused /
foreach SGD equal to the per-parameter loop, train.compile wiring, and float32
neighbourhoods and losses under bf16 autocast."""
from __future__ import annotations

import math
import traceback

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from conr.config import load_config
from conr.data import ImageData

aten = torch.ops.aten

TINY = ["data.image_size=8", "model.backbone=small_cnn", "model.width=4", "model.hidden_dim=16", "model.proj_dim=8",
        "train.batch_size=16", "train.epochs=2", "train.warmup_epochs=1", "train.device=cpu", "run.progress=false",
        "run.log_every=1000", "stage2.start_epoch=1", "stage2.k=3", "stage2.k1=4", "stage2.k2=2", "stage2.t_end=2",
        "cluster.n_clusters=3", "cluster.max_iter=20", "simsiam.proj_hidden_dim=16", "simsiam.proj_dim=16",
        "simsiam.pred_hidden_dim=4", "moco.dim=8", "moco.queue_size=24", "hadis.warmup_epochs=1",
        "hadis.resample=true"]
METHODS = ("byol", "conr", "hadis", "simsiam", "simsiam_connr", "moco", "moco_connr")


def _tiny_data(n: int = 48) -> ImageData:
    g = torch.Generator().manual_seed(0)
    return ImageData(images=torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g),
                     labels=torch.arange(n) % 3, name="random", normalization="auto")


def _trainer(method: str, *extra: str):
    from conr.engine import Trainer

    cfg = load_config(None, TINY + [f"method={method}", *extra])
    return Trainer(cfg, data=_tiny_data(), write=False, log=lambda *a: None)


# ------------------------------------------------------------------ no syncs
# Ops that make the host wait for a CUDA device: reading a value back (.item(), bool(),
# float(), int() of a tensor), data-dependent output shapes, comparisons returning a bool.
_SYNC_OPS = {aten._local_scalar_dense, aten.nonzero, aten.masked_select, aten.equal, aten.is_nonzero,
             aten.unique_consecutive, aten._unique2, aten.unique_dim, aten.bincount, aten.histc,
             aten.allclose}


def _bool_index(indices) -> bool:
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (indices or ()))


class SyncDetector(TorchDispatchMode):
    """Records every op that synchronises with a CUDA device, wherever it runs (CPU here)."""

    def __init__(self):
        super().__init__()
        self.active = False
        self.hits: list[tuple[str, str]] = []

    def record(self, what: str) -> None:
        if self.active:
            self.hits.append((what, "".join(traceback.format_stack(limit=14)[:-2])))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func.overloadpacket
        if packet in _SYNC_OPS or (packet is aten.repeat_interleave and kwargs.get("output_size") is None
                                   and isinstance(args[0], torch.Tensor) and len(args) == 1):
            self.record(str(func))
        elif packet in (aten.index, aten.index_put, aten.index_put_, aten._index_put_impl_) and _bool_index(args[1]):
            self.record(f"{func} with a boolean mask")
        return func(*args, **kwargs)


@pytest.fixture
def sync_detector(monkeypatch):
    det = SyncDetector()
    for name in ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__"):
        original = getattr(torch.Tensor, name)

        def patched(self, *a, __original=original, __name=name, **k):
            det.record(f"Tensor.{__name}")
            return __original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, patched)
    return det


def _watch_steps(trainer, det: SyncDetector) -> None:
    """Detection on from the first step of an epoch up to its first log step (which syncs by
    design); the augmentation takes its GPU path (whole-batch ``where``) on the CPU too."""
    augmenter, check_finite = trainer.augmenter, trainer._check_finite

    def watched_augmenter(epoch):
        aug = augmenter(epoch)
        aug.sync_free = True
        det.active = True
        return aug

    def unwatched_check(*a, **k):
        det.active = False
        return check_finite(*a, **k)

    trainer.augmenter = watched_augmenter
    trainer._check_finite = unwatched_check


@pytest.mark.parametrize("method", METHODS)
def test_no_host_sync_inside_training_steps(method, sync_detector):
    trainer = _trainer(method)
    assert trainer.iters_per_epoch == 3 and trainer.cfg.run.log_every > 3  # only the epoch's last step logs
    _watch_steps(trainer, sync_detector)
    with sync_detector:
        for epoch in (1, 2):  # stage 1 / warm-up, then stage 2 / ConNR* / prototypes
            if trainer.method.needs_clusters(epoch):
                trainer.cluster_step()  # per epoch, not per step: outside the watched window
            record = trainer.train_epoch(epoch)
            assert math.isfinite(record["loss"])
    if method in ("conr", "simsiam_connr", "moco_connr"):
        assert record["stage"] == 2 and "batch_kept" in record and "batch_purity" in record
    hits = sync_detector.hits
    assert not hits, f"{len(hits)} host syncs inside steps, first: {hits[0][0]}\n{hits[0][1]}"


def test_sync_detector_catches_syncs(sync_detector):
    """The detector itself: the CPU augmentation path (per-subset ops) and .item() are caught."""
    from conr.data.augment import AugmentConfig, BatchAugment

    x = torch.randint(0, 256, (8, 3, 8, 8), dtype=torch.uint8)
    sync_detector.active = True
    with sync_detector:
        BatchAugment(AugmentConfig(size=8), sync_free=False)(x, torch.Generator().manual_seed(0))
        n_aug = len(sync_detector.hits)
        float(x.float().mean())
    assert n_aug > 0 and len(sync_detector.hits) > n_aug


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (torch.cuda.set_sync_debug_mode)")
def test_no_sync_on_cuda_with_sync_debug_mode():
    trainer = _trainer("conr", "train.device=cuda", "train.precision=bf16", "train.channels_last=true")
    trainer.cluster_step()
    aug = trainer.augmenter(2)
    gen = torch.Generator(device=trainer.device).manual_seed(0)
    perm = torch.randperm(len(trainer.data), device=trainer.device)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i in range(trainer.iters_per_epoch):
            local = perm[i * 16:(i + 1) * 16]
            x = trainer.images[local]
            v1, v2 = aug(x, gen), aug(x, gen)
            trainer.train_step(v1, v2, trainer._context(2, i, local, 0.9))
    finally:
        torch.cuda.set_sync_debug_mode(0)


# ------------------------------------------------------------------ optimiser
def test_foreach_sgd_equals_the_per_parameter_loop():
    from conr.engine.speed import make_sgd

    torch.manual_seed(0)
    a = _trainer("byol").method
    b = _trainer("byol").method
    opt_a = make_sgd(a.param_groups(), "cpu", momentum=0.9, weight_decay=5e-4)
    opt_b = torch.optim.SGD(b.param_groups(), lr=0.0, momentum=0.9, weight_decay=5e-4, foreach=False)
    assert opt_a.param_groups[0]["foreach"] is True
    g = torch.Generator().manual_seed(1)
    for step in range(3):
        for opt in (opt_a, opt_b):
            for group in opt.param_groups:
                group["lr"] = 0.1 * (step + 1)
        for pa, pb in zip(a.parameters(), b.parameters()):
            grad = torch.randn(pa.shape, generator=g)
            pa.grad, pb.grad = grad.clone(), grad.clone()
        opt_a.step()
        opt_b.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_sgd_implementation_per_device_and_after_loading():
    from conr.engine.speed import set_sgd_impl, sgd_impl

    assert sgd_impl("cpu") == {"foreach": True}
    assert sgd_impl("cuda") in ({"fused": True}, {"foreach": True})
    trainer = _trainer("byol")
    assert all(g["foreach"] for g in trainer.optimizer.param_groups)
    state = trainer.optimizer.state_dict()
    for g in state["param_groups"]:  # as saved on a GPU
        g["fused"], g["foreach"] = True, None
    trainer.optimizer.load_state_dict(state)
    set_sgd_impl(trainer.optimizer, "cpu")
    assert all(g["foreach"] and not g["fused"] for g in trainer.optimizer.param_groups)


# ------------------------------------------------------------------- compile
@pytest.mark.slow  # torch.compile: ~4-6 s
def test_compile_networks_in_place_keeps_state_and_results():
    from conr.methods import StepContext
    from conr.engine.speed import compile_networks

    torch.manual_seed(0)
    eager = _trainer("byol").method
    compiled = _trainer("byol").method
    compiled.load_state_dict(eager.state_dict())
    keys = list(compiled.state_dict())
    names = compile_networks(compiled, "cpu", backend="eager")  # dynamo tracing without code generation
    assert set(names) == {"net.encoder", "net.projector", "net.predictor", "net.target_encoder",
                          "net.target_projector"}
    assert list(compiled.state_dict()) == keys
    x1, x2 = torch.randn(16, 3, 8, 8), torch.randn(16, 3, 8, 8)
    ctx = StepContext(epoch=1, iteration=0, total_iterations=10, indices=torch.arange(16))
    torch.testing.assert_close(compiled.training_loss(x1, x2, ctx), eager.training_loss(x1, x2, ctx))


def test_compile_skipped_with_a_warning_where_it_cannot_work(monkeypatch):
    from conr.engine import speed

    monkeypatch.setattr(speed, "_COMPILE_OK", {"cpu": False})
    logs = []
    from conr.engine import Trainer

    cfg = load_config(None, TINY + ["method=byol", "train.compile=true"])
    trainer = Trainer(cfg, data=_tiny_data(), write=False, log=logs.append)
    assert any("train.compile skipped" in m for m in logs)
    assert trainer.method.net.encoder._compiled_call_impl is None
    assert math.isfinite(trainer.train_epoch(1)["loss"])


@pytest.mark.slow  # torch.compile: the probe compiles a network first (~3-5 s)
def test_compile_failure_at_first_call_falls_back_to_eager():
    from conr.engine.speed import compile_networks

    def broken_backend(gm, example_inputs):
        raise RuntimeError("no compiler here")

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3))
    holder = torch.nn.ModuleDict({"head": net})
    logs = []
    compile_networks(holder, "cpu", log=logs.append, backend=broken_backend)
    x = torch.randn(2, 4)
    torch.testing.assert_close(holder["head"](x), net[0](x))
    assert any("running it uncompiled" in m for m in logs) and net._compiled_call_impl is None


# ----------------------------------------------------------------- precision
def test_bf16_autocast_keeps_neighbourhoods_and_losses_in_float32(monkeypatch):
    """Under bf16 autocast (the CPU one here) the networks run in bfloat16, but CoNR's
    neighbourhoods, boundary ratios and loss are computed in float32."""
    from conr.methods import stage2 as conr_mod
    from conr.methods import StepContext
    from conr.ops.neighbors import conaff_neighbors

    trainer = _trainer("conr")
    trainer.cluster_step()
    seen = []
    original = conr_mod.batch_neighbors

    def spy(feats, *a):
        seen.append((feats.dtype, torch.is_autocast_enabled("cpu"), feats.clone(), original(feats, *a)))
        return seen[-1][3]

    monkeypatch.setattr(conr_mod, "batch_neighbors", spy)
    g = torch.Generator().manual_seed(0)
    v1, v2 = torch.randn(16, 3, 8, 8, generator=g), torch.randn(16, 3, 8, 8, generator=g)
    ctx = StepContext(epoch=2, iteration=0, total_iterations=10, indices=torch.arange(16),
                      pseudo_labels=trainer.pseudo_labels, centers=trainer.centers, keep_fraction=0.9)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pred = trainer.method.net.predictor(trainer.method.net.project(v1))
        loss = trainer.method.training_loss(v1, v2, ctx)
    assert pred.dtype == torch.bfloat16  # the networks did run in bf16
    assert loss.dtype == torch.float32
    assert len(seen) == 2  # one neighbourhood per view order (symmetric loss)
    for dtype, autocast_on, feats, neighbors in seen:
        assert dtype == torch.float32 and not autocast_on
        assert torch.equal(neighbors, conaff_neighbors(feats, 3, 4, 2))
