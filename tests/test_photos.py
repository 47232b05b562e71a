"""Photos through the embedded encoder (conr/auto/photos.py): which path the automatic rule
takes on grey and colour folders, the feature cache a second run reads, prediction of new
files through the same encoder and head, and the outputs of such a run (report naming the
encoder, grids from the photos, eval and plot). Tiny folders and 3 epochs."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import conr
import conr.cli
from conr.auto.photos import choose_encoder, thumbnail_side
from conr.data.survey import survey_files
from conr.data.folder import scan_images

from test_cluster_report import TINY, make_folder, run_cli

TINY_VEC = dict(epochs=3, batch_size=16, deterministic=True, overrides=["model.hidden_dim=64", "model.proj_dim=32"])


def grey_folder(root: Path, per_class: int = 8, side: int = 24) -> Path:
    rng = np.random.default_rng(0)
    for c in range(3):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = np.full((side, side), 40 + 80 * c, np.uint8) + rng.integers(0, 20, (side, side), dtype=np.uint8)
            Image.fromarray(img, "L").save(root / f"c{c}" / f"{i}.png")
    return root


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CONR_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_the_rule_sends_photos_to_the_encoder_and_small_grey_images_to_scratch(tmp_path):
    colour = survey_files(scan_images(make_folder(tmp_path / "colour", per_class=3)))
    grey = survey_files(scan_images(grey_folder(tmp_path / "grey", per_class=3)))          # 24 px: glyphs
    large_grey = survey_files(scan_images(grey_folder(tmp_path / "faces", per_class=3, side=48)))
    assert not colour.grey and grey.grey and large_grey.grey
    name, why = choose_encoder("auto", colour)
    assert name == "efficientnet_lite0" and "colour" in why
    name, why = choose_encoder("auto", grey)
    assert name is None and "small grey images (24 px" in why
    name, why = choose_encoder("auto", large_grey)
    assert name == "efficientnet_lite0" and "grey images of 48 px" in why
    assert choose_encoder("none", colour)[0] is None
    assert choose_encoder("timm:resnet18", grey) == ("timm:resnet18", "chosen by the user")
    assert thumbnail_side(1_000) == 64 and thumbnail_side(60_000) == 32


@pytest.mark.slow
def test_fits_take_the_path_the_rule_chose_and_say_why(tmp_path, cache):
    grey = conr.CoNR(n_clusters=3, image_size=16, overrides=["model.width=8"], **{
        k: v for k, v in TINY_VEC.items() if k != "overrides"}).fit(grey_folder(tmp_path / "grey"))
    assert grey.input_kind_ == "images" and grey.config_.data.encoder is None
    fitted = grey.labels_.copy()   # cluster(X) of the run's own images: the run's own partition, not a new one
    assert np.array_equal(grey.cluster(tmp_path / "grey").labels_, fitted)
    assert "grey" in grey.run_record_.reasons["data.encoder"]
    colour = conr.CoNR(n_clusters=3, **TINY_VEC).fit(make_folder(tmp_path / "colour", per_class=6))
    record = colour.run_record_
    assert colour.input_kind_ == "encoder" and record.input_kind == "encoder"
    assert colour.config_.data.encoder == "efficientnet_lite0" and colour.config_.model.backbone == "mlp"
    assert record.encoder["name"] == "efficientnet_lite0" and record.encoder["dim"] == 1280
    assert "colour" in record.reasons["data.encoder"]
    assert colour.data_.thumbnails.shape[1:] == (3, 64, 64) and len(colour.skipped_) == 1  # the corrupt file
    # the final stage weighed the encoder's features too
    assert any(c["representation"] == "encoder" for c in colour.partition_.candidates)


@pytest.mark.slow
def test_a_second_run_reads_the_cached_features(tmp_path, cache, monkeypatch):
    folder = make_folder(tmp_path / "photos", per_class=6)
    first = conr.CoNR(n_clusters=3, **TINY_VEC).fit(folder)
    assert list(cache.glob("features/*"))

    def no_network(*a, **k):
        raise AssertionError("the encoder ran again although its features were cached")

    import conr.encoders.extract as extract

    monkeypatch.setattr(extract, "_extract_all", no_network)
    second = conr.CoNR(n_clusters=3, **TINY_VEC).fit(folder)
    np.testing.assert_array_equal(first.labels_, second.labels_)  # same features, same seed
    # a touched file misses the cache: the network runs (here: the assertion)
    victim = next(p for p in sorted(folder.rglob("*.png")))
    os.utime(victim, (victim.stat().st_atime, victim.stat().st_mtime + 5))
    with pytest.raises(AssertionError, match="ran again"):
        conr.CoNR(n_clusters=3, **TINY_VEC).fit(folder)


@pytest.mark.slow
def test_predict_goes_through_the_same_encoder_and_head(tmp_path, cache):
    folder = make_folder(tmp_path / "photos", per_class=6)
    out = tmp_path / "out"
    rc, stdout = run_cli(["cluster", str(folder), "--k", "3", "--out", str(out)] + TINY)
    assert rc == 0, stdout
    assert "efficientnet_lite0" in (out / "report.html").read_text()
    assert list((out / "clusters").glob("cluster_*.png"))  # grids of the photos' thumbnails
    with open(out / "assignments.csv", newline="") as fh:
        assigned = {r["path"]: int(r["cluster"]) for r in csv.DictReader(fh)}
    # conr predict: the same images get their own clusters back
    pred = tmp_path / "pred.csv"
    rc, stdout = run_cli(["predict", str(out), str(folder), "--out", str(pred)])
    assert rc == 0, stdout
    with open(pred, newline="") as fh:
        assert {r["path"]: int(r["cluster"]) for r in csv.DictReader(fh)} == assigned
    # and from Python, a new file: its features are the encoder's, then the head's
    est = conr.CoNR.from_checkpoint(out / "run")
    assert est.input_kind_ == "encoder"
    feats = est.transform(folder)
    assert feats.shape[0] == len(assigned) and np.allclose(np.linalg.norm(feats, axis=1), 1, atol=1e-4)
    new = tmp_path / "new"
    new.mkdir()
    Image.open(next(iter(sorted(folder.rglob("*.png"))))).save(new / "again.png")
    assert est.predict(new).shape == (1,)
    # conr plot and conr eval read the run's features again (from the cache)
    assert run_cli(["plot", str(out / "run"), "--only", "training"])[0] == 0
    assert run_cli(["eval", str(out / "run"), "--json"])[0] == 0
    # and conr purity (it read the run as images: "unknown dataset 'vectors'")
    rc, stdout = run_cli(["purity", str(out / "run"), "--no-filter"])
    assert rc == 0, stdout
    assert (out / "run" / "purity" / "purity.csv").exists()


def test_in_memory_colour_images_go_through_the_encoder_without_a_cache(tmp_path, cache):
    from conr.auto.photos import photo_data
    from conr.encoders import load_encoder

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (5, 20, 30, 3), dtype=np.uint8)
    encoder = load_encoder("efficientnet_lite0")
    data = photo_data(images, encoder)
    assert data.images.shape == (5, 1280) and data.thumbnails.shape == (5, 3, 64, 64)
    assert data.representation == "encoder" and not list(cache.glob("features/*"))
    with pytest.raises(ValueError, match="exceeds the number of images"):
        photo_data(images, encoder, n_clusters=6)


def test_the_offline_error_names_the_cache_and_encoder_weights(tmp_path, monkeypatch):
    """A zoo encoder without network and without weights: one clear line (status 2) naming
    where the weights would live and --encoder-weights."""
    import socket

    def refuse(*_, **__):
        raise OSError("network is unreachable (cut by the test)")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = make_folder(tmp_path / "photos", per_class=2)
    rc = conr.cli.main(["cluster", str(folder), "--k", "2", "--out", str(tmp_path / "out"),
                        "--encoder", "torchvision:resnet18"])
    assert rc == 2
    assert not (tmp_path / "out").exists()  # nothing left behind


def test_missing_encoder_weights_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="encoder_weights"):
        conr.CoNR(n_clusters=2, encoder_weights=str(tmp_path / "nope.pth")).fit(np.zeros((4, 8, 8, 3), np.uint8))


def test_a_config_typo_is_named_before_the_photos_are_read(tmp_path, monkeypatch):
    """A mistyped override used to be named only after the encoder had read every photo (minutes on a
    large folder): the user's settings are now checked first."""
    import conr.auto.photos as photos
    from conr.config import ConfigError

    def no_extraction(*args, **kwargs):
        raise AssertionError("the photos were read before the settings were checked")

    monkeypatch.setattr(photos, "photo_data", no_extraction)
    folder = make_folder(tmp_path / "colour", per_class=3)
    with pytest.raises(ConfigError, match="unknown config key 'train.epochz'; did you mean 'train.epochs'"):
        conr.CoNR(n_clusters=2, encoder="efficientnet_lite0", overrides=["train.epochz=3"]).fit(folder)
    with pytest.raises(ConfigError, match="train.epochs expects an integer, got 'abc'"):
        conr.CoNR(n_clusters=2, encoder="efficientnet_lite0", overrides=["train.epochs=abc"]).fit(folder)


def test_an_empty_folder_is_refused_before_an_encoder_is_chosen(tmp_path, capsys):
    """An empty folder was first announced as 'colour images' for the encoder, then refused."""
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no pictures here")
    with pytest.raises(ValueError, match="no image files .* found under"):
        conr.CoNR(n_clusters=2, verbose=True).fit(tmp_path / "empty")
    assert "colour images" not in capsys.readouterr().out
