"""Folders of image files: an ImageFolder tree (one sub-folder per class) or any
nested/flat folder of a user's photos, decoded once into memory.

Images of any size and mode are converted to RGB (or to grey with channels=1), resized so the shorter side is
``image_size`` and centre-cropped square. Unreadable files are reported and
skipped, or fatal with ``on_bad_image="fail"``. Decoded folders are cached
(keyed by the files' paths, sizes and modification times) so a second run starts
at once; set CONR_CACHE=off to disable, or a path to move the cache.
"""
from __future__ import annotations

import hashlib
import io
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ..errors import BadImageError
from ..io import atomic_write_bytes
from ..options import option
from .base import ImageData, register_dataset

__all__ = ["IMAGE_EXTENSIONS", "scan_images", "images_under", "other_images", "unread_note", "decode_image", "upright", "eight_bit", "on_white", "pil_to_array", "load_image_folder", "index_image_folder",
           "BadImageError"]

# the raster formats read (where this Pillow reads them: AVIF since Pillow 11.3, HEIC / HEIF where the
# pillow-heif plug-in is installed); a web download's .jfif is a JPEG, a camera's .mpo one too
_RASTER = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".avif",
           ".heic", ".heif", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".mpo", ".qoi")
# image files no reader here opens (camera raw, vector drawings, layered documents): named when met
OTHER_IMAGES = (".heic", ".heif", ".avif", ".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf",
                ".svg", ".psd", ".xcf", ".jxl")


def _readable_extensions() -> tuple[str, ...]:
    from PIL import Image

    try:  # HEIC / HEIF (a phone's photos) where the plug-in is there
        import pillow_heif

        pillow_heif.register_heif_opener()
    except Exception:  # not installed, or a version without the opener: .heic files are named, not read
        pass
    known = Image.registered_extensions()
    return tuple(e for e in _RASTER if e in known)


IMAGE_EXTENSIONS = _readable_extensions()


def check_on_bad_image(on_bad_image: str) -> None:
    if on_bad_image not in ("skip", "fail"):
        raise ValueError(f"on_bad_image={on_bad_image!r}: choose skip or fail")


OUTPUT_MARKER = ".conr-output"  # in every folder conr cluster writes: never read back as input images


def mark_output_folder(folder: str | Path) -> None:
    """Leave the marker that makes :func:`scan_images` skip ``folder`` (an output
    folder inside an input folder: its grids, plots and exported copies)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / OUTPUT_MARKER
    if not marker.exists():
        marker.write_text("written by conr: image searches skip this folder\n", encoding="utf-8")


def _files_seen(root: Path):
    """(folder, its file names) for every folder the image search reads under ``root``: hidden
    entries and conr output folders (:func:`mark_output_folder`) left out, each linked folder
    searched once (a link back to a folder already searched, a loop or a second link to one
    folder, is not searched again)."""
    searched = {os.path.realpath(root)}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        if OUTPUT_MARKER in filenames:
            dirnames[:] = []
            continue
        kept = []
        for d in sorted(d for d in dirnames if not d.startswith(".")):
            real = os.path.realpath(os.path.join(dirpath, d))
            if real not in searched:
                searched.add(real)
                kept.append(d)
        dirnames[:] = kept
        yield dirpath, sorted(f for f in filenames if not f.startswith("."))


def scan_images(root: str | Path) -> list[Path]:
    """All image files under ``root`` (recursive, as :func:`_files_seen` walks it), sorted."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"image folder {root} does not exist; check {option('data.root')}")
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is a file, not a folder of images")
    return [Path(dirpath) / f for dirpath, files in _files_seen(root) for f in files
            if f.lower().endswith(IMAGE_EXTENSIONS)]


def images_under(root: str | Path) -> list[Path]:
    """:func:`scan_images`, refusing a folder that holds none (with what it looked for)."""
    files = scan_images(root)
    if not files:
        others = other_images(root)
        found = f"; it holds {unread_note(others)}" if others else ""
        raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found under {root}{found}; "
                         f"point {option('data.root')} at a folder that contains images")
    return files


