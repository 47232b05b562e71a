"""Dataset loaders against small synthetic files written in each release's exact
on-disk format (CIFAR pickles, STL-10 binaries, IDX, Tiny-ImageNet and ImageNet
trees, npz/npy), plus the real CIFAR-10 JPEG copy when it is on disk."""
from __future__ import annotations

import gzip
import inspect
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conr.data import DATASETS, load_dataset
from conr.data.cifar import CIFAR100_COARSE_OF_FINE, CIFAR100_FINE_CLASSES, CIFAR100_COARSE_CLASSES
from conr.data.imagenet import read_class_list
from conr.data.mnist import read_idx

REAL_CIFAR10_JPEG = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10-jpeg"
NEW_LOADERS = ["cifar10", "cifar100", "cifar20", "stl10", "imagenet10", "imagenet_dogs", "tiny_imagenet",
               "mnist", "fashion_mnist", "numpy"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Decoded-image caches go to the test's own folder, never the user's."""
    monkeypatch.setenv("CONR_CACHE", str(tmp_path / "cache"))


def load(name, root, split=None, image_size=32, download=False, on_bad_image="skip"):
    """Call a loader the way build_data does: exactly the five common keywords."""
    kwargs = dict(root=str(root), image_size=image_size, download=download, on_bad_image=on_bad_image)
    kwargs["split"] = split if split is not None else inspect.signature(DATASETS[name]).parameters["split"].default
    return load_dataset(name, **kwargs)


def test_every_loader_takes_the_common_keywords():
    for name in NEW_LOADERS:
        params = inspect.signature(DATASETS[name]).parameters
        for key in ("root", "split", "image_size", "download", "on_bad_image"):
            assert key in params, (name, key)


# --------------------------------------------------------------------------- CIFAR
def _pickle(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)  # the release's files are protocol-2 pickles with bytes keys


def _known_image() -> np.ndarray:
    """3 x 32 x 32 with a distinct, orientation-revealing pattern."""
    img = np.zeros((3, 32, 32), np.uint8)
    img[0, 0, 5] = 255      # red at row 0, column 5
    img[1, 7, 0] = 128      # green at row 7, column 0
    img[2, 31, 30] = 77     # blue near the bottom-right
    img[:, 10:12, 20:26] = 200
    return img


def write_cifar10(root: Path, per_batch=3, n_test=4, seed=0) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    all_labels = []
    for i in range(1, 6):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        if i == 1:
            data[0] = _known_image().reshape(-1)     # 1024 R, 1024 G, 1024 B, each row-major
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        all_labels += labels
        _pickle(d / f"data_batch_{i}", {b"batch_label": b"training batch", b"labels": labels, b"data": data,
                                        b"filenames": [b"x.png"] * per_batch})
    test_labels = [int(v) for v in rng.integers(0, 10, n_test)]
    _pickle(d / "test_batch", {b"batch_label": b"testing batch", b"labels": test_labels,
                               b"data": rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)})
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    _pickle(d / "batches.meta", {b"label_names": names, b"num_vis": 3072, b"num_cases_per_batch": per_batch})
    return _known_image(), all_labels + test_labels


def test_cifar10_pickles(tmp_path):
    img, labels = write_cifar10(tmp_path)
    data = load("cifar10", tmp_path)
    assert len(data) == 5 * 3 + 4 and data.images.shape == (19, 3, 32, 32) and data.images.dtype == torch.uint8
    assert torch.equal(data.images[0], torch.from_numpy(img))
    assert data.labels.tolist() == labels
    assert data.classes[0] == "airplane" and len(data.classes) == 10
    assert data.name == "cifar10" and data.normalization == "cifar10"
    assert len(load("cifar10", tmp_path, "train")) == 15
    assert len(load("cifar10", tmp_path / "cifar-10-batches-py", "test")) == 4   # root may be the folder itself
    small = load("cifar10", tmp_path, "train", image_size=16)
    assert small.images.shape == (15, 3, 16, 16)


def test_cifar10_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py.*data\.download=true"):
        load("cifar10", tmp_path)
    with pytest.raises(ValueError, match=r"valid splits: train\+test, train, test"):
        load("cifar10", tmp_path, "validation")
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match=r"data_batch_3"):
        load("cifar10", tmp_path, "train")
    assert len(load("cifar10", tmp_path, "test")) == 4


def test_cifar_pickle_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    _pickle(tmp_path / "cifar-10-batches-py" / "data_batch_1", {b"data": Evil()})
    with pytest.raises(ValueError, match="refusing to load"):
        load("cifar10", tmp_path, "train")


def test_cifar10_download_uses_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    calls = []

    class FakeCIFAR10:
        def __init__(self, root, train=True, download=False, **_):
            calls.append((root, download))
            write_cifar10(Path(root))

    monkeypatch.setattr(tvd, "CIFAR10", FakeCIFAR10)
    data = load("cifar10", tmp_path / "new", download=True)
    assert calls == [(str(tmp_path / "new"), True)] and len(data) == 19


def test_cifar10_imagefolder_tree(tmp_path):
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    for part, n in (("train", 2), ("test", 1)):
        for k, c in enumerate(classes):
            (tmp_path / part / c).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (32, 32), (k * 25, 0, 0)).save(tmp_path / part / c / f"{i}.png")
    data = load("cifar10", tmp_path)
    assert len(data) == 30 and data.classes == classes and data.name == "cifar10"
    assert data.normalization == "cifar10"
    assert torch.bincount(data.labels).tolist() == [3] * 10
    test = load("cifar10", tmp_path, "test")
    assert len(test) == 10 and sorted(test.labels.tolist()) == list(range(10))
    assert int(test.images[test.labels.tolist().index(4), 0, 5, 5]) == 100


# The superclass membership as the CIFAR web page lists it (names as in the release).
SUPERCLASS_MEMBERS = {
    "aquatic_mammals": ["beaver", "dolphin", "otter", "seal", "whale"],
    "fish": ["aquarium_fish", "flatfish", "ray", "shark", "trout"],
    "flowers": ["orchid", "poppy", "rose", "sunflower", "tulip"],
    "food_containers": ["bottle", "bowl", "can", "cup", "plate"],
    "fruit_and_vegetables": ["apple", "mushroom", "orange", "pear", "sweet_pepper"],
    "household_electrical_devices": ["clock", "keyboard", "lamp", "telephone", "television"],
    "household_furniture": ["bed", "chair", "couch", "table", "wardrobe"],
    "insects": ["bee", "beetle", "butterfly", "caterpillar", "cockroach"],
    "large_carnivores": ["bear", "leopard", "lion", "tiger", "wolf"],
    "large_man-made_outdoor_things": ["bridge", "castle", "house", "road", "skyscraper"],
    "large_natural_outdoor_scenes": ["cloud", "forest", "mountain", "plain", "sea"],
    "large_omnivores_and_herbivores": ["camel", "cattle", "chimpanzee", "elephant", "kangaroo"],
    "medium_mammals": ["fox", "porcupine", "possum", "raccoon", "skunk"],
    "non-insect_invertebrates": ["crab", "lobster", "snail", "spider", "worm"],
    "people": ["baby", "boy", "girl", "man", "woman"],
    "reptiles": ["crocodile", "dinosaur", "lizard", "snake", "turtle"],
    "small_mammals": ["hamster", "mouse", "rabbit", "shrew", "squirrel"],
    "trees": ["maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"],
    "vehicles_1": ["bicycle", "bus", "motorcycle", "pickup_truck", "train"],
    "vehicles_2": ["lawn_mower", "rocket", "streetcar", "tank", "tractor"],
}


def test_cifar100_superclass_table_matches_the_official_grouping():
    assert len(CIFAR100_COARSE_OF_FINE) == 100 and len(CIFAR100_FINE_CLASSES) == 100
    assert list(SUPERCLASS_MEMBERS) == CIFAR100_COARSE_CLASSES
    for coarse, members in enumerate(SUPERCLASS_MEMBERS.values()):
        got = sorted(CIFAR100_FINE_CLASSES[f] for f in range(100) if CIFAR100_COARSE_OF_FINE[f] == coarse)
        assert got == members, CIFAR100_COARSE_CLASSES[coarse]


def write_cifar100(root: Path, n_train=8, n_test=5, seed=1):
    rng = np.random.default_rng(seed)
    d = root / "cifar-100-python"
    table = np.array(CIFAR100_COARSE_OF_FINE)
    for fname, n in (("train", n_train), ("test", n_test)):
        fine = rng.integers(0, 100, n)
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        if fname == "train":
            data[0] = _known_image().reshape(-1)
        _pickle(d / fname, {b"filenames": [b"a.png"] * n, b"batch_label": fname.encode(),
                            b"fine_labels": [int(v) for v in fine],
                            b"coarse_labels": [int(v) for v in table[fine]], b"data": data})
    _pickle(d / "meta", {b"fine_label_names": [n.encode() for n in CIFAR100_FINE_CLASSES],
                         b"coarse_label_names": [n.encode() for n in CIFAR100_COARSE_CLASSES]})


def test_cifar100_and_cifar20(tmp_path):
    write_cifar100(tmp_path)
    fine = load("cifar100", tmp_path)
    coarse = load("cifar20", tmp_path)
    assert len(fine) == len(coarse) == 13 and fine.images.shape == (13, 3, 32, 32)
    assert torch.equal(fine.images, coarse.images)
    assert torch.equal(fine.images[0], torch.from_numpy(_known_image()))
    table = torch.tensor(CIFAR100_COARSE_OF_FINE)
    assert torch.equal(coarse.labels, table[fine.labels])          # the file's coarse labels == table[fine]
    assert fine.classes == CIFAR100_FINE_CLASSES and coarse.classes == CIFAR100_COARSE_CLASSES
    assert fine.normalization == coarse.normalization == "cifar100"
    assert (fine.name, coarse.name) == ("cifar100", "cifar20")
    assert len(load("cifar20", tmp_path, "test")) == 5 and len(load("cifar100", tmp_path, "train")) == 8
    with pytest.raises(ValueError, match="valid splits"):
        load("cifar20", tmp_path, "train+train")
    (tmp_path / "cifar-100-python" / "test").unlink()
    with pytest.raises(FileNotFoundError, match=r"cifar-100-python.test"):
        load("cifar20", tmp_path)


def test_cifar100_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cifar-100-python.*data\.download=true"):
        load("cifar20", tmp_path)


# --------------------------------------------------------------------------- STL-10
def _stl_write(path: Path, images_hwc_order: np.ndarray) -> None:
    """uint8 [N, 3, 96, 96] (row, column) -> the release's column-major bytes."""
    path.write_bytes(np.ascontiguousarray(images_hwc_order.transpose(0, 1, 3, 2)).tobytes())


def write_stl10(root: Path, seed=2):
    rng = np.random.default_rng(seed)
    d = root / "stl10_binary"
    d.mkdir(parents=True)
    train = rng.integers(0, 60, (2, 3, 96, 96), dtype=np.uint8)
    train[0, :, :10, :20] = 255                     # bright top-left block, 10 rows x 20 columns
    _stl_write(d / "train_X.bin", train)
    np.array([1, 10], np.uint8).tofile(d / "train_y.bin")
    _stl_write(d / "test_X.bin", rng.integers(0, 256, (3, 3, 96, 96), dtype=np.uint8))
    np.array([3, 5, 7], np.uint8).tofile(d / "test_y.bin")
    _stl_write(d / "unlabeled_X.bin", rng.integers(0, 256, (2, 3, 96, 96), dtype=np.uint8))
    (d / "class_names.txt").write_text("\n".join(
        ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]) + "\n")
    return train


