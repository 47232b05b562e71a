"""Faithfulness to the runs behind the published numbers (issue 12): the LR schedule,
k-means restarts, HaDis blur, per-GPU BatchNorm groups, config provenance and
``conr train --print-config``. References are written here by hand from spec 2-7."""
from __future__ import annotations

import math

import pytest
import torch

from conr.config import ConfigError, load_config
from conr.engine import lr_at

# ----------------------------------------------------------------------------- LR schedule

T, W, BASE = 1000, 50, 0.1


def official_lr(epoch: int, step: int, iters: int) -> float:
    """The official code's LR at step ``step`` (0-based) of the 1-based ``epoch``: n_iter
    counts from 1, e = n_iter / iters_per_epoch; linear warm-up base·e/W, then
    0.5·base·(1 + cos(π·(e − W)/T))."""
    n_iter = (epoch - 1) * iters + step + 1
    e = n_iter / iters
    if e < W:
        return BASE * e / W
    return 0.5 * BASE * (1 + math.cos(math.pi * (e - W) / T))


def to_zero_lr(epoch: int, iters: int) -> float:
    """First step of ``epoch`` under a cosine that reaches 0 at T, after the warm-up."""
    done = (epoch - 1) * iters
    return 0.5 * BASE * (1 + math.cos(math.pi * (done - W * iters) / ((T - W) * iters)))


