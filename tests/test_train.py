"""End-to-end training on tiny budgets, the stage switch, resume and the input errors."""
import json
from pathlib import Path

import pytest
import torch

from conr.config import ConfigError, load_config
from conr.engine import CHECKPOINT_NAME, Trainer

TINY = ["model.width=8", "model.hidden_dim=64", "model.proj_dim=32", "train.batch_size=128",
        "train.epochs=3", "stage2.start_epoch=1", "stage2.t_end=3", "cluster.eval_every=1",
        "cluster.n_init=1", "run.progress=false", "run.tensorboard=false", "train.warmup_epochs=1"]


@pytest.mark.slow  # trains 3 epochs on digits
def test_digits_conr_run_writes_metrics_and_checkpoints(tmp_path: Path):
    cfg = load_config("digits", TINY + [f"run.out_dir={tmp_path}", "run.name=r"])
    result = Trainer(cfg).fit()
    run = tmp_path / "r"
    assert (run / CHECKPOINT_NAME).exists() and (run / "config.yaml").exists()
    assert (run / "stage1.pt").exists()  # written at t0 = 1
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    assert [r["stage"] for r in lines] == [1, 2, 2]
    assert lines[1]["keep_fraction"] == pytest.approx(0.9)  # fr0 0.8 relaxed halfway: t0 = 1, t_end = 3
    assert lines[2]["keep_fraction"] == pytest.approx(1.0)
    for rec in lines:
        assert 0.0 <= rec["nmi"] <= 1.0 and 0.0 <= rec["acc"] <= 1.0
    assert result.labels.shape == (1797,) and result.centers.shape == (10, 32)
    assert result.metrics["acc"] > 0.3  # far above the 0.1 of chance even after 3 tiny epochs
    assert "batch_purity" in lines[2] and "batch_kept" in lines[2]


@pytest.mark.slow  # trains 3 epochs on digits, then resumes
def test_resume_continues_from_last_epoch(tmp_path: Path):
    over = TINY + [f"run.out_dir={tmp_path}", "run.name=r"]
    Trainer(load_config("digits", over + ["train.epochs=3"])).fit()
    first = torch.load(tmp_path / "r" / CHECKPOINT_NAME, weights_only=False)
    assert first["epoch"] == 3
    trainer = Trainer(load_config("digits", over + ["train.epochs=4"]), run_dir=tmp_path / "r", resume=True)
    assert trainer.epoch == 3
    trainer.fit()
    lines = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3, 4]
    with pytest.raises(FileExistsError, match="--resume"):
        Trainer(load_config("digits", over))


@pytest.mark.slow  # trains 3 epochs on digits, twice
def test_init_from_starts_after_the_checkpoint(tmp_path: Path):
    over = TINY + [f"run.out_dir={tmp_path}"]
    Trainer(load_config("digits", over + ["method=byol", "train.epochs=2", "run.name=warm"])).fit()
    trainer = Trainer(load_config("digits", over + ["train.epochs=3", "stage2.start_epoch=2", "run.name=s2"]),
                      init_from=tmp_path / "warm" / CHECKPOINT_NAME, log=lambda *a: None)
    assert trainer.epoch == 2 and "epoch 2" in trainer.init_note
    trainer.fit()
    events = (tmp_path / "s2" / "events.jsonl").read_text()
    assert "init_from" in events


def test_stage2_self_neighbourhood_without_filter_equals_byol():
    """With k = 1 (self only) and no boundary filter, the group loss is BYOL's loss."""
    over = TINY + ["stage2.neighborhood=self", "stage2.boundary_filter=false", "train.symmetric=true"]
    trainer = Trainer(load_config("digits", over), write=False)
    x = trainer.images[:128]
    gen = torch.Generator().manual_seed(0)
    v1, v2 = trainer.augmenter(1)(x, gen), trainer.augmenter(1)(x, gen)
    trainer.method.train()
    ctx1 = trainer._context(1, 0, torch.arange(128), 1.0)   # stage 1: BYOL
    ctx2 = trainer._context(2, 0, torch.arange(128), 1.0)   # stage 2: group loss over {self}
    torch.manual_seed(0)
    byol = trainer.method.training_loss(v1, v2, ctx1).item()
    torch.manual_seed(0)
    group = trainer.method.training_loss(v1, v2, ctx2).item()
    assert group == pytest.approx(byol, abs=1e-5)


@pytest.mark.parametrize("override, error, fragment", [
    ("cluster.n_clusters=2000", ConfigError, "exceeds the number of images"),
    ("train.batch_size=4096", ConfigError, "exceeds the number of images"),
])
def test_data_dependent_errors(override, error, fragment):
    with pytest.raises(error, match=fragment):
        Trainer(load_config("digits", TINY + [override, "stage2.k=5"]), write=False)


def test_empty_and_missing_folders(tmp_path: Path):
    with pytest.raises(ValueError, match="no image files"):
        Trainer(load_config("digits", TINY + ["data.name=imagefolder", f"data.root={tmp_path}",
                                              "data.split=all"]), write=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Trainer(load_config("digits", TINY + ["data.name=imagefolder", f"data.root={tmp_path / 'nope'}",
                                              "data.split=all"]), write=False)


def test_unwritable_output_folder(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError, match="cannot write to the output folder"):
        Trainer(load_config("digits", TINY + [f"run.out_dir={blocker}", "run.name=r"]))