def test_stl10(tmp_path):
    train = write_stl10(tmp_path)
    data = load("stl10", tmp_path, image_size=96)
    assert data.images.shape == (5, 3, 96, 96) and data.images.dtype == torch.uint8
    assert torch.equal(data.images[0], torch.from_numpy(train[0]))    # orientation: rows are rows
    assert data.images[0, :, :10, :20].min() == 255 and data.images[0, :, 10:, 20:].max() < 60
    assert data.labels.tolist() == [0, 9, 2, 4, 6]                      # 1..10 -> 0..9
    assert data.classes[2] == "car" and data.name == "stl10" and data.normalization == "imagenet"
    small = load("stl10", tmp_path, "train", image_size=48)
    assert small.images.shape == (2, 3, 48, 48)
    assert small.images[0, :, :4, :9].min() > 240 and small.images[0, :, 6:, 11:].max() < 80
    assert len(load("stl10", tmp_path, "test", image_size=96)) == 3
    unl = load("stl10", tmp_path, "unlabeled", image_size=96)
    assert len(unl) == 2 and unl.labels.tolist() == [-1, -1]
    both = load("stl10", tmp_path, "train+unlabeled", image_size=96)
    assert both.labels.tolist() == [0, 9, -1, -1]


def test_stl10_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"stl10_binary.*data\.download=true"):
        load("stl10", tmp_path)
    write_stl10(tmp_path)
    with pytest.raises(ValueError, match="valid splits: train\\+test, train, test, unlabeled"):
        load("stl10", tmp_path, "val")
    (tmp_path / "stl10_binary" / "test_y.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"test_y\.bin"):
        load("stl10", tmp_path)
    with open(tmp_path / "stl10_binary" / "train_X.bin", "ab") as fh:
        fh.write(b"\x00" * 7)
    with pytest.raises(ValueError, match="truncated"):
        load("stl10", tmp_path, "train")


# --------------------------------------------------------------------------- MNIST
def idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    return struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(">u1").tobytes()


def write_mnist(folder: Path, gz=False, seed=3):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, n in (("train", 5), ("t10k", 3)):
        x = rng.integers(0, 100, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        if prefix == "train":
            x[0, 3, 20] = 255          # one bright pixel at row 3, column 20
        for name, arr, magic in ((f"{prefix}-images-idx3-ubyte", x, 0x803), (f"{prefix}-labels-idx1-ubyte", y, 0x801)):
            blob = idx_bytes(arr, magic)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(blob))
            else:
                (folder / name).write_bytes(blob)
        out[prefix] = (x, y)
    return out


def test_mnist_plain_files(tmp_path):
    arrays = write_mnist(tmp_path)
    data = load("mnist", tmp_path, image_size=28)
    assert data.images.shape == (8, 1, 28, 28) and data.images.dtype == torch.uint8
    assert torch.equal(data.images[:5, 0], torch.from_numpy(arrays["train"][0]))
    assert int(data.images[0, 0, 3, 20]) == 255
    y = np.concatenate([arrays["train"][1], arrays["t10k"][1]])
    assert data.labels.tolist() == y.tolist()
    assert data.classes == [str(i) for i in range(10)] and data.normalization == "auto"
    assert len(load("mnist", tmp_path, "test")) == 3
    assert load("mnist", tmp_path, "train", image_size=32).images.shape == (5, 1, 32, 32)


def test_fashion_mnist_gz_in_torchvision_layout(tmp_path):
    arrays = write_mnist(tmp_path / "FashionMNIST" / "raw", gz=True)
    data = load("fashion_mnist", tmp_path, "train", image_size=28)
    assert torch.equal(data.images[:, 0], torch.from_numpy(arrays["train"][0]))
    assert data.classes[0] == "T-shirt/top" and data.classes[9] == "Ankle boot"
    assert data.name == "fashion_mnist"
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte.*MNIST.raw.*data\.download=true"):
        load("mnist", tmp_path)                    # MNIST is looked for in MNIST/raw, not FashionMNIST/raw


def test_idx_validation(tmp_path):
    write_mnist(tmp_path)
    magic, arr = read_idx(tmp_path / "train-images-idx3-ubyte")
    assert magic == 0x803 and arr.shape == (5, 28, 28)
    bad = tmp_path / "bad"
    bad.mkdir()
    blob = (tmp_path / "train-images-idx3-ubyte").read_bytes()
    (bad / "x").write_bytes(b"\x01\x02" + blob[2:])
    with pytest.raises(ValueError, match="magic number"):
        read_idx(bad / "x")
    (bad / "y").write_bytes(blob[:-10])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(bad / "y")
    # labels and images swapped: the magic numbers catch it
    (tmp_path / "train-images-idx3-ubyte").write_bytes((tmp_path / "train-labels-idx1-ubyte").read_bytes())
    with pytest.raises(ValueError, match="0x00000801, expected 0x00000803"):
        load("mnist", tmp_path, "train")
    with pytest.raises(ValueError, match="valid splits"):
        load("mnist", tmp_path, "all")


# --------------------------------------------------------------------------- Tiny-ImageNet
TINY_WNIDS = ["n02", "n01", "n03"]           # deliberately unsorted in wnids.txt
TINY_COLORS = {"n01": (250, 0, 0), "n02": (0, 250, 0), "n03": (0, 0, 250)}


def write_tiny(root: Path):
    d = root / "tiny-imagenet-200"
    d.mkdir(parents=True)
    (d / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    (d / "words.txt").write_text("n01\tgoldfish, Carassius auratus\nn02\tsnail\nn03\tbus, autobus\nn99\tother\n")
    for w in TINY_WNIDS:
        (d / "train" / w / "images").mkdir(parents=True)
        (d / "train" / w / f"{w}_boxes.txt").write_text("")
        for i in range(2):
            Image.new("RGB", (64, 64), TINY_COLORS[w]).save(d / "train" / w / "images" / f"{w}_{i}.JPEG")
    (d / "val" / "images").mkdir(parents=True)
    val = ["n03", "n01", "n03", "n02"]
    lines = []
    for i, w in enumerate(val):
        Image.new("RGB", (64, 64), TINY_COLORS[w]).save(d / "val" / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
    (d / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return val


def _dominant(images: torch.Tensor) -> list[int]:
    return images.float().mean(dim=(2, 3)).argmax(dim=1).tolist()


def test_tiny_imagenet(tmp_path):
    val = write_tiny(tmp_path)
    data = load("tiny_imagenet", tmp_path, image_size=16)
    assert data.images.shape == (6, 3, 16, 16) and data.name == "tiny_imagenet"
    assert data.classes == ["goldfish", "snail", "bus"]                  # sorted wnids n01, n02, n03
    assert data.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert _dominant(data.images) == data.labels.tolist()                # red n01, green n02, blue n03
    assert data.normalization == "imagenet" and all("images" in p for p in data.paths)
    v = load("tiny_imagenet", tmp_path, "val", image_size=16)
    assert v.labels.tolist() == [{"n01": 0, "n02": 1, "n03": 2}[w] for w in val]
    assert _dominant(v.images) == v.labels.tolist()
    assert len(load("tiny_imagenet", tmp_path, "train+val", image_size=16)) == 10
    assert len(load("tiny_imagenet", tmp_path, "train+test", image_size=16)) == 6   # the paper's set


def test_tiny_imagenet_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"tiny-imagenet-200.wnids\.txt.*data\.download=true"):
        load("tiny_imagenet", tmp_path)
    write_tiny(tmp_path)
    with pytest.raises(ValueError, match="valid splits: train, val, train\\+val"):
        load("tiny_imagenet", tmp_path, "test")
    ann = tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt"
    ann.write_text(ann.read_text() + "val_9.JPEG\tn77\t0\t0\t1\t1\n")
    with pytest.raises(ValueError, match="n77 is not in wnids.txt"):
        load("tiny_imagenet", tmp_path, "val", image_size=16)
    import shutil
    shutil.rmtree(tmp_path / "tiny-imagenet-200" / "train" / "n03")
    with pytest.raises(FileNotFoundError, match=r"train.n03.images"):
        load("tiny_imagenet", tmp_path, image_size=16)


# --------------------------------------------------------------------------- ImageNet subsets
def _jpeg(path: Path, color) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), color).save(path, quality=95)


def test_imagenet_class_lists():
    ten, dogs = read_class_list("imagenet10"), read_class_list("imagenet_dogs")
    assert len(ten) == 10 and len(dogs) == 15
    for entries in (ten, dogs):
        wnids = [w for w, _ in entries]
        assert wnids == sorted(set(wnids)) and all(len(w) == 9 and w.startswith("n") for w in wnids)
    assert ten[0] == ("n02056570", "king penguin") and ("n07747607", "orange") in ten
    assert dogs[0] == ("n02085936", "Maltese dog") and dogs[-1] == ("n02112137", "chow")


def test_imagenet10_from_full_train_tree(tmp_path):
    entries = read_class_list("imagenet10")
    for k, (w, _) in enumerate(entries):
        for i in range(1 + (k == 0)):
            _jpeg(tmp_path / "train" / w / f"{w}_{i}.JPEG", (k * 25, 100, 0))
    _jpeg(tmp_path / "train" / "n01440764" / "n01440764_0.JPEG", (0, 0, 255))   # distractor (tench)
    _jpeg(tmp_path / "val" / entries[0][0] / "v.JPEG", (0, 0, 255))               # not read: training images only
    data = load("imagenet10", tmp_path, image_size=8)
    assert data.images.shape == (11, 3, 8, 8) and data.name == "imagenet10"
    assert data.labels.tolist() == [0, 0] + list(range(1, 10))
    assert data.classes[0] == "king penguin" and len(data.classes) == 10
    assert not any("n01440764" in p or "/val/" in p for p in data.paths)
    assert abs(int(data.images[3, 0, 4, 4]) - 50) <= 6                 # class 2's red level survives JPEG
    assert data.normalization == "imagenet"
    with pytest.raises(ValueError, match="valid splits: train"):
        load("imagenet10", tmp_path, "val", image_size=8)


def test_imagenet_missing_classes_are_named(tmp_path):
    entries = read_class_list("imagenet10")
    for w, _ in entries[:3]:
        _jpeg(tmp_path / "train" / w / f"{w}_0.JPEG", (10, 10, 10))
    _jpeg(tmp_path / "train" / "n01440764" / "a.JPEG", (10, 10, 10))
    with pytest.raises(FileNotFoundError) as err:
        load("imagenet10", tmp_path, image_size=8)
    msg = str(err.value)
    assert "7 of its 10 class folders are missing" in msg
    listed = msg.split("class folders are missing under")[1].split(";")[0]
    assert all(w in listed for w, _ in entries[3:]) and entries[0][0] not in listed
    assert "<root>/train/<wnid>/*.JPEG" in msg and "image-net.org" in msg
    # n02085936 (Maltese dog) is in both lists, so ImageNet-Dogs finds 1 of its 15 here
    with pytest.raises(FileNotFoundError, match="14 of its 15 class folders are missing"):
        load("imagenet_dogs", tmp_path, image_size=8)


def test_imagenet_dogs_prepared_folder(tmp_path):
    entries = read_class_list("imagenet_dogs")
    for k, (w, _) in enumerate(entries):
        _jpeg(tmp_path / w / f"{w}_0.JPEG", (k * 15, 0, 0))
    data = load("imagenet_dogs", tmp_path, image_size=8)
    assert len(data) == 15 and data.labels.tolist() == list(range(15))
    assert data.classes[5] == "golden retriever"


# --------------------------------------------------------------------------- numpy arrays
def test_numpy_npz_nhwc_with_labels(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "mine.npz", images=x, labels=np.array([5, 7, 5, 9]))
    data = load("numpy", tmp_path / "mine.npz", image_size=8)
    assert data.images.shape == (4, 3, 8, 8) and torch.equal(data.images, torch.from_numpy(x).permute(0, 3, 1, 2))
    assert data.labels.tolist() == [0, 1, 0, 2] and data.classes == ["5", "7", "9"]
    assert data.name == "mine" and data.normalization == "auto"
    np.savez(tmp_path / "named.npz", images=x, labels=np.array([1, 0, 1, 1]), classes=np.array(["cat", "dog"]))
    named = load("numpy", tmp_path / "named.npz", image_size=4)
    assert named.labels.tolist() == [1, 0, 1, 1] and named.classes == ["cat", "dog"]
    assert named.images.shape == (4, 3, 4, 4)


def test_numpy_npy_float_layouts(tmp_path):
    grey = np.zeros((3, 6, 6), np.float32)
    grey[0, 1, 2] = 1.0
    np.save(tmp_path / "grey.npy", grey)
    data = load("numpy", tmp_path / "grey.npy", image_size=6)
    assert data.images.shape == (3, 1, 6, 6) and int(data.images[0, 0, 1, 2]) == 255
    assert data.labels.tolist() == [-1, -1, -1] and not data.has_labels
    nchw = np.full((2, 3, 5, 5), 100.0)                    # float in [0, 255]
    np.save(tmp_path / "nchw.npy", nchw)
    assert int(load("numpy", tmp_path / "nchw.npy", image_size=5).images.max()) == 100


@pytest.mark.parametrize("arr, match", [
    (np.zeros((2, 4, 4, 2), np.uint8), "no channel axis"),
    (np.zeros((2, 3, 4, 4, 3), np.uint8), "5 dimensions"),
    (np.zeros((2, 3, 8, 3), np.uint8), "ambiguous"),
    (np.full((2, 8, 8), -1.0), "range"),
    (np.full((2, 8, 8), 300), "range"),
    (np.zeros((2, 8, 8), bool), "not an image type"),
])
def test_numpy_bad_arrays(tmp_path, arr, match):
    np.save(tmp_path / "x.npy", arr)
    with pytest.raises(ValueError, match=match):
        load("numpy", tmp_path / "x.npy")


def test_numpy_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="npz or .npy"):
        load("numpy", tmp_path / "missing.npz")
    np.savez(tmp_path / "k.npz", pictures=np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"no 'images' array \(keys: \['pictures'\]\)"):
        load("numpy", tmp_path / "k.npz")
    np.savez(tmp_path / "l.npz", images=np.zeros((2, 8, 8), np.uint8), labels=np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="expected 2 labels"):
        load("numpy", tmp_path / "l.npz")
    (tmp_path / "x.txt").write_text("1 2 3")
    with pytest.raises(ValueError, match=r"\.npz or \.npy file, not \.txt"):
        load("numpy", tmp_path / "x.txt")
    with pytest.raises(ValueError, match="valid splits: all, train\\+test"):
        load("numpy", tmp_path / "l.npz", "test")


