"""The paper's protocol: every shipped config and grid file, the sweep runner (CSV,
resumability), `conr eval` / `conr purity`, and init_from provenance and errors."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conr.cli import main
from conr.config import ConfigError, load_config, packaged_config_dir
from conr.ops.metrics import evaluate
from conr.sweep import load_sweep, run_sweep, shipped_grids
from conr.engine import CHECKPOINT_NAME, Trainer

QUIET = lambda *a, **k: None  # noqa: E731


# ----------------------------------------------------------------------------- configs

ALL_CONFIGS = sorted(p.stem for p in packaged_config_dir().glob("*.yaml"))


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_every_shipped_config_loads_and_validates(name):
    cfg = load_config(name)
    assert cfg.cluster.n_clusters >= 2 and cfg.train.epochs >= 1


# name: (dataset, split, size, backbone, K, (k, k1, k2))
TABLE1 = {
    "cifar10": ("cifar10", "train+test", 32, "resnet18_cifar", 10, (10, 10, 2)),
    "cifar20": ("cifar20", "train+test", 32, "resnet18_cifar", 20, (10, 10, 2)),
    "stl10": ("stl10", "train+test+unlabeled", 96, "resnet34_cifar", 10, (10, 10, 2)),
    "imagenet10": ("imagenet10", "train", 96, "resnet34_cifar", 10, (10, 10, 2)),
    "imagenet_dogs": ("imagenet_dogs", "train", 96, "resnet34_cifar", 15, (20, 30, 10)),
    "tiny_imagenet": ("tiny_imagenet", "train", 64, "resnet18_cifar", 200, (10, 10, 2)),
}


@pytest.mark.parametrize("name", sorted(TABLE1))
def test_benchmark_configs_official_and_paper_variants(name):
    data, split, size, backbone, k, nbh = TABLE1[name]
    code, paper = load_config(name), load_config(f"{name}_paper")
    for cfg in (code, paper):
        assert (cfg.method, cfg.data.name, cfg.data.split, cfg.cluster.n_clusters) == ("conr", data, split, k)
        assert (cfg.stage2.k, cfg.stage2.k1, cfg.stage2.k2) == nbh
        assert (cfg.train.epochs, cfg.stage2.start_epoch, cfg.stage2.fr0) == (1000, 800, 0.8)
        assert cfg.stage2.lr_factor == cfg.stage2.predictor_lr_factor == 0.1
    assert (code.data.image_size, code.model.backbone) == (size, backbone)
    # the official code: 4 x 128 gathered, relaxed by t0 + 50, code quirks, 1/world_size loss
    assert (code.train.batch_size, code.stage2.t_end, code.stage2.loss_scale) == (512, 850, 0.25)
    assert code.stage2.keep_rule == code.stage2.ratio_variant == "code"
    # the paper's text
    assert (paper.train.batch_size, paper.stage2.t_end, paper.stage2.loss_scale) == (256, 1000, 1.0)
    assert paper.stage2.keep_rule == paper.stage2.ratio_variant == "paper"
    if name == "imagenet_dogs":
        assert (paper.data.image_size, paper.model.backbone) == (224, "resnet34")
    else:
        assert (paper.data.image_size, paper.model.backbone) == (size, backbone)
    norm = {"cifar10": "cifar10", "cifar20": "cifar100"}.get(name, "imagenet")
    assert code.data.normalization == norm
    assert (code.augment.blur_p > 0) == (not name.startswith("cifar"))


@pytest.mark.parametrize("grid", [p.stem for p in shipped_grids()])
def test_every_sweep_grid_parses(grid):
    sweep = load_sweep(grid)
    if sweep.kind == "train":
        assert sweep.rows and all(r.config.train.epochs > sweep.warmup.until_epoch for r in sweep.rows)
    else:
        assert sweep.purity["checkpoints"]
    assert sweep.warmup is not None and sweep.warmup.config.method == "byol"
    assert sweep.warmup.until_epoch == sweep.warmup.config.stage2.start_epoch


def test_shipped_grids_content():
    t2 = load_sweep("table2")
    rows = {r.name: r.config.stage2 for r in t2.rows}
    assert {r.name: r.config.method for r in t2.rows}["byol"] == "byol"
    assert (rows["euclidean"].neighborhood, rows["euclidean"].boundary_filter) == ("euclidean", False)
    assert (rows["conaff_filter"].boundary_filter, rows["conaff_filter"].relax) == (True, False)
    assert (rows["conr"].neighborhood, rows["conr"].boundary_filter, rows["conr"].relax) == ("conaff", True, True)
    assert t2.warmup.until_epoch == 800 and t2.rows[0].config.model.backbone == "resnet18_cifar"
    assert sorted(r.config.stage2.fr0 for r in load_sweep("fig3a").rows) == [0.7, 0.8, 0.9, 1.0]
    f3b = load_sweep("fig3b")
    assert all(r.config.stage2.k2 <= r.config.stage2.k1 for r in f3b.rows)
    assert [name for name, _ in f3b.dropped] == ["k1=5,k2=10"]
    # every CPU grid shares one warm-up: the same folder and the same config
    cpu = [load_sweep(p) for p in shipped_grids() if p.stem.endswith("_cpu")]
    assert len({str(s.warmup.run_dir) for s in cpu}) == 1
    assert all(s.warmup.config == cpu[0].warmup.config for s in cpu)
    assert cpu[0].warmup.config.data.root.endswith("cifar10-jpeg") and cpu[0].warmup.config.data.split == "test"


def test_grid_errors(tmp_path: Path):
    g = tmp_path / "g.yaml"
    g.write_text("base: digits\nrows: {a: {stage2.kk: 1}}\n")
    with pytest.raises(ConfigError, match="row 'a'.*stage2.k"):
        load_sweep(g)
    g.write_text("base: digits\nrowz: {}\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_sweep(g)
    g.write_text("base: digits\nrows: {a: {}}\nplot: {type: heatmap, x: stage2.k1}\n")
    with pytest.raises(ConfigError, match="plot.y"):
        load_sweep(g)


# ----------------------------------------------------------------------------- sweep runner

TINY = {"data.subset": 300, "model.width": 8, "model.hidden_dim": 64, "model.proj_dim": 32,
        "train.batch_size": 100, "train.epochs": 3, "train.warmup_epochs": 1, "stage2.start_epoch": 1,
        "stage2.t_end": 3, "cluster.n_init": 1, "cluster.eval_every": 1, "run.progress": False,
        "run.tensorboard": False}


def _grid(tmp_path: Path, rows: str, extra: str = "") -> Path:
    g = tmp_path / "tiny.yaml"
    shared = "\n".join(f"  {k}: {json.dumps(v)}" for k, v in TINY.items())
    g.write_text(f"base: digits\nout: {tmp_path / 'out'}\noverrides:\n{shared}\n"
                 f"warmup:\n  overrides: {{method: byol}}\n{rows}\n{extra}")
    return g


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    grid = _grid(tmp, "rows:\n  byol: {method: byol}\n  conaff: {stage2.boundary_filter: false}\n")
    logs = []
    result = run_sweep(grid, log=logs.append)
    return tmp, grid, result, logs


@pytest.mark.slow  # the `tiny_sweep` fixture trains a 3-run sweep
def test_sweep_writes_csv_and_plot(tiny_sweep):
    tmp, grid, result, logs = tiny_sweep
    out = tmp / "out"
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["row"] for r in rows] == ["warmup", "byol", "conaff"]
    assert rows[0]["epochs"] == "1" and rows[0]["init_epoch"] == "0"
    for r in rows[1:]:
        assert (r["init_epoch"], r["epochs"]) == ("1", "3")
        for m in ("nmi", "acc", "ari"):
            assert float(r[f"best_{m}"]) >= float(r[m]) - 1e-9
        assert float(r["seconds"]) > 0
    assert rows[1]["overrides"] == "method=byol"
    assert rows[2]["overrides"] == "stage2.boundary_filter=false"
    # final scores are those of the row's last logged epoch
    last = [json.loads(x) for x in (out / "conaff" / "metrics.jsonl").read_text().splitlines()][-1]
    assert float(rows[2]["acc"]) == pytest.approx(last["acc"], abs=1e-4)
    per_epoch = list(csv.DictReader((out / "epochs.csv").open()))
    assert [(r["row"], r["epoch"]) for r in per_epoch] == [("warmup", "1"), ("byol", "2"), ("byol", "3"),
                                                           ("conaff", "2"), ("conaff", "3")]
    assert (out / "results.png").stat().st_size > 1000
    # every row started from the warm-up's checkpoint, and says so
    ev = json.loads((out / "byol" / "events.jsonl").read_text().splitlines()[0])
    assert ev["event"] == "init_from" and ev["epoch"] == 1 and ev["path"].endswith("warmup/checkpoint.pt")


@pytest.mark.slow  # the `tiny_sweep` fixture trains a 3-run sweep
@pytest.mark.parametrize("plot", [{"type": "line", "x": "stage2.fr0"}, {"type": "epochs", "metric": "nmi"},
                                  {"type": "heatmap", "x": "stage2.k1", "y": "stage2.k2"}])
def test_sweep_plot_types(tiny_sweep, tmp_path, plot):
    from conr.sweep import plot_sweep, sweep_results

    tmp, grid, _, _ = tiny_sweep
    sweep = load_sweep(grid)
    sweep.plot = plot
    records, histories = sweep_results(sweep)
    assert plot_sweep(sweep, records, histories, tmp_path / "p.png").stat().st_size > 1000


@pytest.mark.slow  # the `tiny_sweep` fixture trains a 3-run sweep
def test_sweep_is_resumable(tiny_sweep, monkeypatch):
    tmp, grid, _, _ = tiny_sweep
    out = tmp / "out"
    before = (out / "results.csv").read_text()
    calls = []
    orig = Trainer.fit
    monkeypatch.setattr(Trainer, "fit", lambda self, *a, **k: calls.append(self.run_dir) or orig(self, *a, **k))
    logs = []
    run_sweep(grid, log=logs.append)
    assert calls == [] and (out / "results.csv").read_text() == before
    assert any("reusing" in m for m in logs) and sum("skipped" in m for m in logs) == 2
    # a row stopped after its checkpoint (no result.json) resumes instead of starting over
    (out / "conaff" / "result.json").unlink()
    run_sweep(grid, log=logs.append)
    assert calls == [out / "conaff"]
    assert list(csv.DictReader((out / "results.csv").open()))[2]["row"] == "conaff"
    lines = (out / "conaff" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [2, 3]
    # a changed grid never silently reuses a finished row
    with pytest.raises(ConfigError, match="other settings"):
        run_sweep(grid, overrides=["stage2.k=5"], log=QUIET)


@pytest.mark.slow  # the `tiny_sweep` fixture trains a 3-run sweep
def test_sweep_cli_only_rows_and_dry_run(tiny_sweep, capsys):
    tmp, grid, _, _ = tiny_sweep
    assert main(["sweep", str(grid), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "--until-epoch 1" in text and "row conaff:" in text and "--init-from" in text
    assert main(["sweep", str(grid), "--rows", "byol"]) == 0
    assert "results.csv" in capsys.readouterr().out
    assert main(["sweep", str(grid), "--rows", "nope"]) == 2


@pytest.mark.slow  # the `tiny_sweep` fixture trains a 3-run sweep
def test_purity_sweep_and_command(tiny_sweep, tmp_path):
    tmp, _, _, _ = tiny_sweep
    grid = _grid(tmp, "kind: purity\npurity:\n  checkpoints: {warm: warmup}\n  ks: [1, 5, 20]\n")
    res = run_sweep(grid, log=QUIET)
    rows = list(csv.DictReader((tmp / "out" / "purity.csv").open()))
    assert [r["K"] for r in rows] == ["1", "5", "20"]
    assert {"euclidean", "conaff", "euclidean+filter", "conaff+filter"} <= set(rows[0])
    assert all(0 <= float(r["conaff"]) <= 1 for r in rows)
    assert (tmp / "out" / "purity.png").exists()
    assert main(["purity", str(tmp / "out" / "warmup"), "--ks", "1,5", "--out", str(tmp_path)]) == 0
    again = list(csv.DictReader((tmp_path / "purity.csv").open()))
    # the same features, batches and filter: the same numbers
    assert float(again[1]["conaff"]) == pytest.approx(res["results"]["warm"]["curves"]["conaff"][1], abs=1e-5)


# ----------------------------------------------------------------------------- eval

@pytest.mark.slow  # the `tiny_sweep` fixture trains a 3-run sweep
def test_eval_json_matches_metrics(tiny_sweep, tmp_path, capsys):
    tmp, _, _, _ = tiny_sweep
    run = tmp / "out" / "conaff"
    labels_file = tmp_path / "labels.npy"
    assert main(["eval", str(run), "--json", "--purity-ks", "1,5,10", "--labels", str(labels_file)]) == 0
    report = json.loads(capsys.readouterr().out)  # stdout is the JSON document only
    for key in ("nmi", "acc", "ari", "knn_acc", "knn", "purity", "confusion", "classes", "cluster_sizes",
                "epoch", "n_images", "n_clusters"):
        assert key in report
    assert report["epoch"] == 3 and report["n_images"] == 300
    assert report["knn"] == {"k": 20, "temperature": 0.07, "weighted": True, "leave_one_out": True}
    assert set(report["purity"]) >= {"ks", "euclidean", "conaff", "euclidean+filter", "conaff+filter"}
    pred = np.load(labels_file)
    trainer = Trainer.from_checkpoint(run, log=QUIET)
    expected = evaluate(trainer.data.labels, pred)
    for m in ("nmi", "acc", "ari"):
        assert report[m] == pytest.approx(expected[m], abs=1e-12)
    conf = np.array(report["confusion"])
    assert conf.sum() == 300 and np.trace(conf) == pytest.approx(report["acc"] * 300)
    # column j is cluster confusion_clusters[j]: its column sums to that cluster's size (K = classes here),
    # counted independently from the saved labels
    cols = report["confusion_clusters"]
    assert sorted(cols) == list(range(report["n_clusters"]))
    sizes = np.bincount(pred, minlength=report["n_clusters"])
    assert report["confusion_cluster_sizes"] == [int(sizes[c]) for c in cols] == conf.sum(axis=0).tolist()
    # the same k-means as the trainer's own last clustering of these weights
    last = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert report["acc"] == pytest.approx(last["acc"], abs=1e-4)


@pytest.mark.slow  # the `tiny_sweep` fixture trains a 3-run sweep
def test_eval_overrides_change_the_data(tiny_sweep, capsys):
    tmp, _, _, _ = tiny_sweep
    assert main(["eval", str(tmp / "out" / "byol"), "--json", "--data.subset=200", "--purity-ks", "1,5"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_images"] == 200 and report["overrides"] == ["data.subset=200"]
    assert main(["eval", str(tmp / "out" / "byol"), "data.subset=250", "--purity-ks=1"]) == 0
    text = capsys.readouterr().out
    assert "250 images" in text and "confusion matrix" in text
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("confusion matrix"))
    assert lines[head + 1].split()[:3] == ["class", "\\", "cluster"] and lines[head + 1].split()[3].startswith("c")
    assert lines[head + 2].split()[0] == "0"  # rows: the digit classes, labelled
    assert any(line.split()[:2] == ["cluster", "size"] for line in lines[head:])


# ----------------------------------------------------------------------------- init_from

def _tiny_cfg(tmp: Path, *extra: str):
    over = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in TINY.items()]
    return load_config("digits", over + [f"run.out_dir={tmp}"] + list(extra))


@pytest.mark.slow  # the `tiny_sweep` fixture trains a 3-run sweep
def test_init_from_provenance_is_logged_and_recorded(tiny_sweep, tmp_path):
    tmp, _, _, _ = tiny_sweep
    warm = tmp / "out" / "warmup"
    logs = []
    trainer = Trainer(_tiny_cfg(tmp_path, "run.name=s2", "stage2.k=5"), init_from=warm, log=logs.append)
    assert trainer.epoch == 1
    text = " ".join(map(str, logs))
    assert f"initialised from {warm / CHECKPOINT_NAME}" in text and "byol checkpoint at epoch 1" in text
    assert "method 'byol' -> 'conr'" in text and "stage2.k 10 -> 5" in text
    trainer.fit()
    events = [json.loads(x) for x in (tmp_path / "s2" / "events.jsonl").read_text().splitlines()]
    assert len(events) == 1
    ev = events[0]
    assert ev["event"] == "init_from" and ev["epoch"] == 1 and ev["method"] == "byol"
    assert ev["path"] == str((warm / CHECKPOINT_NAME).resolve())
    assert ev["config"]["method"] == "byol" and ev["config"]["train"]["epochs"] == 3
    assert ev["differences"]["method"] == ["byol", "conr"] and ev["data"]["n"] == 300
    hist = [json.loads(x) for x in (tmp_path / "s2" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in hist] == [2, 3]


@pytest.mark.slow  # the `tiny_sweep` fixture trains a 3-run sweep
@pytest.mark.parametrize("overrides, fragment", [
    (["model.backbone=resnet18_cifar", "model.width=null"], "model.backbone: the checkpoint has 'small_cnn'"),
    (["model.width=16"], "weight shapes differ"),
    (["model.hidden_dim=128"], "the checkpoint was trained with model.hidden_dim=64"),
    (["method=moco"], "do not share a network"),
    (["method=byol", "train.epochs=1"], "raise train.epochs"),
])
def test_init_from_incompatible_checkpoint_errors(tiny_sweep, tmp_path, overrides, fragment):
    tmp, _, _, _ = tiny_sweep
    with pytest.raises(ConfigError) as info:
        Trainer(_tiny_cfg(tmp_path, "run.name=x", *overrides), init_from=tmp / "out" / "warmup", log=QUIET)
    assert fragment in str(info.value) and "--init-from" in str(info.value)
    assert not (tmp_path / "x" / "metrics.jsonl").exists()


def test_train_until_epoch_cli_then_init_from(tmp_path, capsys):
    over = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in TINY.items()]
    assert main(["train", "--config", "digits", "--run-dir", str(tmp_path / "w"), "--until-epoch", "1",
                 "method=byol"] + over) == 0
    ck = torch.load(tmp_path / "w" / CHECKPOINT_NAME, weights_only=False)
    assert ck["epoch"] == 1 and ck["config"]["train"]["epochs"] == 3 and ck["pseudo_labels"] is not None
    assert main(["train", "--config", "digits", "--run-dir", str(tmp_path / "s"), "--init-from",
                 str(tmp_path / "w")] + over + ["model.width=4"]) == 2
    assert "cannot start this run" in capsys.readouterr().err
