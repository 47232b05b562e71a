"""Which epochs are stage 2 (Method.stage2_start) in the trainer's records and the report of
`conr cluster`, for every method with a stage 2; tiny folder runs (small_cnn, 4 epochs)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from conr.cli import main
from conr.commands.cluster import _epochs_line
from conr.config import load_config
from conr.methods import build_method

from test_cluster_report import TINY, make_folder, run_cli

STAGE2 = ["train.epochs=4", "stage2.start_epoch=2", "stage2.t_end=3"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    base = tmp_path_factory.mktemp("stages")
    old = os.environ.get("CONR_CACHE")
    os.environ["CONR_CACHE"] = str(base / "cache")
    yield make_folder(base / "photos", per_class=8), base
    if old is None:
        os.environ.pop("CONR_CACHE", None)
    else:
        os.environ["CONR_CACHE"] = old


@pytest.mark.parametrize("method,start", [("conr", 801), ("simsiam_connr", 801), ("moco_connr", 801),
                                          ("byol", None), ("simsiam", None), ("moco", None), ("hadis", None)])
def test_stage2_start_of_each_method(method, start):
    cfg = load_config("cifar10", [f"method={method}", "model.backbone=small_cnn", "model.width=4"])
    m = build_method(cfg, 3)
    assert m.stage2_start() == start  # stage2.start_epoch = 800: stage 2 trains epochs 801..1000
    assert m.in_stage2(801) is (start is not None) and not m.in_stage2(800)


def test_epochs_line():
    assert _epochs_line(4, 4, 3) == "4 of 4 (stage 2 from epoch 3)"
    assert _epochs_line(2, 4, 3) == "2 of 4 (stopped in stage 1; stage 2 would begin at epoch 3)"
    assert _epochs_line(4, 4, None) == "4 of 4"


@pytest.mark.parametrize("method", ["simsiam_connr", "moco_connr"])
def test_report_and_records_name_stage2(folder, method):
    src, base = folder
    out = base / method
    rc, stdout = run_cli(["cluster", str(src), "--k", "3", "--out", str(out), "--no-plots",
                          f"method={method}"] + TINY + STAGE2)
    assert rc == 0, stdout
    records = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in records] == [1, 1, 2, 2]
    html = (out / "report.html").read_text()
    assert "4 of 4 (stage 2 from epoch 3)" in html
    assert (out / "run" / "stage1.pt").exists()  # the last stage-1 epoch's checkpoint, as CoNR's


def test_resume_at_the_end_of_stage1_drops_a_provisional_k_clustering(tmp_path: Path):
    """A run that estimated K at the end of stage 1 (clustered there with a provisional K) and
    was killed before clustering again resumes with the chosen K: the checkpoint's clustering
    of another K is not used for stage 2 (boundary filter) nor reported."""
    from conr.train import Trainer

    over = ["data.subset=300", "model.width=8", "model.hidden_dim=64", "model.proj_dim=32",
            "train.batch_size=100", "train.epochs=3", "stage2.start_epoch=2", "stage2.t_end=3",
            "cluster.eval_every=1", "cluster.n_init=1", "run.progress=false", "run.tensorboard=false",
            "train.warmup_epochs=1", f"run.out_dir={tmp_path}", "run.name=r"]
    first = Trainer(load_config("digits", over + ["cluster.n_clusters=10"]), log=lambda *a: None)
    first.fit(until_epoch=2)  # end of stage 1, clustered with the provisional K = 10
    assert first.centers.shape[0] == 10 and first.cluster_epoch == 2
    again = Trainer(load_config("digits", over + ["cluster.n_clusters=4"]), run_dir=tmp_path / "r", resume=True,
                    log=lambda *a: None)
    assert again.epoch == 2 and again.cluster_epoch == -1  # stale: K differs
    seen = []
    step = again.cluster_step
    again.cluster_step = lambda: (seen.append(again.epoch), step())[1]
    result = again.fit()
    assert seen[0] == 2  # clustered with K = 4 before the first stage-2 epoch
    assert result.centers.shape[0] == 4 and int(result.labels.max()) <= 3