# --------------------------------------------------------------------------- the real CIFAR-10 JPEG copy
@pytest.mark.slow  # decodes 10,000 JPEGs (where the copy is present)
def test_real_cifar10_jpeg_test_split():
    if not (REAL_CIFAR10_JPEG / "test").is_dir():
        pytest.skip(f"the CIFAR-10 JPEG copy is not at {REAL_CIFAR10_JPEG.resolve()} (see shared/data/README.md)")
    data = load("cifar10", REAL_CIFAR10_JPEG, "test", image_size=32)
    assert len(data) == 10_000 and data.images.shape == (10_000, 3, 32, 32)
    assert data.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert torch.bincount(data.labels, minlength=10).tolist() == [1000] * 10
    assert data.name == "cifar10" and data.normalization == "cifar10" and not data.skipped


def test_scan_images_follows_each_linked_folder_once(tmp_path):
    """A link back to a parent (a loop) or a second link to one folder is searched once: the loop
    had made 31 images into 1,271 (every `loop/loop/...` down to the system's path limit)."""
    import os

    from conr.data.folder import OUTPUT_MARKER, mark_output_folder, scan_images

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / cls / f"{i}.png")
    os.symlink(tmp_path, tmp_path / "a" / "up")            # a loop
    os.symlink(tmp_path / "b", tmp_path / "b-again")       # one folder under two names
    (tmp_path / ".hidden").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / ".hidden" / "x.png")
    mark_output_folder(tmp_path / "out")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "out" / "grid.png")
    found = [p.relative_to(tmp_path).as_posix() for p in scan_images(tmp_path)]
    assert found == ["a/0.png", "a/1.png", "b/0.png", "b/1.png"]
    assert (tmp_path / "out" / OUTPUT_MARKER).exists()


