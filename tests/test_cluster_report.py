"""`conr cluster` / `conr plot` outputs and the scikit-learn style estimator, on a
tiny folder written here: three visually distinct synthetic classes (red stripes,
blue checkerboards, green discs) in nested sub-folders, mixed sizes, PNG and JPEG,
one grayscale image and one corrupt file. Budgets are tiny (small_cnn, 3 epochs)."""
from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import conr
from conr.cli import main
from conr.data import ImageData
from conr.estimator import NotFittedError, as_image_data
from conr.outputs.report import grid_geometry

K = 3
PER_CLASS = 12
N_READABLE = 3 * PER_CLASS + 1  # + the grayscale image; the corrupt file is skipped
TINY = ["data.image_size=16", "train.epochs=3", "train.batch_size=16", "model.width=8", "model.hidden_dim=64",
        "model.proj_dim=32", "train.threads=1", "train.deterministic=true"]
TINY_EST = dict(image_size=16, epochs=3, batch_size=16, deterministic=True,
                overrides=["model.width=8", "model.hidden_dim=64", "model.proj_dim=32", "train.threads=1"])


def run_cli(argv) -> tuple[int, str]:
    """``conr ARGV`` in this process: (exit status, what it printed)."""
    import contextlib

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(argv)
    return rc, buf.getvalue()


