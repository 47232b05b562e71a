"""benchmarks/heldout_photos.py: the held-back photo folders are the *last* files of each
training class, as links (checked on a hand-made training tree with a known answer)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("heldout_photos", ROOT / "benchmarks" / "heldout_photos.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_folders_take_the_last_files_of_each_class_as_links(tmp_path, monkeypatch):
    mod = _module()
    train = tmp_path / "train"
    for c in ("bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"):
        (train / c).mkdir(parents=True)
        for i in range(5):
            (train / c / f"{i:04d}.jpg").write_bytes(b"x")
    monkeypatch.setattr(mod, "FOLDERS", {"all2": (None, 2), "three3": (("cat", "dog", "ship"), 3)})
    made = mod.make(tmp_path / "out", train)
    assert made == {"all2": 16, "three3": 9}
    assert sorted(p.name for p in (tmp_path / "out" / "all2" / "truck").iterdir()) == ["0003.jpg", "0004.jpg"]
    kept = sorted((tmp_path / "out" / "three3" / "dog").iterdir())
    assert [p.name for p in kept] == ["0002.jpg", "0003.jpg", "0004.jpg"]
    assert all(p.is_symlink() and p.resolve() == (train / "dog" / p.name).resolve() for p in kept)
    assert sorted(p.name for p in (tmp_path / "out" / "three3").iterdir()) == ["cat", "dog", "ship"]
    assert mod.make(tmp_path / "out", train) == made   # a second call adds nothing


def test_a_missing_training_tree_names_the_dataset(tmp_path):
    with pytest.raises(SystemExit, match="cifar10-jpeg"):
        _module().make(tmp_path / "out", tmp_path / "nowhere")


def test_sparse_folders_take_every_nth_file_of_each_class(tmp_path, monkeypatch):
    mod = _module()
    for c in ("01", "02"):
        (tmp_path / "data" / "objects" / c).mkdir(parents=True)
        for i in range(15):
            (tmp_path / "data" / "objects" / c / f"obj{c}__{i:02d}.png").write_bytes(b"x")
    monkeypatch.setattr(mod, "SPARSE", {"objects5": ("objects", 7)})
    assert mod.make_sparse(tmp_path / "out", tmp_path / "data") == {"objects5": 6}
    kept = sorted((tmp_path / "out" / "objects5" / "02").iterdir())
    assert [p.name for p in kept] == ["obj02__00.png", "obj02__07.png", "obj02__14.png"]
    assert all(p.is_symlink() for p in kept)
    with pytest.raises(SystemExit, match="missing"):
        mod.make_sparse(tmp_path / "out2", tmp_path / "nowhere")


def test_folder_makes_only_what_its_source_holds(tmp_path, monkeypatch):
    """``folder`` makes a sparse folder from its open set without the CIFAR-10 tree (which is
    missing here), returns the same path once made, and names an unknown folder."""
    mod = _module()
    (tmp_path / "data" / "objects" / "01").mkdir(parents=True)
    for i in range(4):
        (tmp_path / "data" / "objects" / "01" / f"{i}.png").write_bytes(b"x")
    monkeypatch.setattr(mod, "SPARSE", {"objects2": ("objects", 2)})
    got = mod.folder("objects2", tmp_path / "out", tmp_path / "data")
    assert got == tmp_path / "out" / "objects2" and sorted(p.name for p in (got / "01").iterdir()) == ["0.png", "2.png"]
    assert mod.folder("objects2", tmp_path / "out", tmp_path / "nowhere") == got   # made already: nothing read
    with pytest.raises(SystemExit, match="cifar10-jpeg"):
        mod.folder("photos10x200", tmp_path / "out", tmp_path / "data")
    with pytest.raises(ValueError, match="unknown held-back folder 'photos'"):
        mod.folder("photos", tmp_path / "out", tmp_path / "data")