def test_photos_are_read_upright_by_their_exif_tag(tmp_path):
    """A phone stores a portrait photo sideways with an orientation tag; both readers (the pixels'
    and the encoder's) turn it as a viewer shows it. The reference is PIL's own transpose."""
    from conr.data.folder import decode_image
    from conr.encoders.extract import decode_for_encoder
    from conr.encoders.preprocess import Preprocess

    stored = np.zeros((24, 48, 3), np.uint8)
    stored[:, :16, 0] = 255                       # red on the left third, as stored
    exif = Image.Exif()
    exif[0x0112] = 6                              # orientation: turn 90 degrees clockwise to view
    Image.fromarray(stored).save(tmp_path / "tagged.jpg", exif=exif, quality=95)
    Image.fromarray(stored).save(tmp_path / "plain.jpg", quality=95)
    with Image.open(tmp_path / "tagged.jpg") as im:  # the reference: PIL's transpose of the tagged file
        viewed = np.asarray(im.transpose(Image.Transpose.ROTATE_270))   # [48, 24, 3], red third on top
    got = decode_image(tmp_path / "tagged.jpg", 24).transpose(1, 2, 0)  # shorter side 24, centre rows 12..36
    assert np.abs(got.astype(int) - viewed[12:36].astype(int)).mean() < 3
    assert got[:4, :, 0].mean() > 200 and got[-4:, :, 0].mean() < 60     # red on top, not on the left
    plain = decode_image(tmp_path / "plain.jpg", 24).transpose(1, 2, 0)
    assert plain[:, :4, 0].mean() > 200 and plain[:, -4:, 0].mean() < 60  # no tag: as stored
    image, _ = decode_for_encoder(tmp_path / "tagged.jpg", Preprocess(size=24, mean=(0.5,) * 3, std=(0.5,) * 3, crop_fraction=1.0))
    assert image[0, :4].mean() > 200 and image[0, -4:].mean() < 60


