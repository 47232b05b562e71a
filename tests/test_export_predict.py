"""Sorted output (`conr cluster --export`) and `conr predict` on a tiny folder: the files
land where assignments.csv says, and predict's columns are checked against a brute-force
recomputation from the model's features and centres."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import torch
import pytest

import conr
from conr.cli import main
from test_cluster_report import N_READABLE, TINY, make_folder, run_cli as _run

# every test here uses the module's `trained` fixture, which trains through `conr cluster`
pytestmark = pytest.mark.slow

HEADER = ["path", "cluster", "boundary_ratio", "distance_to_center", "boundary", "confidence", "true_label"]


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("export")
    old = os.environ.get("CONR_CACHE")
    os.environ["CONR_CACHE"] = "off"
    folder = make_folder(base / "photos")
    rc, out = _run(["cluster", str(folder), "--k", "3", "--out", str(base / "out"), "--export", str(base / "sorted"),
                    "--encoder", "none"] + TINY)
    assert rc == 0, out
    yield {"base": base, "folder": folder, "out": base / "out", "sorted": base / "sorted", "stdout": out}
    if old is None:
        os.environ.pop("CONR_CACHE", None)
    else:
        os.environ["CONR_CACHE"] = old


def test_export_puts_every_image_in_its_cluster_folder(trained):
    rows = _rows(trained["out"] / "assignments.csv")
    assert len(rows) == N_READABLE and list(rows[0]) == HEADER
    exported = sorted(p for p in trained["sorted"].rglob("*") if p.is_file() and not p.name.startswith("."))
    assert len(exported) == N_READABLE
    folder = trained["folder"]
    for r in rows:
        src = Path(r["path"])
        name = "__".join(src.relative_to(folder).parts)
        where = trained["sorted"] / f"cluster_{int(r['cluster']):02d}"
        if r["boundary"] == "1":
            where = where / "boundary"
        target = where / name
        assert target.is_file() and not target.is_symlink(), target
        assert target.read_bytes() == src.read_bytes()
    n_boundary = sum(r["boundary"] == "1" for r in rows)
    assert len(list(trained["sorted"].glob("cluster_*/boundary/*"))) == n_boundary >= 1
    assert f"{n_boundary} boundary samples" in trained["stdout"]


def test_confidence_column_is_one_minus_own_over_next_distance(trained):
    rows = _rows(trained["out"] / "assignments.csv")
    model = conr.CoNR.from_checkpoint(trained["out"] / "run")
    feats = model.transform(trained["folder"])  # the same files in the same (sorted) order as the CSV
    centers = model.cluster_centers_
    for i, r in enumerate(rows):
        d = [float(np.linalg.norm(feats[i] - c)) for c in centers]  # brute force, one centre at a time
        own = d[int(r["cluster"])]
        other = min(v for j, v in enumerate(d) if j != int(r["cluster"]))
        assert float(r["confidence"]) == pytest.approx(max(0.0, 1 - own / other), abs=2e-4)
        assert 0.0 <= float(r["confidence"]) <= 1.0


def test_export_symlink_mode_and_refuses_a_full_folder(trained, capsys):
    base = trained["base"]
    rc, _ = _run(["cluster", str(trained["folder"]), "--k", "3", "--out", str(base / "out_link"), "--checkpoint",
                  str(trained["out"] / "run"), "--export", str(base / "linked"), "--export-mode", "symlink",
                  "--no-plots"])
    assert rc == 0
    links = [p for p in (base / "linked").rglob("*") if p.is_symlink()]
    assert len(links) == N_READABLE
    assert all(p.resolve().is_file() and trained["folder"] in p.resolve().parents for p in links)
    # an export folder that already holds files is refused before any work
    rc = main(["cluster", str(trained["folder"]), "--k", "3", "--out", str(base / "out_again"), "--checkpoint",
               str(trained["out"] / "run"), "--export", str(base / "linked")])
    assert rc == 2 and "--export" in capsys.readouterr().err
    assert not (base / "out_again").exists()


def test_predict_assigns_new_images_without_training(trained):
    base = trained["base"]
    new = make_folder(base / "new", per_class=4, seed=7)
    run = trained["out"] / "run"
    before = (run / "checkpoint.pt").stat().st_mtime_ns, (run / "metrics.jsonl").read_text()
    csv_path = base / "pred.csv"
    rc, out = _run(["predict", str(trained["out"]), str(new), "--out", str(csv_path), "--export",
                    str(base / "pred_sorted")])  # OUT itself stands for OUT/run
    assert rc == 0, out
    assert ((run / "checkpoint.pt").stat().st_mtime_ns, (run / "metrics.jsonl").read_text()) == before
    rows = _rows(csv_path)
    assert list(rows[0]) == HEADER and len(rows) == 3 * 4 + 1
    # brute force, by the rule the run's partition records: the nearest centre by cosine, or the
    # cluster of the nearest training image (graph / manifold clusters), from the model's own features
    model = conr.CoNR.from_checkpoint(run)
    feats = model.transform(new)
    centers = model.cluster_centers_
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    partition = ckpt["partition"]
    for i, r in enumerate(rows):
        if partition["assign"] == "nearest_center":
            cos = [float(feats[i] @ c / np.linalg.norm(c)) for c in centers]
            expected = int(np.argmax(cos))
        else:
            ref = ckpt["final_features"].numpy()
            expected = int(partition["labels"][int(np.argmax(ref @ feats[i]))])
        assert int(r["cluster"]) == expected
        assert float(r["distance_to_center"]) == pytest.approx(
            float(np.linalg.norm(feats[i] - centers[int(r["cluster"])])), abs=2e-4)
    # the images of one class mostly share a cluster (the model separates these patterns)
    by_class: dict[str, list[int]] = {}
    for r in rows:
        by_class.setdefault(r["true_label"], []).append(int(r["cluster"]))
    assert sum(max(np.bincount(v)) for v in by_class.values()) >= 0.75 * len(rows)
    assert len([p for p in (base / "pred_sorted").rglob("*.*") if not p.name.startswith(".")]) == len(rows)


def test_predict_errors_name_the_argument(trained, capsys):
    assert main(["predict", str(trained["base"] / "nope"), str(trained["folder"])]) == 2
    assert "RUN" in capsys.readouterr().err
    assert main(["predict", str(trained["folder"]), str(trained["folder"])]) == 2
    assert "holds no checkpoint" in capsys.readouterr().err


def test_reused_model_with_k_auto_estimates_k_from_the_folder(trained):
    import re

    base = trained["base"]
    rc, out = _run(["cluster", str(trained["folder"]), "--k", "2..5", "--out", str(base / "auto"), "--checkpoint",
                    str(trained["out"] / "run"), "--no-plots"])
    assert rc == 0, out
    m = re.search(r"K = (\d) estimated \(silhouette over K = 2\.\.5\)", out)
    assert m, out
    k = int(m.group(1))
    clusters = {int(r["cluster"]) for r in _rows(base / "auto" / "assignments.csv")}
    assert clusters <= set(range(k)) and len(clusters) >= 2
    assert (base / "auto" / "plots" / "k_selection.png").stat().st_size > 1000  # shown even with --no-plots
    assert "Choosing the number of clusters" in (base / "auto" / "report.html").read_text()


def test_full_disk_while_writing_the_report_says_how_to_write_it_again(trained, monkeypatch, capsys):
    import errno

    import conr.outputs.report as report_mod

    real = report_mod.atomic_write_text

    def full(path, text):
        if Path(path).name == "report.html":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, text)

    monkeypatch.setattr(report_mod, "atomic_write_text", full)
    out = trained["base"] / "full_report"
    run = trained["out"] / "run"
    rc = main(["cluster", str(trained["folder"]), "--k", "3", "--out", str(out), "--checkpoint", str(run),
               "--no-plots"])
    err = capsys.readouterr().err
    assert rc == 2 and str(out / "report.html") in err and f"{run} is intact" in err
    assert f"--out {out} --checkpoint {run}" in err
