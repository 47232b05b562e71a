"""Streaming image folders (conr/data/stream.py): same pixels, same batch order and
the same training as the in-memory path."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conr.config import ConfigError, load_config
from conr.data import ImageData, build_data
from conr.data import stream as stream_mod
from conr.data.folder import BadImageError
from conr.data.stream import FileImages, StreamData

TINY = ["data.name=imagefolder", "data.split=train+test", "data.image_size=8", "model.backbone=small_cnn",
        "model.width=4", "model.hidden_dim=16", "model.proj_dim=8", "train.batch_size=16", "train.epochs=2",
        "train.warmup_epochs=1", "train.device=cpu", "run.progress=false", "method=conr", "stage2.start_epoch=1",
        "stage2.k=3", "stage2.k1=4", "stage2.k2=2", "stage2.t_end=2", "cluster.n_clusters=3", "cluster.max_iter=20",
        "run.log_every=2"]


@pytest.fixture(autouse=True)
def _setup(monkeypatch):
    monkeypatch.setenv("CONR_CACHE", "off")  # the in-memory loader must not write ~/.cache


@pytest.fixture
def folder(tmp_path):
    """train/ and test/ trees, 3 classes, PNG files of assorted sizes (resized by the decoder)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    for split, count in (("train", 6), ("test", 3)):
        for c in ("ant", "bee", "cat"):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(count):
                h, w = rng.integers(8, 20, size=2)
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(d / f"{i:02d}.png")
    return root


def _cfg(root, *extra):
    return load_config(None, TINY + [f"data.root={root}", *extra])


def test_streamed_folder_has_the_in_memory_pixels_labels_and_order(folder):
    mem = build_data(_cfg(folder, "data.in_memory=true").data)
    streamed = build_data(_cfg(folder, "data.in_memory=false", "data.workers=0").data)
    assert isinstance(mem, ImageData) and isinstance(streamed, StreamData)
    assert len(streamed) == len(mem) == 27
    assert streamed.classes == mem.classes and torch.equal(streamed.labels, mem.labels)
    assert streamed.paths == mem.paths
    assert streamed.images.shape == mem.images.shape
    assert torch.equal(streamed.load().images, mem.images)
    assert streamed.mean_std() == mem.mean_std()
    # tensor-like indexing: slices are lazy views, index lists decode
    idx = torch.tensor([5, 0, 26, 5])
    assert torch.equal(streamed.images[idx], mem.images[idx])
    assert torch.equal(streamed.images[3], mem.images[3])
    view = streamed.images[1::4]
    assert isinstance(view, FileImages) and len(view) == len(range(1, 27, 4))
    assert torch.equal(view.materialize(), mem.images[1::4])


def test_auto_streams_above_the_size_threshold(folder, monkeypatch):
    assert isinstance(build_data(_cfg(folder).data), ImageData)  # 27 tiny images: in memory
    monkeypatch.setattr(stream_mod, "STREAM_ABOVE_BYTES", 27 * 3 * 8 * 8 - 1)
    assert isinstance(build_data(_cfg(folder, "data.workers=0").data), StreamData)


def test_cifar10_jpeg_tree_streams_and_other_data_refuses(tmp_path, folder):
    from PIL import Image

    root = tmp_path / "cifar"
    for split in ("train", "test"):
        for c in range(10):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            Image.fromarray(np.full((32, 32, 3), c * 20, np.uint8)).save(d / "0.png")
    cfg = load_config(None, ["data.name=cifar10", f"data.root={root}", "data.in_memory=false", "data.workers=0"])
    data = build_data(cfg.data)
    assert isinstance(data, StreamData) and data.name == "cifar10" and data.normalization == "cifar10"
    assert len(data) == 20 and torch.equal(data.labels, torch.arange(10).repeat(2))
    with pytest.raises(ValueError, match="in_memory=false"):
        build_data(load_config(None, ["data.name=digits", "data.in_memory=false"]).data)
    with pytest.raises(ConfigError, match="in_memory"):
        load_config(None, ["data.in_memory=sometimes"])