@pytest.mark.parametrize("kind, values, want", [
    ("16-bit", np.linspace(0, 65535, 32), np.linspace(0, 255, 32)),
    ("12-bit in 16", np.linspace(0, 4095, 32), np.linspace(0, 255, 32)),
    ("12-bit, dim", np.linspace(0, 3000, 32), np.linspace(0, 3000 * 255 / 4095, 32)),   # same scale as a bright one
    ("float in [0, 1]", np.linspace(0, 1, 32), np.linspace(0, 255, 32)),
    ("float, any range", np.linspace(-3, 5, 32), np.linspace(0, 255, 32)),
])
def test_deep_grey_images_keep_their_levels(tmp_path, kind, values, want):
    """A 16-bit scan read through PIL's own conversion was its zeros on white (every level over 255
    clipped); the reader scales it to 8 bits by its bit depth instead. Reference: numpy's scaling."""
    from conr.data.folder import decode_image
    from conr.encoders.extract import decode_for_encoder
    from conr.encoders.preprocess import Preprocess

    row = np.tile(values, (32, 1))
    if kind.startswith("float"):
        Image.fromarray(row.astype(np.float32)).save(tmp_path / "scan.tif")
        path = tmp_path / "scan.tif"
    else:
        Image.fromarray(row.astype(np.uint16)).save(tmp_path / "scan.png")
        path = tmp_path / "scan.png"
    got = decode_image(path, 32, channels=1)[0, 0].astype(int)
    assert np.abs(got - np.rint(want)).max() <= 1
    image, _ = decode_for_encoder(path, Preprocess(size=32, mean=(0.5,) * 3, std=(0.5,) * 3, crop_fraction=1.0))
    assert np.abs(image[:, 0].astype(int) - np.rint(want)[None]).max() <= 1