# --------------------------------------------------------------------------- data
def _pattern(cls: int, w: int, h: int, rng) -> Image.Image:
    y, x = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.float32)
    if cls == 0:  # red horizontal stripes
        img[..., 0] = np.where((y // 3) % 2 == 0, 230, 60)
        img[..., 1:] = 20
    elif cls == 1:  # blue / white checkerboard
        on = (y // 4 + x // 4) % 2 == 0
        img[..., 0] = np.where(on, 240, 20)
        img[..., 1] = np.where(on, 240, 40)
        img[..., 2] = 220
    else:  # green disc on dark ground
        disc = (y - h / 2) ** 2 + (x - w / 2) ** 2 < (min(w, h) / 3) ** 2
        img[..., 0] = 30
        img[..., 1] = np.where(disc, 220, 30)
        img[..., 2] = np.where(disc, 60, 30)
    img += rng.normal(0, 12, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def make_folder(root: Path, per_class: int = PER_CLASS, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    sizes = [(24, 24), (40, 32), (48, 48), (20, 30), (36, 36)]
    for c, name in enumerate(["red", "blue", "green"]):
        for i in range(per_class):
            sub = root / name / ("a" if i % 2 else "b/deep" if i % 3 == 0 else "b")
            sub.mkdir(parents=True, exist_ok=True)
            im = _pattern(c, *sizes[(i + c) % len(sizes)], rng)
            if i % 2:
                im.save(sub / f"{name}_{i}.jpg", quality=90)
            else:
                im.save(sub / f"{name}_{i}.png")
    _pattern(1, 32, 32, rng).convert("L").save(root / "blue" / "a" / "grey_checker.png")
    (root / "red" / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 3)
    (root / "green" / "a" / "from_a_phone.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")  # not read: named
    return root


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The folder, and one `conr cluster` run on it (trained, K=3)."""
    base = tmp_path_factory.mktemp("cluster")
    old = os.environ.get("CONR_CACHE")
    os.environ["CONR_CACHE"] = str(base / "cache")
    folder = make_folder(base / "photos")
    out = base / "out"
    # trained from scratch (the photos' encoder path has its own tests: tests/test_photos.py)
    rc, stdout = run_cli(["cluster", str(folder), "--k", str(K), "--out", str(out), "--encoder", "none"] + TINY)
    yield {"folder": folder, "out": out, "rc": rc, "stdout": stdout, "base": base}
    if old is None:
        os.environ.pop("CONR_CACHE", None)
    else:
        os.environ["CONR_CACHE"] = old


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------- conr cluster
@pytest.mark.slow  # the `env` fixture trains through `conr cluster`
def test_cluster_writes_assignments_csv(env):
    assert env["rc"] == 0, env["stdout"]
    rows = _rows(env["out"] / "assignments.csv")
    assert len(rows) == N_READABLE
    assert ("warning: left out 1 .heic file, which this installation does not read: convert it to JPEG or PNG "
            "(or pip install pillow-heif)") in env["stdout"]
    assert list(rows[0]) == ["path", "cluster", "boundary_ratio", "distance_to_center", "boundary", "confidence",
                             "true_label"]
    paths = [r["path"] for r in rows]
    assert not any(p.endswith("broken.jpg") for p in paths)
    assert any(p.endswith("grey_checker.png") for p in paths)
    assert any("/b/deep/" in p for p in paths)  # nested sub-folders are searched
    assert all(Path(p).is_file() for p in paths)
    clusters = [int(r["cluster"]) for r in rows]
    assert set(clusters) <= set(range(K))
    assert all(float(r["boundary_ratio"]) > 0 and float(r["distance_to_center"]) >= 0 for r in rows)
    n_boundary = sum(int(r["boundary"]) for r in rows)
    assert 1 <= n_boundary <= N_READABLE // 2  # the filter at fr0=0.8 drops about a fifth
    # boundary = the largest ratios
    ratios = np.array([float(r["boundary_ratio"]) for r in rows])
    flags = np.array([int(r["boundary"]) for r in rows], bool)
    assert ratios[flags].min() >= ratios[~flags].max()
    assert {r["true_label"] for r in rows} == {"red", "blue", "green"}
    # stdout names the unreadable file and the count
    assert "broken.jpg" in env["stdout"] and "1 unreadable" in env["stdout"]
    assert re.search(r"nmi=\d\.\d{4} acc=\d\.\d{4} ari=\d\.\d{4}", env["stdout"])


@pytest.mark.slow  # the `env` fixture trains through `conr cluster`
def test_cluster_grids_mark_boundary_samples(env):
    rows = _rows(env["out"] / "assignments.csv")
    grids = sorted((env["out"] / "clusters").glob("cluster_*.png"))
    assert [g.name for g in grids] == [f"cluster_{c:02d}.png" for c in range(K)]
    for c, g in enumerate(grids):
        members = [r for r in rows if int(r["cluster"]) == c]
        # closest to the centre first
        members.sort(key=lambda r: float(r["distance_to_center"]))
        im = np.asarray(Image.open(g).convert("RGB"))
        pad, sp, cell = grid_geometry(64)
        cols = min(8, len(members))
        assert im.shape[1] == cols * cell and im.shape[0] == -(-len(members) // cols) * cell
        for n, r in enumerate(members):
            y, x = divmod(n, cols)
            assert tuple(im[y * cell, x * cell]) == (255, 255, 255)  # white space between cells
            corner = im[y * cell + sp, x * cell + sp]
            if int(r["boundary"]):
                assert tuple(corner) == (220, 30, 30), (g, n)
            else:
                assert tuple(corner) == (255, 255, 255), (g, n)


@pytest.mark.slow  # the `env` fixture trains through `conr cluster`
def test_report_is_self_contained(env):
    text = (env["out"] / "report.html").read_text()
    images = re.findall(r'<img [^>]*src="([^"]*)"', text)
    assert len(images) == K + 4  # one grid per cluster + t-SNE, neighbours, purity, training
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r"(src|href)=\"(https?:|//|file:)", text)
    assert "<link" not in text and "<script" not in text
    for name in ("t-SNE", "Euclidean vs ConAff", "purity", "Training curves"):
        assert name in text
    assert "broken.jpg" in text and "unreadable image file(s) were skipped" in text
    # the scores shown are the run's
    nmi = float(re.findall(r"^nmi=(\d\.\d{4})", env["stdout"], re.M)[-1])  # the closing line
    assert f'<div class="v">{100 * nmi:.1f}</div><div class="k">NMI %</div>' in text
    # the cluster-size table adds up to the images clustered
    assert f"<td>images clustered</td><td>{N_READABLE}</td>" in text
    # the automatic choices are listed with their reasons (the colour folder: RGB, spectral final labels)
    assert "<td>data.channels = 3</td><td>colour images: RGB</td>" in text
    assert "cluster.final = auto" in text
    for plot in ("tsne", "neighbors", "purity", "training"):
        with Image.open(env["out"] / "plots" / f"{plot}.png") as im:
            assert im.size[0] > 200 and im.size[1] > 100


@pytest.mark.slow  # the `env` fixture trains through `conr cluster`
def test_cluster_reuses_a_checkpoint(env):
    out2 = env["base"] / "out_reuse"
    rc = main(["cluster", str(env["folder"]), "--k", str(K), "--out", str(out2), "--no-plots",
               "--checkpoint", str(env["out"] / "run")])
    assert rc == 0
    first, second = _rows(env["out"] / "assignments.csv"), _rows(out2 / "assignments.csv")
    assert [r["path"] for r in first] == [r["path"] for r in second]
    assert [r["cluster"] for r in first] == [r["cluster"] for r in second]
    assert not (out2 / "run").exists()  # nothing was trained
    text = (out2 / "report.html").read_text()
    assert len(re.findall(r"<img ", text)) == K


@pytest.mark.slow  # the `env` fixture trains through `conr cluster`
def test_many_unreadable_files_are_listed_ten_then_counted(env, tmp_path, capsys):
    """Ten unreadable files are named and the rest counted, also where no other file is left out (the
    count had moved under the left-out files' warning)."""
    import shutil

    folder = shutil.copytree(env["folder"], tmp_path / "photos")
    (folder / "green" / "a" / "from_a_phone.heic").unlink()
    for i in range(12):
        (folder / "red" / f"torn_{i:02d}.jpg").write_bytes(b"\xff\xd8 cut short")
    rc = main(["cluster", str(folder), "--k", str(K), "--out", str(tmp_path / "out"), "--no-plots",
               "--checkpoint", str(env["out"] / "run")])
    out = capsys.readouterr().out
    assert rc == 0 and "warning: 13 unreadable image file(s) skipped:" in out
    assert "  ... and 3 more (all listed in the report)" in out and "left out" not in out


@pytest.mark.slow  # the `env` fixture trains through `conr cluster`
def test_cluster_refuses_to_overwrite_a_trained_run(env, capsys):
    assert main(["cluster", str(env["folder"]), "--k", str(K), "--out", str(env["out"])] + TINY) == 2
    assert "already holds a trained run" in capsys.readouterr().err


@pytest.mark.slow  # the `env` fixture trains through `conr cluster`
def test_plot_command_on_the_run_folder(env, capsys):
    plots = env["base"] / "plots"
    assert main(["plot", str(env["out"] / "run"), "--out", str(plots)]) == 0
    for name in ("tsne", "neighbors", "purity", "training"):
        assert (plots / f"{name}.png").stat().st_size > 1000
    # a conr cluster output folder works too (its run/ is found), default output RUN/plots
    assert main(["plot", str(env["out"]), "--only", "training"]) == 0
    assert (env["out"] / "run" / "plots" / "training.png").exists()
    assert main(["plot", str(env["out"]), "--only", "nope"]) == 2
    assert "unknown plot" in capsys.readouterr().err


@pytest.mark.slow  # the `env` fixture trains through `conr cluster`
def test_bad_image_fail_flag_stops_before_training(env, capsys):
    out = env["base"] / "out_fail"
    rc = main(["cluster", str(env["folder"]), "--k", str(K), "--out", str(out), "--on-bad-image", "fail"] + TINY)
    assert rc == 2
    err = capsys.readouterr().err
    assert "1 unreadable image file(s)" in err and "broken.jpg" in err
    assert not (out / "run" / "checkpoint.pt").exists()


@pytest.mark.slow  # the `env` fixture trains through `conr cluster`
def test_unwritable_output_is_reported_before_training(env, capsys):
    blocker = env["base"] / "a_file"
    blocker.write_text("x")
    rc = main(["cluster", str(env["folder"]), "--k", str(K), "--out", str(blocker / "out")] + TINY)
    assert rc == 2
    assert "cannot write to the output folder" in capsys.readouterr().err


@pytest.mark.slow  # the `env` fixture trains through `conr cluster`
def test_cluster_argument_errors(env, capsys):
    assert main(["cluster", str(env["folder"]), "--k", "1", "--out", str(env["base"] / "o1")]) == 2
    assert "K >= 2" in capsys.readouterr().err
    assert main(["cluster", str(env["base"] / "missing"), "--k", "3"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["cluster", str(env["folder"]), "--k", "500", "--out", str(env["base"] / "o2")] + TINY) == 2
    assert "exceeds the number of images" in capsys.readouterr().err


# --------------------------------------------------------------------------- estimator
def _array(n=48, size=16, seed=0):
    rng = np.random.default_rng(seed)
    x = np.zeros((n, size, size, 3), np.float32)
    y = np.arange(n) % 3
    for i in range(n):
        x[i] = np.asarray(_pattern(int(y[i]), size, size, rng), np.float32)
    return x.astype(np.uint8), y


@pytest.mark.slow  # trains the estimator
def test_estimator_fit_predict_transform():
    X, _ = _array()
    model = conr.CoNR(n_clusters=3, **TINY_EST)
    assert model.fit(X) is model
    assert model.labels_.shape == (48,) and set(model.labels_) <= {0, 1, 2}
    d = model.n_features_out_
    assert model.cluster_centers_.shape == (3, d)
    feats = model.transform(X)
    assert feats.shape == (48, d)
    assert np.allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(model.predict(X), model.labels_)
    assert model.boundary_ratios_.shape == model.distances_.shape == (48,)
    # the same images in other containers give the same features
    tensor_nchw = torch.from_numpy(X).permute(0, 3, 1, 2).float() / 255.0
    assert np.abs(model.transform(tensor_nchw) - feats).max() < 1e-4
    pil = [Image.fromarray(x) for x in X[:5]]
    np.testing.assert_array_equal(model.predict(pil), model.labels_[:5])
    # grey images work with a colour model
    grey = X[:4].mean(axis=3).astype(np.uint8)
    assert model.predict(grey).shape == (4,)
    # fit_predict trains anew and returns labels_; the same seed gives the same clustering
    again = conr.CoNR(n_clusters=3, **TINY_EST).fit_predict(X)
    np.testing.assert_array_equal(again, model.labels_)


def test_estimator_params_and_validation():
    from sklearn.base import clone

    model = conr.CoNR(n_clusters=4, epochs=2, overrides=["model.width=8"])
    params = model.get_params()
    assert params["n_clusters"] == 4 and params["epochs"] == 2 and params["overrides"] == ["model.width=8"]
    assert model.set_params(n_clusters=5) is model and model.n_clusters == 5
    assert clone(model).get_params() == model.get_params()
    X, _ = _array(12)
    with pytest.raises(ValueError, match="K >= 2"):
        conr.CoNR(n_clusters=1).fit(X)
    with pytest.raises(ValueError, match="exceeds the number of images"):
        conr.CoNR(n_clusters=20, **TINY_EST).fit(X)
    with pytest.raises(ValueError, match="'tpu' is not a device; use auto, cpu, cuda or cuda:N"):
        conr.CoNR(n_clusters=2, device="tpu").fit(X)          # was torch's RuntimeError, after the survey
    if not torch.cuda.is_available():                         # named before any work, not after the encoder's
        with pytest.raises(ValueError, match="'cuda' but no CUDA device is available"):
            conr.CoNR(n_clusters=2, device="cuda").fit(X)
    copies = np.repeat(X[:1], 12, axis=0)          # one image twelve times: no three groups to find
    copies[6:] = X[1]
    with pytest.raises(ValueError, match="only 2 distinct rows among the 12 images.*n_clusters=3"):
        conr.CoNR(n_clusters=3, **TINY_EST).fit(copies)
    with pytest.raises(ValueError, match="empty"):
        conr.CoNR(n_clusters=2).fit(np.zeros((0, 16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="empty"):
        conr.CoNR(n_clusters=2).fit([])
    with pytest.raises(ValueError, match="cannot cluster"):
        conr.CoNR(n_clusters=2).fit({"not": "images"})
    with pytest.raises(NotFittedError, match="not fitted"):
        conr.CoNR(n_clusters=2).predict(X)
    with pytest.raises(ValueError, match="on_bad_image"):
        conr.CoNR(n_clusters=2, on_bad_image="maybe").fit(X)


@pytest.mark.slow  # the `env` fixture trains through `conr cluster`
def test_estimator_inputs(env):
    # folder: nested, mixed sizes, corrupt file skipped and reported, labels from the class folders
    data = as_image_data(env["folder"], 16)
    assert len(data) == N_READABLE and data.has_labels and len(data.skipped) == 1
    assert data.images.shape[1:] == (3, 16, 16)
    # automatic size: the median shorter side of the folder's images (24..48 px -> 32), capped at 32 on a CPU
    assert as_image_data(env["folder"], device_type="cpu").image_size == 32
    # arrays in every layout, floats in [0, 1], tensors, ImageData, PIL lists of mixed sizes
    X, _ = _array(6, 16)
    for arr in (X, X.transpose(0, 3, 1, 2), X.astype(np.float32) / 255.0, torch.from_numpy(X)):
        d = as_image_data(arr, 16)
        assert d.images.dtype == torch.uint8 and d.images.shape == (6, 3, 16, 16)
        assert torch.equal(d.images, as_image_data(X, 16).images)
    assert as_image_data(X[..., 0], 16).images.shape == (6, 1, 16, 16)
    pil = [Image.new("RGB", (30, 20), "red"), Image.new("L", (16, 40), 128)]
    assert as_image_data(pil, 16).images.shape == (2, 3, 16, 16)
    own = ImageData(images=torch.zeros(4, 3, 8, 8, dtype=torch.uint8), labels=torch.arange(4))
    assert as_image_data(own, 16).images.shape == (4, 3, 16, 16)


@pytest.mark.slow  # trains the estimator (and the `env` fixture)
def test_estimator_on_a_folder_and_from_checkpoint(env):
    model = conr.CoNR(n_clusters=3, run_dir=str(env["base"] / "est_run"), encoder="none", **TINY_EST).fit(env["folder"])
    assert {"nmi", "acc", "ari"} <= model.metrics_.keys()
    assert len(model.skipped_) == 1 and model.skipped_[0][0].endswith("broken.jpg")
    assert model.config_.data.name == "imagefolder"  # so `conr plot` can reload the images
    loaded = conr.CoNR.from_checkpoint(env["base"] / "est_run")
    np.testing.assert_array_equal(loaded.predict(env["folder"]), model.labels_)
    assert np.abs(loaded.transform(env["folder"]) - model.features_).max() < 1e-5


@pytest.mark.slow
def test_a_fit_reads_the_users_settings_once(env, tmp_path, monkeypatch):
    """The config file is read once a fit; the run's record holds what the user set apart
    from what the rules chose (with their reasons), and config.yaml is written from it."""
    import conr.auto.resolve as resolve

    cfg_file = tmp_path / "mine.yaml"
    cfg_file.write_text("model:\n  width: 8\n  hidden_dim: 64\n  proj_dim: 32\ntrain:\n  threads: 1\n")
    reads = []
    read_yaml = resolve.read_yaml
    monkeypatch.setattr(resolve, "read_yaml", lambda path, *a: reads.append(path) or read_yaml(path, *a))
    model = conr.CoNR(n_clusters=K, image_size=16, epochs=3, batch_size=16, config=str(cfg_file), encoder="none",
                      run_dir=str(tmp_path / "run")).fit(env["folder"])
    assert len(reads) == 1
    record = model.run_record_
    assert record.user["model"] == {"width": 8, "hidden_dim": 64, "proj_dim": 32}
    assert record.user["train"]["epochs"] == 3 and record.budget is None
    assert "model.width" not in record.reasons and "stage2.k" in record.reasons  # the user's vs the rules'
    assert record.config.model.width == 8 and model.config_ is record.config
    header = (tmp_path / "run" / "config.yaml").read_text().split("\n")
    assert all(f"# {line}" in header for line in record.notes())
    with pytest.raises(Exception):
        record.config_is_frozen = True  # the record is immutable