def _record_steps(trainer):
    """Wrap train_step: (dataset indices, first view) of every step, in order."""
    seen = []
    step = trainer.train_step

    def wrapped(v1, v2, ctx):
        seen.append((ctx.indices.clone(), v1.clone()))
        return step(v1, v2, ctx)

    trainer.train_step = wrapped
    return seen


# workers=1 starts a DataLoader worker process; its persistent loader outlives the test and a later
# garbage collection waits up to 5 s for the worker to stop: slow lane
@pytest.mark.parametrize("workers", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_streamed_training_equals_in_memory_training(folder, workers):
    from conr.engine import Trainer

    runs = {}
    for mode in ("true", "false"):
        cfg = _cfg(folder, f"data.in_memory={mode}", f"data.workers={workers}")
        trainer = Trainer(cfg, write=False, log=lambda *a: None)
        assert trainer.streamed == (mode == "false")
        seen = _record_steps(trainer)
        result = trainer.fit()
        runs[mode] = (seen, result)
    (seen_m, res_m), (seen_s, res_s) = runs["true"], runs["false"]
    assert len(seen_m) == len(seen_s) == 2 * (27 // 16)
    for (i_m, v_m), (i_s, v_s) in zip(seen_m, seen_s):
        assert torch.equal(i_m, i_s)      # same batches in the same order
        assert torch.equal(v_m, v_s)      # same pixels, same augmentation draws
    assert [r["loss"] for r in res_m.history] == [r["loss"] for r in res_s.history]
    assert all(math.isfinite(r["loss"]) for r in res_s.history)
    assert res_s.history[-1]["stage"] == 2 and "nmi" in res_s.history[-1]
    assert torch.equal(res_m.features, res_s.features)
    assert torch.equal(res_m.labels, res_s.labels)


def test_unreadable_file_skip_or_fail(folder):
    bad = folder / "train" / "ant" / "zz.png"
    bad.write_bytes(b"not an image")
    data = build_data(_cfg(folder, "data.in_memory=false", "data.workers=0").data)
    pos = data.paths.index(str(bad))
    with pytest.warns(UserWarning, match="zz.png"):
        img = data.images[pos]
    assert img.shape == (3, 8, 8) and int(img.abs().sum()) == 0
    data = build_data(_cfg(folder, "data.in_memory=false", "data.workers=0", "data.on_bad_image=fail").data)
    with pytest.raises(BadImageError, match="zz.png"):
        data.images[pos]


def test_timed_cifar10_config_stops_after_the_epoch_that_crosses_the_limit(tmp_path):
    """conr/configs/cifar10_timed.yaml with a tiny CIFAR-like JPEG tree, on the CPU."""
    from PIL import Image

    from conr.engine import Trainer

    rng = np.random.default_rng(1)
    root = tmp_path / "cifar10-jpeg"
    for split, count in (("train", 3), ("test", 1)):
        for c in range(10):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / f"{i}.jpg", quality=75)
    cfg = load_config("cifar10_timed", [
        f"data.root={root}", "train.device=cpu", "train.compile=false", "train.channels_last=false",
        "model.backbone=small_cnn", "model.width=4", "model.hidden_dim=16", "model.proj_dim=8",
        "train.batch_size=16", "train.epochs=3", "stage2.start_epoch=1", "stage2.t_end=2", "stage2.k=3",
        "stage2.k1=4", "run.max_epoch_minutes=0"])
    assert cfg.train.precision == "bf16" and cfg.data.in_memory is True
    result = Trainer(cfg, write=False, log=lambda *a: None).fit()
    assert [r["epoch"] for r in result.history] == [1]  # the limit (0 min) is crossed by epoch 1
    assert {"nmi", "acc", "ari"} <= result.metrics.keys()