def test_transparent_pixels_read_as_white(tmp_path):
    """A transparent PNG shows white in a browser; converting it without its alpha showed the colours
    its transparent pixels happen to hold (here noise), in the pixels, the encoder's input and the
    grey-or-colour survey alike."""
    from conr.data.folder import decode_image
    from conr.data.survey import survey_files
    from conr.encoders.extract import decode_for_encoder
    from conr.encoders.preprocess import Preprocess

    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., :3] = np.random.default_rng(0).integers(0, 256, (16, 16, 3))
    rgba[4:12, 4:12] = [90, 90, 90, 255]          # an opaque grey square on a transparent ground
    Image.fromarray(rgba, "RGBA").save(tmp_path / "icon.png")
    got = decode_image(tmp_path / "icon.png", 16)
    assert (got[:, :4] == 255).all() and (got[:, 4:12, 4:12] == 90).all()
    image, _ = decode_for_encoder(tmp_path / "icon.png", Preprocess(size=16, mean=(0.5,) * 3, std=(0.5,) * 3,
                                                                    crop_fraction=1.0))
    assert (image[:, :4] == 255).all()
    assert survey_files([tmp_path / "icon.png"]).grey     # grey where it shows; the noise is hidden


def test_more_photo_formats_are_read_and_the_rest_are_named(tmp_path):
    """A web download's .jfif (a JPEG) and an .avif photo were passed over without a word; files no
    reader here opens (a phone's .heic without its plug-in, camera raw) are counted in the error."""
    from PIL import features

    from conr.data.folder import IMAGE_EXTENSIONS, decode_image, images_under, scan_images

    a = np.zeros((12, 12, 3), np.uint8)
    a[:, :6] = [200, 30, 30]
    Image.fromarray(a).save(tmp_path / "download.jfif", format="JPEG", quality=95)
    names = ["download.jfif"]
    if features.check("avif") and ".avif" in IMAGE_EXTENSIONS:
        Image.fromarray(a).save(tmp_path / "photo.avif", quality=95)
        names.append("photo.avif")
    found = scan_images(tmp_path)
    assert sorted(p.name for p in found) == sorted(names)
    for p in found:
        assert decode_image(p, 12)[0, :, :4].mean() > 150 and decode_image(p, 12)[0, :, -4:].mean() < 80
    phone = tmp_path / "phone"
    phone.mkdir()
    for name in ("a.heic", "b.HEIC", "c.dng", "notes.txt", ".hidden.heic"):
        (phone / name).write_bytes(b"\x00" * 8)
    if ".heic" in IMAGE_EXTENSIONS:
        pytest.skip("pillow-heif is installed here: .heic files are read")
    with pytest.raises(ValueError, match=r"it holds 2 \.heic, 1 \.dng files, which this installation does not "
                                         r"read: convert them to JPEG or PNG \(or pip install pillow-heif\)"):
        images_under(phone)


def test_in_memory_pil_images_are_read_as_files_are():
    """A list of PIL images goes through the same reading as a folder's files: a 16-bit scan keeps its
    levels, a transparent image is laid on white (it was converted by PIL alone)."""
    from conr.data.convert import as_image_data

    scan = Image.fromarray(np.tile(np.linspace(0, 65535, 16), (16, 1)).astype(np.uint16))
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., :3] = 37                                 # a colour hidden under full transparency
    data = as_image_data([scan, Image.fromarray(rgba, "RGBA")], image_size=16)
    levels = data.images[0, 0, 0].numpy().astype(int)
    assert np.abs(levels - np.rint(np.linspace(0, 255, 16))).max() <= 1
    assert (data.images[1] == 255).all()