def unread_note(others: dict[str, int]) -> str:
    """What :func:`other_images` found, and what to do: '3 .heic files, which ...'."""
    heic = " (or pip install pillow-heif)" if {".heic", ".heif"} & set(others) else ""
    many = sum(others.values()) > 1
    return (f"{', '.join(f'{n} {ext}' for ext, n in others.items())} {'files' if many else 'file'}, which this "
            f"installation does not read: convert {'them' if many else 'it'} to JPEG or PNG{heic}")


def other_images(root: str | Path) -> dict[str, int]:
    """{extension: count} of the image files under ``root`` that are not read here (camera raw,
    HEIC without its plug-in, vector drawings: ``OTHER_IMAGES``), most first."""
    counts: dict[str, int] = {}
    for _, files in _files_seen(Path(root)):   # the folders the image search reads, no others
        for f in files:
            ext = os.path.splitext(f)[1].lower()
            if ext in OTHER_IMAGES and ext not in IMAGE_EXTENSIONS:
                counts[ext] = counts.get(ext, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def pil_to_array(im, size: int, channels: int = 3) -> np.ndarray:
    """A PIL image -> uint8 [channels, size, size]: RGB (3) or grey (1), shorter side
    resized to ``size``, centre crop."""
    from PIL import Image

    if channels not in (1, 3):
        raise ValueError(f"channels={channels!r}: images are read as 1 (grey) or 3 (RGB) channels")
    im = im.convert("RGB" if channels == 3 else "L")
    w, h = im.size
    if (w, h) != (size, size):
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        im = im.resize((nw, nh), Image.BILINEAR, reducing_gap=None)
        left, top = (nw - size) // 2, (nh - size) // 2
        im = im.crop((left, top, left + size, top + size))
    a = np.asarray(im, dtype=np.uint8)
    return (a[None] if a.ndim == 2 else a.transpose(2, 0, 1)).copy()


DEEP_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")   # PIL modes of more than 8 bits a channel


def eight_bit(im):
    """A grey image of more than 8 bits (16-bit PNG or TIFF scans, 32-bit integers, floats) as an 8-bit
    one whose levels keep their order and spread: PIL's own conversion clips every value above 255
    to white (a 12- or 16-bit scan came out as its zeros on white) and floats in [0, 1] to black.
    Integers are divided by the range of their bit depth (the image's largest value rounded up to an
    even number of bits: 10, 12, 14 or 16), so the scans of one device share a scale; floats in
    [0, 1] are scaled by 255, other floats stretched from their minimum to their maximum. Other
    images are returned as they are."""
    if im.mode not in DEEP_MODES:
        return im
    from PIL import Image

    a = np.asarray(im, dtype=np.float64)
    finite = a[np.isfinite(a)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if im.mode == "F" and lo >= 0 and hi <= 1:
        scaled = a * 255
    elif im.mode == "F" or lo < 0:
        scaled = (a - lo) * (255 / (hi - lo)) if hi > lo else np.zeros_like(a)
    elif hi <= 255:
        scaled = a
    else:
        bits = int(np.ceil(np.log2(hi + 1)))
        scaled = a * (255 / (2 ** (bits + bits % 2) - 1))
    return Image.fromarray(np.clip(np.nan_to_num(np.rint(scaled)), 0, 255).astype(np.uint8), "L")


def on_white(im):
    """An image with transparency (RGBA, LA, a palette or grey image with a transparent colour) laid
    on white, as a browser shows it: converting it drops the alpha and shows whatever colours the
    transparent pixels hold (often black, sometimes leftovers of an edit). Others as they are."""
    if im.mode not in ("RGBA", "LA", "PA", "RGBa", "La") and "transparency" not in im.info:
        return im
    from PIL import Image

    rgba = im.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")


def upright(im):
    """``im`` as a viewer shows it: turned as its EXIF orientation tag says (a phone's portrait photo
    is stored sideways with a tag), on white where it is transparent (:func:`on_white`), of 8 bits
    a channel (:func:`eight_bit`); ``im`` itself where none of these applies."""
    from PIL import ImageOps

    try:
        turned = im.getexif().get(0x0112, 1) not in (0, 1)   # the tag alone: exif_transpose copies every image
    except Exception:  # a damaged EXIF block: the pixels as stored
        turned = False
    return on_white(eight_bit(ImageOps.exif_transpose(im) if turned else im))


def decode_image(path: str | Path, size: int, channels: int = 3) -> np.ndarray:
    """One file -> uint8 [channels, size, size] (see :func:`pil_to_array`), upright (:func:`upright`)."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        return pil_to_array(upright(im), size, channels)


def _decode_chunk(args):
    paths, size, channels = args
    out, bad = [], []
    for p in paths:
        try:
            out.append(decode_image(p, size, channels))
        except Exception as exc:  # PIL raises many types for broken files
            out.append(None)
            bad.append((str(p), f"{type(exc).__name__}: {exc}"))
    return out, bad


def _cache_dir() -> Path | None:
    where = os.environ.get("CONR_CACHE", "")
    if where.lower() in ("off", "0", "none", "false"):
        return None
    return Path(where) if where else Path.home() / ".cache" / "conr"


def _cache_key(files: list[Path], size: int, channels: int = 3) -> str:
    # v3: upright by the EXIF tag, deep grey images scaled to 8 bits, transparency on white (a folder decoded before is decoded again)
    h = hashlib.sha256((f"v3|{size}" if channels == 3 else f"v3|{size}|c{channels}").encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def decode_files(files: list[Path], size: int, workers: int | None = None, channels: int = 3):
    """Decode in parallel; returns (uint8 array of the readable ones, kept mask, bad list)."""
    workers = workers or min(8, os.cpu_count() or 1)
    chunk = max(64, len(files) // (workers * 8) + 1)
    jobs = [(files[i:i + chunk], size, channels) for i in range(0, len(files), chunk)]
    results = []
    if workers > 1 and len(files) > 256:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_decode_chunk, jobs))
    else:
        results = [_decode_chunk(j) for j in jobs]
    arrays, bad = [], []
    for out, b in results:
        arrays.extend(out)
        bad.extend(b)
    kept = np.array([a is not None for a in arrays], dtype=bool)
    good = [a for a in arrays if a is not None]
    stacked = np.stack(good) if good else np.zeros((0, channels, size, size), np.uint8)
    return stacked, kept, bad


def _index_folder(root: Path, labels: str):
    """Files under ``root`` with their first path component (class folder or None),
    the sorted class names and whether the folders are the labels."""
    if labels not in ("auto", "folders", "none"):
        raise ValueError(f"labels={labels!r}: choose auto, folders or none")
    files = images_under(root)
    rel = [f.relative_to(root) for f in files]
    top = [r.parts[0] if len(r.parts) > 1 else None for r in rel]
    classes = sorted({t for t in top if t is not None})
    use_folders = labels == "folders" or (labels == "auto" and None not in top and len(classes) >= 2)
    if labels == "folders" and None in top:
        loose = [str(r) for r, t in zip(rel, top) if t is None][:3]
        raise ValueError(f"ImageFolder layout expected under {root} (one sub-folder per class), but "
                         f"images lie directly in it: {loose}")
    return files, top, classes, use_folders


def index_image_folder(root: str | Path, labels: str = "auto") -> tuple[list[Path], list[int], list[str]]:
    """What :func:`load_image_folder` reads, without decoding: (files, labels, classes),
    labels -1 when the folder is unlabelled (conr/data/stream.py streams these files)."""
    files, top, classes, use_folders = _index_folder(Path(root), labels)
    if not use_folders:
        return files, [-1] * len(files), []
    index = {c: i for i, c in enumerate(classes)}
    return files, [index[t] for t in top], classes


def decode_file_list(files: list[Path], size: int, on_bad_image: str, where: str | Path, channels: int = 3):
    """Decode the given image files (RGB or grey, shorter side -> size, centre crop)
    with the folder loader's parallel decoder and on-disk cache.

    Returns (uint8 array of the readable ones, kept mask, bad list). Unreadable
    files are skipped, or raise BadImageError with on_bad_image="fail"."""
    check_on_bad_image(on_bad_image)
    if not files:
        raise ValueError(f"no image files to decode under {where}")
    cache = _cache_dir()
    cache_file = cache / f"images-{_cache_key(files, size, channels)}.npz" if cache else None
    stacked = kept = bad = None
    if cache_file is not None and cache_file.exists():
        try:
            with np.load(cache_file, allow_pickle=False) as z:
                stacked, kept = z["images"], z["kept"]
                bad = [tuple(x.split("\t", 1)) for x in z["bad"].tolist()]
        except Exception:
            stacked = None
    if stacked is None:
        stacked, kept, bad = decode_files(files, size, channels=channels)
        if cache_file is not None:
            try:
                buf = io.BytesIO()
                np.savez(buf, images=stacked, kept=kept, bad=np.array(["\t".join(b) for b in bad], dtype=str))
                atomic_write_bytes(cache_file, buf.getvalue())
            except OSError:
                pass  # a cache that cannot be written is no error
    if bad and on_bad_image == "fail":
        listing = "\n  ".join(f"{p} ({why})" for p, why in bad[:20])
        raise BadImageError(f"{len(bad)} unreadable image file(s) under {where}:\n  {listing}\n"
                            f"remove or repair them, or pass {option('data.on_bad_image', 'skip')} to leave them out")
    if not kept.any():
        raise ValueError(f"none of the {len(files)} image files under {where} could be read")
    return stacked, kept, list(bad)


def load_image_folder(root: str | Path, image_size: int = 32, labels: str = "auto",
                      on_bad_image: str = "skip", name: str | None = None,
                      normalization: str = "imagenet", channels: int = 3) -> ImageData:
    """Decode every image under ``root``.

    labels: "folders" = the first path component under root is the class (the
    ImageFolder layout); "none" = unlabelled; "auto" = folders when every image
    sits in one of at least two class folders, else none.
    """
    check_on_bad_image(on_bad_image)
    root = Path(root)
    files, top, classes, use_folders = _index_folder(root, labels)

    stacked, kept, bad = decode_file_list(files, image_size, on_bad_image, root, channels)
    kept_files = [f for f, k in zip(files, kept) if k]
    if use_folders:
        index = {c: i for i, c in enumerate(classes)}
        y = [index[t] for t, k in zip(top, kept) if k]
    else:
        classes, y = [], [-1] * len(kept_files)
    return ImageData(images=torch.from_numpy(stacked), labels=torch.tensor(y, dtype=torch.long),
                     classes=classes, paths=[str(f) for f in kept_files], name=name or root.name,
                     normalization=normalization, skipped=list(bad))


@register_dataset("imagefolder")
def _imagefolder(root: str | None = None, split: str = "all", image_size: int = 32,
                 on_bad_image: str = "skip", normalization: str | None = None, channels: int = 3, **_):
    """Any folder; with split train/test/train+test it reads those sub-folders
    (the layout of the CIFAR-10 JPEG copy: root/train/<class>/..., root/test/<class>/...)."""
    if root is None:
        raise ValueError("data.root must name the image folder for data.name=imagefolder")
    root_p = Path(root)
    norm = normalization or "imagenet"
    parts = split.split("+") if split not in ("all", "") else []
    if parts and all((root_p / p).is_dir() for p in parts):
        loaded = [load_image_folder(root_p / p, image_size, "auto", on_bad_image, root_p.name, norm, channels)
                  for p in parts]
        classes = loaded[0].classes
        for p, d in zip(parts, loaded):
            if d.classes != classes:
                raise ValueError(f"{root_p / p} has classes {d.classes} but {root_p / parts[0]} has {classes}")
        return ImageData.concat(loaded)
    if parts:
        missing = [p for p in parts if not (root_p / p).is_dir()]
        raise FileNotFoundError(f"split {split!r} needs the sub-folder(s) {missing} under {root_p}; "
                                f"use data.split=all to read the whole folder")
    return load_image_folder(root_p, image_size, "auto", on_bad_image, root_p.name, norm, channels)
