"""Config files, overrides and validation: every bad input names the key and the fix."""
from pathlib import Path

import pytest

from conr.config import ConfigError, load_config, packaged_config_dir


def test_defaults_and_override_types():
    cfg = load_config("cifar10", ["stage2.k=20", "train.lr=0.2", "stage2.crop_scale=[0.5, 1.0]",
                                  "train.weight_decay=1e-4"])
    assert cfg.stage2.k == 20 and cfg.train.lr == 0.2 and cfg.stage2.crop_scale == [0.5, 1.0]
    assert cfg.train.weight_decay == pytest.approx(1e-4)
    assert isinstance(cfg.train.lr, float)


@pytest.mark.parametrize("override, fragment", [
    ("stage2.kk=3", "did you mean 'stage2.k'"),
    ("trian.lr=0.1", "did you mean 'train'"),
    ("train.epochs=ten", "expects an integer"),
    ("train.symmetric=3", "expects true/false"),
    ("stage2.k1=1", "k1=1 < stage2.k2=2"),
    ("stage2.k=512", "smaller than train.batch_size"),
    ("cluster.n_clusters=1", "K >= 2"),
    ("stage2.neighborhood=cosine", "not one of"),
    ("method=nope", "known methods"),
    ("model.backbone=vgg", "unknown"),
    ("stage2.fr0=1.5", "[0, 1]"),
    ("cluster.input_geometry=unit", "cluster.input_geometry='unit' is not one of"),
    ("cluster.joint_graph=product", "cluster.joint_graph='product' is not one of"),
    ("augment.view_neighbors=0", "augment.view_neighbors=0 must be >= 1"),
    ("train.threads=fast", "train.threads='fast' must be a number of CPU threads >= 1, auto"),
    ("train.threads=0", "train.threads=0 must be a number of CPU threads >= 1, auto"),
    ("lr", "section.key=value"),
])
def test_bad_overrides_name_the_problem(override, fragment):
    with pytest.raises(ConfigError, match=None) as info:
        load_config("cifar10", [override])
    assert fragment in str(info.value)


def test_base_inheritance_and_missing_file(tmp_path: Path):
    child = tmp_path / "child.yaml"
    child.write_text("_base_: cifar10.yaml\ntrain:\n  epochs: 900\n")
    cfg = load_config(child)
    assert cfg.train.epochs == 900 and cfg.stage2.k1 == 10  # inherited
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_every_shipped_config_loads():
    names = sorted(p.stem for p in packaged_config_dir().glob("*.yaml"))
    assert "cifar10" in names and "digits" in names
    for name in names:
        load_config(name)


def test_conr_needs_a_stage2_epoch():
    with pytest.raises(ConfigError, match="no stage-2 epoch"):
        load_config("digits", ["train.epochs=10", "stage2.start_epoch=10"])
    load_config("digits", ["method=byol", "train.epochs=10", "stage2.start_epoch=10"])


@pytest.mark.parametrize("argv, overrides, extra", [
    (["train", "--config", "digits", "stage2.k=5", "--resume", "train.epochs=3"],
     ["stage2.k=5", "train.epochs=3"], {"config": "digits", "resume": True}),
    (["train", "stage2.k=5", "--config", "digits", "--train.epochs=3"],
     ["stage2.k=5", "train.epochs=3"], {"config": "digits", "resume": False}),
    (["cluster", "--k", "3", "photos", "train.epochs=2", "--out", "o", "--model.width=8"],
     ["train.epochs=2", "model.width=8"], {"path": "photos", "k": "3", "out": "o"}),
    (["eval", "runs/r", "--json"], [], {"checkpoint": "runs/r", "json": True}),
])
def test_commands_take_positionals_options_and_overrides_in_any_order(argv, overrides, extra):
    from conr.cli import build_parser

    args = build_parser().parse_args(argv)
    assert list(getattr(args, "overrides", None) or []) == overrides
    for key, value in extra.items():
        assert getattr(args, key) == value


def test_a_misspelt_option_is_still_an_error(capsys):
    from conr.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--config", "digits", "--resmue"])
    assert "--resmue" in capsys.readouterr().err
