"""The rules that turn a user's images and time budget into settings
(conr/autoconfig.py, conr/budget.py), checked on folders written here with known
properties: grey or colour, 16 px, 400 images in 40 clusters."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import conr
from conr.data.survey import pick_image_size, survey_files, survey_images
from conr.auto.settings import auto_settings, schedule_for_epochs
from conr.auto.budget import StepCosts, clusterings_for, epochs_for_budget
from conr.data.folder import scan_images
from conr.estimator import as_image_data

SMALL_NET = ["model.width=8", "model.hidden_dim=64", "model.proj_dim=32", "train.threads=1"]


def _write(root, n_classes: int, per_class: int, size: int, mode: str, seed: int = 0):
    """Class folders of blob images: class c has a bright square at a class-specific place."""
    rng = np.random.default_rng(seed)
    for c in range(n_classes):
        d = root / f"c{c:02d}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 60, (size, size)).astype(np.uint8)
            r, q = divmod(c, 7)
            y0, x0 = (r * size) // 7 % (size - size // 4), (q * size) // 7 % (size - size // 4)
            img[y0:y0 + size // 4, x0:x0 + size // 4] = 230
            im = Image.fromarray(img)
            if mode == "RGB-grey":  # grey content stored as RGB files, as many scanners write them
                im = im.convert("RGB")
            elif mode == "RGB":
                tint = np.stack([img, np.roll(img, c, axis=1), 255 - img], -1)
                im = Image.fromarray(tint.astype(np.uint8))
            im.save(d / f"{i}.png")
    return root


def test_grey_folder_gets_one_channel_and_no_colour_jitter(tmp_path):
    for mode in ("L", "RGB-grey"):
        root = _write(tmp_path / mode, 3, 6, 24, mode)
        survey = survey_files(scan_images(root))
        assert survey.grey and survey.native_size == 24
        raw, why = auto_settings(survey, 3)
        assert raw["data"]["channels"] == 1
        b, c, s, h = raw["augment"]["jitter"]
        assert (s, h) == (0.0, 0.0) and b > 0 and c > 0 and raw["augment"]["gray_p"] == 0.0
        assert "grey" in why["data.channels"]
        assert as_image_data(root, device_type="cpu", channels=1).images.shape[1] == 1
    colour = _write(tmp_path / "rgb", 3, 6, 24, "RGB")
    survey = survey_files(scan_images(colour))
    assert not survey.grey
    raw, _ = auto_settings(survey, 3)
    assert raw["data"]["channels"] == 3 and "jitter" not in raw["augment"]  # the RGB defaults stay


def test_small_images_are_not_upsampled_past_what_the_network_needs():
    assert pick_image_size(16) == 16          # 16-px images are trained at 16, not 32
    assert pick_image_size(8) == 16           # 8-px ones raised only to the network's minimum
    assert pick_image_size(28) == 28 and pick_image_size(30) == 28   # rounded down, never up
    assert pick_image_size(500) == 32 and pick_image_size(500, "cuda") == 64
    survey = survey_images(torch.zeros(100, 1, 16, 16, dtype=torch.uint8))
    raw, why = auto_settings(survey, 10)
    assert raw["data"]["image_size"] == 16 and "kept" in why["data.image_size"]
    # crops of tiny images keep most of the image; large ones get the paper's strong crops
    assert raw["augment"]["scale"][0] == 0.5
    big, _ = auto_settings(survey_images(torch.zeros(10, 3, 256, 256, dtype=torch.uint8)), 2)
    assert big["augment"]["scale"][0] == 0.08


@pytest.mark.slow  # trains a 40-class model on 400 images (~20-30 s)
def test_many_small_clusters_get_a_working_batch_and_k(tmp_path):
    survey = survey_images(torch.zeros(400, 1, 32, 32, dtype=torch.uint8))
    raw, _ = auto_settings(survey, 40)
    batch, k = raw["train"]["batch_size"], raw["stage2"]["k"]
    # each of the 40 clusters has ~batch/40 members in a batch: k must not exceed what is there
    assert 160 <= batch <= 400
    assert 1 <= k <= batch / 40 and raw["stage2"]["k1"] >= raw["stage2"]["k2"] >= 1
    # and it trains end to end on a real 400-image, 40-class folder
    root = _write(tmp_path / "faces", 40, 10, 16, "L")
    model = conr.CoNR(n_clusters=40, epochs=3, device="cpu", overrides=SMALL_NET).fit(root)
    assert model.labels_.shape == (400,) and len(np.unique(model.labels_)) > 20
    assert model.config_.train.batch_size == batch and model.config_.stage2.k == k
    # 10 faces a person: small clusters, stage 2 kept its neighbours within the pseudo-clusters
    assert raw["stage2"]["same_cluster"] is model.trainer_.method.cfg.stage2.same_cluster is True


def test_schedule_follows_the_epochs():
    for epochs in (2, 5, 13, 100, 1000):
        s = schedule_for_epochs(epochs)
        start, t_end = s["stage2"]["start_epoch"], s["stage2"]["t_end"]
        assert 1 <= start < epochs and start < t_end <= epochs  # at least one epoch of each stage
    s = schedule_for_epochs(100)
    assert s["stage2"]["start_epoch"] == 60 and s["stage2"]["t_end"] == 80


def test_budget_arithmetic_against_a_hand_count():
    costs = StepCosts(step_seconds=0.5, cluster_seconds=2.0, iters_per_epoch=4)
    # 20 epochs, stage 2 = the last 8: stage 1 clusters at epochs 2,4,..,12 (6), stage 2 every epoch (8),
    # + the final clustering and the final graph clustering (2)
    assert clusterings_for(20) == 6 + 8 + 2
    # 18 epochs: stage 2 from 11 (7 epochs), stage-1 clustering every epoch (11) -> 20 clusterings
    assert clusterings_for(18) == 11 + 7 + 2
    # 20 epochs cost 20 * 2 s + 16 * 2 s = 72 s; 21 cost 42 + (12 // 2 + 8 + 2) * 2 = 74 s;
    # 18 cost 36 + 20 * 2 = 76 s: the cadence makes the cost non-monotone, and 20 still fits in 72;
    # 17 cost 34 + (10 + 7 + 2) * 2 = 72 s, 16 cost 32 + (10 + 6 + 2) * 2 = 68 s
    assert epochs_for_budget(72.0, costs) == 20
    assert epochs_for_budget(71.9, costs) == 16


@pytest.mark.slow
def test_time_budget_plans_the_epochs_that_fit(tmp_path):
    """A 0.75-minute budget trains the largest grid epoch count whose measured cost fits and
    records what it measured. How close the wall clock comes to the budget is a speed figure:
    benchmarks/budget_curve.py reports it (a unit test on wall time fails on a busy machine)."""
    from conr.auto.budget import COMPILE_ALLOWANCE, EPOCH_GRID, StepCosts, seconds_for

    root = _write(tmp_path / "imgs", 4, 30, 16, "L")
    budget_min = 0.75
    started = time.perf_counter()
    model = conr.CoNR(n_clusters=4, minutes=budget_min, device="cpu", run_dir=str(tmp_path / "run"),
                      overrides=SMALL_NET).fit(root)
    took = time.perf_counter() - started
    saved = yaml.safe_load((tmp_path / "run" / "budget.json").read_text())
    epochs = saved["epochs"]
    assert epochs == model.config_.train.epochs == model.trainer_.epoch and epochs in EPOCH_GRID
    assert abs(saved["actual_seconds"] - took) < 2.0
    # the plan: the epochs' measured cost fits the seconds the budget left them, and no longer
    # count on the grid would have (the cost is not monotone in the epochs: check them all)
    costs = StepCosts(**{f: saved[f] for f in StepCosts.__dataclass_fields__})
    assert saved["plan"] == "timed" and 0 < saved["train_seconds"] < budget_min * 60
    assert seconds_for(epochs, costs) <= saved["train_seconds"] + 0.1  # the record's rounding
    longer = [e for e in EPOCH_GRID if e > epochs and seconds_for(e, costs) <= saved["train_seconds"] - 0.1]
    assert not longer, (longer, saved)
    assert saved["estimate_seconds"] <= budget_min * 60 + COMPILE_ALLOWANCE
    # the reasons for the automatic choices head the run's config.yaml
    text = (tmp_path / "run" / "config.yaml").read_text()
    assert text.startswith("# automatic settings") and "# data.channels: all sampled images are grey" in text
    assert yaml.safe_load(text)["train"]["epochs"] == epochs
    # an explicit epoch count wins over the budget
    fixed = conr.CoNR(n_clusters=4, epochs=3, minutes=5, device="cpu", overrides=SMALL_NET).fit(root)
    assert fixed.config_.train.epochs == 3 and fixed.budget_ is None


def test_flip_average_is_the_mean_over_the_mirror():
    from conr.config import apply_overrides, config_from_dict, config_to_dict, load_config
    from conr.data import ImageData
    from conr.data.augment import eval_transform
    from conr.engine import Trainer

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (12, 1, 16, 16), dtype=torch.uint8, generator=g)
    data = ImageData(images=images, labels=torch.full((12,), -1), normalization="auto")
    raw = apply_overrides(config_to_dict(load_config("digits")), SMALL_NET + [
        "data.name=numpy", "data.image_size=16", "train.batch_size=4", "cluster.n_clusters=2",
        "cluster.flip_average=true", "train.channels_last=false", "stage2.k=2", "stage2.k1=2"])
    trainer = Trainer(config_from_dict(raw), data=data, write=False, log=lambda *a: None)
    got = trainer.extract_features()
    trainer.method.eval()
    with torch.no_grad():
        x = eval_transform(images, 16, trainer.mean, trainer.std)
        f = torch.nn.functional.normalize
        want = f(f(trainer.method.features(x), dim=1) + f(trainer.method.features(x.flip(3)), dim=1), dim=1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    mirrored = trainer.extract_features(images.flip(3))
    torch.testing.assert_close(mirrored, got, atol=1e-5, rtol=1e-4)  # a mirror gets the same features