@pytest.mark.parametrize("iters", [1, 7, 97])
@pytest.mark.parametrize("epoch", [1, 50, 801, 1000])
def test_lr_follows_the_official_cosine(epoch, iters):
    total, warm = T * iters, W * iters
    for step in (0, iters // 2, iters - 1):
        it = (epoch - 1) * iters + step
        assert lr_at(it, total, warm, BASE) == pytest.approx(official_lr(epoch, step, iters), rel=1e-12, abs=1e-15)
        assert lr_at(it, total, warm, BASE, "official_cosine") == lr_at(it, total, warm, BASE)


def test_official_cosine_figures_of_the_spec():
    iters = 97
    total, warm = T * iters, W * iters
    first = lambda e: (e - 1) * iters  # noqa: E731
    # spec 2: never 0, 0.00064 at epoch 1000; the warm-up ends at the full base LR
    assert lr_at(first(1000), total, warm, BASE) == pytest.approx(0.00064, abs=5e-6)
    assert lr_at(total - 1, total, warm, BASE) > 5e-4
    assert lr_at(warm - 1, total, warm, BASE) == pytest.approx(BASE)
    assert lr_at(0, total, warm, BASE) == pytest.approx(BASE / warm)
    # issue 12: cosine-to-0 is 0.72, 0.50, 0.28 x the official LR at epochs 801, 901, 951
    for epoch, ratio in ((801, 0.72), (901, 0.50), (951, 0.28)):
        zero = lr_at(first(epoch), total, warm, BASE, "cosine_to_zero")
        assert zero == pytest.approx(to_zero_lr(epoch, iters), rel=1e-9)
        assert zero / lr_at(first(epoch), total, warm, BASE) == pytest.approx(ratio, abs=0.01)
    assert lr_at(total - 1, total, warm, BASE, "cosine_to_zero") < 1e-8


def test_lr_schedule_config_key():
    assert load_config(None).train.lr_schedule == "official_cosine"
    assert load_config("cifar10").train.lr_schedule == "official_cosine"
    with pytest.raises(ConfigError, match="train.lr_schedule"):
        load_config(None, ["train.lr_schedule=cosine"])
    with pytest.raises(ValueError, match="train.lr_schedule"):
        lr_at(100, 10, 1, 0.1, "linear")


@pytest.mark.parametrize("schedule", ["official_cosine", "cosine_to_zero"])
def test_trainer_steps_the_configured_schedule(schedule):
    from conr.engine import Trainer

    cfg = load_config("digits", ["model.width=4", "model.hidden_dim=32", "model.proj_dim=16", "data.subset=256",
                                 "train.batch_size=64", "train.epochs=3", "train.warmup_epochs=1",
                                 "method=byol", "cluster.n_init=1",
                                 "cluster.eval_every=10", "run.progress=false", "run.tensorboard=false",
                                 f"train.lr_schedule={schedule}", "train.lr=0.2"])
    trainer = Trainer(cfg, write=False, log=lambda *a: None)
    seen = []
    orig = trainer.optimizer.step

    def step(*a, **k):
        seen.append(trainer.optimizer.param_groups[0]["lr"])
        return orig(*a, **k)

    trainer.optimizer.step = step
    trainer.fit(until_epoch=2)
    iters, base = 4, 0.2 * 64 / 256
    mult = trainer.method.lr_multipliers(1)[trainer.optimizer.param_groups[0]["name"]]
    for it, lr in enumerate(seen):
        e = (it + 1) / iters
        if e < 1 or (schedule == "cosine_to_zero" and it < iters):
            want = base * e
        elif schedule == "official_cosine":
            want = 0.5 * base * (1 + math.cos(math.pi * (e - 1) / 3))
        else:
            want = 0.5 * base * (1 + math.cos(math.pi * (it - iters) / (2 * iters)))
        assert lr == pytest.approx(want * mult, rel=1e-9), it


# ----------------------------------------------------------------------------- STL-10 split

def _write_stl10(root, n_train=8, n_test=12, n_unlabelled=30, seed=0):
    """A tiny stl10_binary/ release in the exact on-disk format (column-major uint8 images,
    labels 1..10): images of class c are a bright square at a class-dependent place."""
    import numpy as np

    rng = np.random.default_rng(seed)
    d = root / "stl10_binary"
    d.mkdir(parents=True)

    def images(labels):
        x = rng.integers(0, 40, (len(labels), 3, 96, 96), dtype=np.uint8)
        for i, c in enumerate(labels):
            x[i, :, 20 * (c % 4):20 * (c % 4) + 30, 30 * (c // 4):30 * (c // 4) + 30] = 250
        return np.ascontiguousarray(x.transpose(0, 1, 3, 2)).tobytes()

    y_train = rng.integers(0, 3, n_train)
    y_test = rng.integers(0, 3, n_test)
    (d / "train_X.bin").write_bytes(images(y_train))
    (y_train + 1).astype(np.uint8).tofile(d / "train_y.bin")
    (d / "test_X.bin").write_bytes(images(y_test))
    (y_test + 1).astype(np.uint8).tofile(d / "test_y.bin")
    (d / "unlabeled_X.bin").write_bytes(images(rng.integers(0, 3, n_unlabelled)))
    return list(y_train) + list(y_test)


def test_stl10_config_trains_on_unlabelled_too():
    cfg = load_config("stl10")
    assert cfg.data.split == "train+test+unlabeled"


def test_stl10_with_unlabelled_images_scores_the_labelled_only(tmp_path, capsys):
    import numpy as np
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from conr.cli import main
    from conr.engine import Trainer

    truth = _write_stl10(tmp_path)
    over = [f"data.root={tmp_path}", "data.image_size=16", "model.backbone=small_cnn", "model.width=4",
            "model.hidden_dim=32", "model.proj_dim=16", "train.batch_size=16", "train.epochs=1",
            "train.warmup_epochs=0", "train.device=cpu", "method=byol", "cluster.n_clusters=3",
            "cluster.n_init=2", "run.progress=false", "run.tensorboard=false", f"run.out_dir={tmp_path / 'runs'}",
            "run.name=stl"]
    trainer = Trainer(load_config("stl10", over), log=print)
    assert len(trainer.data) == 50 and trainer.data.n_labelled == 20
    result = trainer.fit()
    assert result.labels.shape == (50,)
    pred = result.labels.numpy()[:20]  # train, test, then unlabeled: the first 20 are the labelled ones
    m = result.metrics
    assert m["scored"] == 20
    assert m["nmi"] == pytest.approx(normalized_mutual_info_score(truth, pred), abs=1e-9)
    assert m["ari"] == pytest.approx(adjusted_rand_score(truth, pred), abs=1e-9)
    # ACC by brute force over every one-to-one map of the 3 clusters to the 3 classes
    from itertools import permutations

    best = max(np.mean([p[c] == t for c, t in zip(pred, truth)]) for p in permutations(range(3)))
    assert m["acc"] == pytest.approx(best, abs=1e-9)
    assert "scored=20" in capsys.readouterr().out
    rc = main(["eval", str(tmp_path / "runs" / "stl"), "--json"])
    report = __import__("json").loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and report["scored"] == 20 and report["n_images"] == 50
    assert np.array(report["confusion"]).sum() == 20


# ----------------------------------------------------------------------------- BN groups

@pytest.mark.parametrize("shape", [(12, 5), (12, 3, 4, 4)])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_group_batchnorm_is_one_batchnorm_per_group(shape, momentum):
    from conr.engine.batchnorm import GroupBatchNorm, convert_group_batchnorm

    torch.manual_seed(0)
    c = shape[1]
    bn_cls = torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d
    ref = bn_cls(c, momentum=momentum)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
        ref.bias.uniform_(-0.5, 0.5)
    model = torch.nn.Sequential(bn_cls(c, momentum=momentum))
    model[0].load_state_dict(ref.state_dict())
    convert_group_batchnorm(model, 4)
    assert isinstance(model[0], GroupBatchNorm)
    copies = [bn_cls(c, momentum=momentum) for _ in range(3)]  # three "ranks"
    for cp in copies:
        cp.load_state_dict(ref.state_dict())
    for step in range(2):
        x = (torch.randn(*shape) * 2 + 1).requires_grad_()
        w = torch.randn(*shape)
        y = model(x)
        (y * w).sum().backward()
        xs = [x.detach()[4 * r:4 * r + 4].clone().requires_grad_() for r in range(3)]
        ys = [cp(xr) for cp, xr in zip(copies, xs)]
        sum((yr * w[4 * r:4 * r + 4]).sum() for r, yr in enumerate(ys)).backward()
        torch.testing.assert_close(y, torch.cat(ys), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(x.grad, torch.cat([xr.grad for xr in xs]), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(model[0].weight.grad, sum(cp.weight.grad for cp in copies), rtol=1e-5, atol=1e-6)
        for name in ("running_mean", "running_var"):
            torch.testing.assert_close(getattr(model[0], name),
                                       sum(getattr(cp, name) for cp in copies) / 3, rtol=1e-5, atol=1e-6)
        x.grad = None
        model.zero_grad()
        for cp in copies:
            cp.zero_grad()
            for name in ("running_mean", "running_var"):  # the epoch-end average of the ranks' buffers
                getattr(cp, name).copy_(getattr(model[0], name))
    model.eval()
    x = torch.randn(*shape)
    cp = copies[0].eval()
    torch.testing.assert_close(model(x), cp(x))  # eval: plain BatchNorm with the averaged statistics


def test_bn_group_size_config_errors():
    assert load_config("cifar10").train.bn_group_size is None
    assert load_config("cifar10", ["train.bn_group_size=128"]).train.bn_group_size == 128
    with pytest.raises(ConfigError, match="divide"):
        load_config("cifar10", ["train.bn_group_size=100"])
    with pytest.raises(ConfigError, match="sync_bn"):
        load_config("cifar10", ["train.bn_group_size=128", "train.sync_bn=true"])


# ----------------------------------------------------------------------------- print-config

def test_print_config_shows_the_official_values_and_does_not_train(tmp_path, capsys, monkeypatch):
    import yaml

    from conr.cli import main
    from conr.config import config_from_dict

    monkeypatch.chdir(tmp_path)
    assert main(["train", "--config", "cifar10", "--print-config", "cluster.eval_every=5"]) == 0
    text = capsys.readouterr().out
    raw = yaml.safe_load(text)
    # spec 2-4 / the official CIFAR-10 config, typed here by hand
    assert raw["train"]["lr_schedule"] == "official_cosine"
    assert (raw["train"]["epochs"], raw["train"]["batch_size"], raw["train"]["lr"]) == (1000, 512, 0.05)
    assert (raw["train"]["warmup_epochs"], raw["train"]["weight_decay"]) == (50, 5e-4)
    assert (raw["stage2"]["start_epoch"], raw["stage2"]["t_end"], raw["stage2"]["loss_scale"]) == (800, 850, 0.25)
    assert (raw["stage2"]["k"], raw["stage2"]["k1"], raw["stage2"]["k2"]) == (10, 10, 2)
    assert (raw["cluster"]["n_init"], raw["cluster"]["eval_every"]) == (10, 5)
    assert raw["augment"]["blur_p"] == 0.0 and raw["augment"]["scale"] == [0.08, 1.0]
    assert config_from_dict(raw) == load_config("cifar10", ["cluster.eval_every=5"])  # reads back as the same run
    assert not (tmp_path / "runs").exists()  # nothing trained, no run folder


# ----------------------------------------------------------------------------- HaDis, n_init

# spec 6, typed by hand: name -> (image size, batch, w, EMA schedule, resample, blur_p); blur_p 0
# everywhere: the five official HaDis configs (config/*_r18_propos.yml) set use_gaussian_blur: false
HADIS = {
    "hadis_cifar10": (32, 256, 0.1, "constant", False, 0.0),
    "hadis_cifar20": (32, 256, 0.05, "cosine", True, 0.0),
    "hadis_stl10": (96, 128, 0.1, "constant", False, 0.0),
    "hadis_imagenet10": (96, 128, 0.05, "constant", False, 0.0),
    "hadis_imagenet_dogs": (96, 128, 0.1, "constant", False, 0.0),
}


@pytest.mark.parametrize("name", sorted(HADIS))
def test_hadis_configs_follow_spec6(name):
    size, batch, w, ema, resample, blur = HADIS[name]
    cfg = load_config(name)
    assert cfg.method == "hadis" and cfg.model.backbone == "resnet18_cifar"
    assert (cfg.data.image_size, cfg.train.batch_size, cfg.hadis.proto_weight) == (size, batch, w)
    assert (cfg.train.ema_schedule, cfg.train.ema_base, cfg.hadis.resample) == (ema, 0.996, resample)
    assert (cfg.train.epochs, cfg.train.warmup_epochs, cfg.train.lr, cfg.train.weight_decay) == (1000, 50, 0.05, 5e-4)
    assert (cfg.hadis.latent_std, cfg.hadis.hsd_temperature, cfg.hadis.proto_temperature) == (0.001, 0.5, 0.5)
    assert cfg.train.symmetric and cfg.train.shuffle_bn and cfg.cluster.n_init == 10
    assert cfg.augment.blur_p == blur and cfg.augment.blur_sigma == [0.1, 2.0]


def test_hadis_96px_training_views_are_not_blurred():
    """The trainer's augmentation for hadis_stl10 does not blur (the official config's
    use_gaussian_blur: false); augment.blur_p=0.5 switches blur on for about half the views."""
    from conr.data import ImageData
    from conr.engine import Trainer

    g = torch.Generator().manual_seed(0)
    data = ImageData(images=torch.randint(0, 256, (40, 3, 24, 24), dtype=torch.uint8, generator=g),
                     labels=torch.arange(40) % 10, name="synthetic", normalization="imagenet")
    over = ["data.image_size=24", "model.backbone=small_cnn", "model.width=4", "model.hidden_dim=16",
            "model.proj_dim=8", "train.batch_size=20", "train.device=cpu", "run.progress=false"]
    trainer = Trainer(load_config("hadis_stl10", over), data=data, write=False, log=lambda *a: None)
    aug = trainer.augmenter(1)
    assert aug.cfg.blur_p == 0.0
    x = data.images[:40]
    plain = aug(x, torch.Generator().manual_seed(3))
    blur_on = Trainer(load_config("hadis_stl10", over + ["augment.blur_p=0.5"]), data=data, write=False,
                      log=lambda *a: None).augmenter(1)
    blurred = blur_on(x, torch.Generator().manual_seed(3))
    changed = (blurred - plain).flatten(1).abs().amax(1) > 1e-4
    assert 5 <= int(changed.sum()) <= 35  # about half of the 40 views


@pytest.mark.parametrize("name", ["cifar10", "cifar20", "stl10", "imagenet10", "imagenet_dogs", "tiny_imagenet",
                                  "cifar10_paper", "hadis_cifar10", "moco_cifar10", "simsiam_cifar10"])
def test_benchmark_configs_use_ten_kmeans_restarts(name):
    assert load_config(name).cluster.n_init == 10


# ----------------------------------------------------------------------------- provenance

@pytest.mark.parametrize("name", ["cifar20", "stl10", "imagenet10", "imagenet_dogs", "tiny_imagenet"])
def test_only_cifar10_claims_the_official_conr_config(name):
    from conr.config import packaged_config_dir

    for stem in (name, f"{name}_paper"):
        text = (packaged_config_dir() / f"{stem}.yaml").read_text()
        assert "settings of the official CoNR code" not in text
        assert "produced the published numbers" not in text
    text = (packaged_config_dir() / f"{name}.yaml").read_text()
    assert "no official CoNR config" in text and "Where the values come from" in text
    assert "[CoNR]" in (packaged_config_dir() / "cifar10.yaml").read_text()
