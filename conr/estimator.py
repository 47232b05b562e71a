"""A scikit-learn style estimator around the trainer.

    >>> model = conr.CoNR(n_clusters=10).fit("photos/")      # a folder, an ImageData,
    >>> model.labels_, model.cluster_centers_                  # an array/tensor or PIL images
    >>> model.predict(new_images), model.transform(new_images)

Without settings of its own it derives them from the images (:mod:`conr.autoconfig`:
size, channels, augmentation, batch, neighbourhood) and sizes the run to a time
budget (:mod:`conr.budget`: ``minutes``, default from the number of images). Each
automatic choice is overridable by a constructor argument, a ``config`` YAML file or
``overrides`` (``section.key=value``), in that order of precedence (overrides win);
``epochs`` (or ``train.epochs=N``) replaces the time budget.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
from sklearn.exceptions import NotFittedError as _SklearnNotFittedError
from torch import Tensor

from .autoconfig import (MIN_BUDGET_EPOCHS, MIN_NET_SIZE, ImageSurvey, auto_settings, default_minutes,
                         pick_image_size, survey_files, survey_images)
from .config import Config, apply_overrides, config_from_dict, resolve_config_path
from .config import deep_merge as _deep_merge, read_yaml as _read_yaml
from .data.base import ImageData, resize_uint8
from .data.folder import pil_to_array
from .options import option

__all__ = ["CoNR", "as_image_data", "survey_input", "NotFittedError"]


K_CRITERION = "silhouette"          # how n_clusters="auto" picks K (benchmarks/kselect.py measured the others)
K_SELECTION_FILE = "k_selection.json"  # in the run folder: the chosen K and the score of every candidate


class NotFittedError(_SklearnNotFittedError):
    """predict / transform before fit (scikit-learn's NotFittedError, so ``except`` clauses and
    ``check_is_fitted``-based code written for scikit-learn catch it)."""


def read_k_selection(run_dir) -> dict | None:
    """The K estimate a run recorded (``k_selection.json``), or None."""
    import json

    path = Path(run_dir) / K_SELECTION_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _device_type(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device).type


# ----------------------------------------------------------------------------- input conversion

def survey_input(X) -> ImageSurvey | None:
    """What the settings rule needs to know about an input (None: not an input it can look at)."""
    if isinstance(X, (str, Path)):
        from .data.folder import scan_images

        return survey_files(scan_images(Path(X)))
    if isinstance(X, ImageData):
        return survey_images(X.images)
    if isinstance(X, (list, tuple)) and X and all(hasattr(im, "mode") and hasattr(im, "size") for im in X):
        from .autoconfig import is_grey as _is_grey

        return ImageSurvey(n_images=len(X), shorter_sides=[min(im.size) for im in X],
                           grey=all(_is_grey(im) for im in X[:64]))
    return None


def as_image_data(X, image_size: int | None = None, on_bad_image: str = "skip",
                  device_type: str = "cpu", channels: int | None = None, image_shape=None) -> ImageData:
    """Any accepted input as ImageData at ``image_size`` (None: the automatic size).

    Accepted: a folder path (nested or flat, any image files), an ImageData, a
    uint8 / float numpy array or torch tensor N,H,W / N,H,W,C / N,C,H,W (C in 1, 3;
    floats in [0, 1] or [0, 255]) or flat N,D (rows unflattened by ``image_shape``, or
    D = H*H grey / 3*H*H colour planes, see :func:`conr.data.arrays.unflatten_images`),
    or a list of PIL images (or of H,W[,C] arrays).
    ``channels``: 1 or 3 for a folder (None: 1 when all its images are grey).
    """
    if isinstance(X, (str, Path)):
        from .data.folder import load_image_folder

        root = Path(X)
        if image_size is None or channels is None:
            survey = survey_input(root)
            image_size = image_size or pick_image_size(survey.native_size, device_type)
            channels = channels or (1 if survey.grey else 3)
        return load_image_folder(root, image_size, "auto", on_bad_image, channels=channels)
    if isinstance(X, ImageData):
        data = X
    elif isinstance(X, (np.ndarray, Tensor)):
        from .data.arrays import images_from_array, unflatten_images

        arr = X.detach().cpu().numpy() if isinstance(X, Tensor) else X
        if arr.size == 0 or (arr.ndim >= 1 and arr.shape[0] == 0):
            raise ValueError("no images: the input array is empty")
        arr = unflatten_images(arr, image_shape, "X")
        data = ImageData(images=torch.from_numpy(np.ascontiguousarray(images_from_array(arr, "X"))),
                         labels=torch.full((arr.shape[0],), -1, dtype=torch.long), name="array",
                         normalization="auto")
    elif isinstance(X, (list, tuple)):
        if len(X) == 0:
            raise ValueError("no images: the input list is empty")
        from PIL import Image

        items = []
        for i, item in enumerate(X):
            if isinstance(item, Image.Image):
                items.append(item)
            elif isinstance(item, (np.ndarray, Tensor)):
                a = item.detach().cpu().numpy() if isinstance(item, Tensor) else np.asarray(item)
                if a.dtype != np.uint8:
                    a = np.clip(np.rint(a * (255.0 if a.max() <= 1.0 else 1.0)), 0, 255).astype(np.uint8)
                if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[2] not in (1, 3):
                    a = a.transpose(1, 2, 0)
                items.append(Image.fromarray(a.squeeze(-1) if a.ndim == 3 and a.shape[2] == 1 else a))
            else:
                raise ValueError(f"X[{i}] is a {type(item).__name__}; a list must hold PIL images or arrays")
        if image_size is None:
            image_size = pick_image_size(int(np.median([min(im.size) for im in items])), device_type)
        arr = np.stack([pil_to_array(im, image_size) for im in items])
        return ImageData(images=torch.from_numpy(arr), labels=torch.full((len(items),), -1, dtype=torch.long),
                         name="images", normalization="imagenet")
    else:
        raise ValueError(f"cannot cluster a {type(X).__name__}: give a folder path, an ImageData, a numpy "
                         f"array or tensor of images (N,H,W[,C] or N,C,H,W), or a list of PIL images")
    if len(data) == 0:
        raise ValueError("no images: the input holds none")
    size = image_size or pick_image_size(min(data.images.shape[-2:]), device_type)
    if data.images.shape[-2:] != (size, size):
        data = ImageData(images=resize_uint8(_square(data.images), size), labels=data.labels,
                         classes=list(data.classes), paths=data.paths, name=data.name,
                         normalization=data.normalization, skipped=list(data.skipped))
    return data


def _square(images: Tensor) -> Tensor:
    """Centre-crop non-square [N, C, H, W] images to their shorter side."""
    h, w = images.shape[-2:]
    if h == w:
        return images
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return images[..., top:top + s, left:left + s]


# ----------------------------------------------------------------------------- estimator

class CoNR(ClusterMixin, TransformerMixin, BaseEstimator):
    """Deep image clustering (BYOL warm-up, then CoNR) in the scikit-learn style.

    Args:
        n_clusters: K, at least 2 and at most the number of images; or ``"auto"`` (None
            too) / a range ``(lo, hi)`` or ``"lo..hi"``: K is estimated from the stage-1
            features (:func:`conr.cluster.kselect.estimate_k`) before CoNR's stage 2 trains with it.
        method: training method (``conr`` by default; see ``conr methods``).
        image_size, backbone, epochs, batch_size, lr: None = the automatic rule
            (:mod:`conr.autoconfig`); a value overrides it. ``epochs`` (or the
            override ``train.epochs=N``) replaces the time budget.
        minutes: time budget for training and clustering (None: from the number of
            images, :func:`conr.autoconfig.default_minutes`); the first steps are timed
            and the epochs sized to fit (:mod:`conr.budget`).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda[:N]``.
        seed: seeds weights, data order, augmentation and k-means.
        deterministic: deterministic algorithms (bit-exact resume on a CPU).
        config: a YAML config (path or shipped name) merged over the automatic settings.
        overrides: list of ``section.key=value`` strings applied last.
        run_dir: folder for checkpoints and logs (None: train in memory).
        resume: continue the run in ``run_dir`` from its checkpoint.
        on_bad_image: ``skip`` (report and leave out) or ``fail`` for unreadable files.
        verbose: print the trainer's log lines and a progress bar.
        image_shape: how to unflatten a flat N x D array: (H, W) or (H, W, C); None guesses
            a square (D = H*H grey, or 3*H*H colour planes).
        input: ``auto`` (default), ``images`` or ``vectors``. Vectors (embeddings you already
            have, an N x D table) train an MLP with CoNR (conr/vectors.py); ``auto`` takes a 2-D
            table as images only when unambiguous (D = H*H or 3*H*H with H >= 8 and pixel
            values), else as vectors. ``input_kind_`` says which path was taken.

    Attributes after ``fit``: ``n_clusters_`` (the K used), ``k_selection_`` (with an
    estimated K: criterion, range, chosen K and the score table), ``labels_`` [N], ``cluster_centers_`` [K, D] (k-means means
    of the unit features, not re-normalised), ``features_`` [N, D], ``boundary_ratios_``
    and ``distances_`` (to the own centre) [N], ``metrics_`` (NMI/ACC/ARI when the input
    carries labels, e.g. class sub-folders), ``history_``, ``config_``, ``data_``,
    ``skipped_`` (unreadable files: (path, reason)), ``trainer_``.
    """

    def __init__(self, n_clusters: int = 10, *, method: str = "conr", image_size: int | None = None,
                 backbone: str | None = None, epochs: int | None = None, batch_size: int | None = None,
                 lr: float | None = None, minutes: float | None = None, device: str = "auto", seed: int = 0,
                 deterministic: bool = False,
                 config: str | None = None, overrides: list[str] | None = None, run_dir: str | None = None,
                 resume: bool = False, on_bad_image: str = "skip", verbose: bool = False,
                 image_shape: tuple | None = None, input: str = "auto"):
        self.n_clusters = n_clusters
        self.input = input
        self.image_shape = image_shape
        self.method = method
        self.image_size = image_size
        self.backbone = backbone
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.minutes = minutes
        self.device = device
        self.seed = seed
        self.deterministic = deterministic
        self.config = config
        self.overrides = overrides
        self.run_dir = run_dir
        self.resume = resume
        self.on_bad_image = on_bad_image
        self.verbose = verbose

    # ------------------------------------------------------------ helpers
    def _check_params(self) -> None:
        from .cluster.kselect import parse_k

        try:
            parse_k(self.n_clusters)
        except ValueError as exc:
            raise ValueError(f"n_clusters={self.n_clusters!r}: {exc}") from None
        if self.on_bad_image not in ("skip", "fail"):
            raise ValueError(f"on_bad_image={self.on_bad_image!r}: choose skip or fail")
        for name in ("image_size", "epochs", "batch_size"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, np.integer)) or v < 1):
                raise ValueError(f"{name}={v!r} must be a positive integer or None (automatic)")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr={self.lr!r} must be > 0 or None (automatic)")
        if self.minutes is not None and not (isinstance(self.minutes, (int, float)) and self.minutes > 0):
            raise ValueError(f"minutes={self.minutes!r} must be a positive number of minutes or None (automatic)")

    def _user_raw(self) -> dict:
        """The settings the user chose: config file, constructor arguments, overrides."""
        raw: dict = _read_yaml(resolve_config_path(self.config)) if self.config else {}
        explicit = [f"method={self.method}", f"train.seed={int(self.seed)}", f"train.device={self.device}",
                    f"cluster.n_clusters={self._fixed_k(provisional=True)}"]
        if self.deterministic:
            explicit.append("train.deterministic=true")
        if not self.verbose:
            explicit.append("run.progress=false")
        for key, value in (("data.image_size", self.image_size), ("model.backbone", self.backbone),
                           ("train.epochs", self.epochs), ("train.batch_size", self.batch_size),
                           ("train.lr", self.lr)):
            if value is not None:
                explicit.append(f"{key}={value}")
        return apply_overrides(raw, explicit + list(self.overrides or []))

    def _fixed_k(self, provisional: bool = False, n_images: int | None = None) -> int | None:
        """The K given (an int), else None; ``provisional``: the K that stage 1 monitors
        with while K is still unknown (10 clamped into the range)."""
        from .cluster.kselect import parse_k

        k = parse_k(self.n_clusters)
        if isinstance(k, int):
            return k
        if not provisional:
            return None
        lo, hi = self._k_range(n_images) if n_images else ((2, 10**9) if k == "auto" else k)
        return int(min(max(10, lo), hi))

    def _k_range(self, n_images: int) -> tuple[int, int]:
        from .cluster.kselect import default_k_range, parse_k

        k = parse_k(self.n_clusters)
        lo, hi = default_k_range(n_images) if k == "auto" else k
        return lo, min(hi, max(lo, n_images - 1))

    def _log(self, *args) -> None:
        if self.verbose:
            print(*args)

    def load(self, X, survey: ImageSurvey | None = None) -> ImageData:
        """The input as ImageData at the size and channels this estimator will train on
        (or was trained on)."""
        if hasattr(self, "trainer_"):
            data_cfg = self.trainer_.cfg.data
            size, channels = data_cfg.image_size, data_cfg.channels
        else:
            user = self._user_raw().get("data", {})
            size, channels = user.get("image_size"), user.get("channels")
            if channels is None and survey is not None:
                channels = 1 if survey.grey else 3
        data = as_image_data(X, size, self.on_bad_image, _device_type(self.device), channels=channels,
                             image_shape=self.image_shape)
        if channels == 1 and data.channels == 3:  # grey images handed over as RGB
            data = replace(data, images=data.images[:, :1].contiguous())
        return data

    def build_config(self, data: ImageData, root: str | Path | None = None, survey: ImageSurvey | None = None,
                     epochs: int | None = None) -> Config:
        """Automatic settings for ``data``, then the config file, arguments and overrides.
        ``root``: the folder the images came from, recorded so that ``conr plot`` can
        reload them from the run folder. ``epochs``: the length the time budget chose.
        The reasons for the automatic choices land in ``self.settings_reasons_``."""
        user = self._user_raw()
        t = user.get("train", {})
        k = int(user.get("cluster", {}).get("n_clusters") or 10)
        if self._fixed_k() is None:  # K estimated after stage 1: a provisional K sizes batch and k
            k = self._fixed_k(provisional=True, n_images=len(data))
            user.setdefault("cluster", {})["n_clusters"] = k
        survey = survey or survey_images(data.images)
        if getattr(self, "_mirror", None) is None:  # the flip rule (conr/data/mirror.py), once a fit
            from .data.mirror import mirror_overlap

            self._mirror = mirror_overlap(data.images.numpy(), seed=int(self.seed))
        survey = ImageSurvey(n_images=len(data), shorter_sides=survey.shorter_sides, grey=data.channels == 1,
                             mirror_overlap=self._mirror)
        device_type = _device_type(self.device)
        auto_size = data.image_size == pick_image_size(survey.native_size, device_type)
        auto, why = auto_settings(survey, k, device_type,
                                  epochs=t.get("epochs") or epochs, batch_size=t.get("batch_size"),
                                  image_size=None if auto_size else data.image_size)
        if t.get("epochs"):
            why["train.epochs"] = "chosen by the user"
        elif epochs is not None:
            why["train.epochs"] = "sized to the time budget"
        if getattr(self, "_size_note", None):
            why["data.image_size"] = self._size_note
        elif not auto_size:
            why["data.image_size"] = "chosen by the user"
        raw = _deep_merge(auto, user)
        self.settings_reasons_ = {k: v for k, v in why.items() if _dotted(user, k) is None or k == "train.epochs"}
        if raw["model"].get("backbone") != "small_cnn" and "width" not in user.get("model", {}):
            raw["model"].pop("width", None)  # the automatic small_cnn width means nothing to a ResNet
        d = raw.setdefault("data", {})
        d["image_size"] = data.image_size
        d["channels"] = data.channels
        d["on_bad_image"] = self.on_bad_image
        if root is not None:
            d.update(name="imagefolder", root=str(Path(root).resolve()), split="all", subset=None)
        else:  # in-memory images: the config names no dataset that could be reloaded
            d.update(name="numpy", root=None, split="all", subset=None)
        return config_from_dict(raw)

    def _final_stage(self, data: ImageData, cfg: Config):
        """The final stage's pixel candidates, computed before training (at the loaded
        size, before any budget resize) and timed: the time budget reserves what the
        final stage and the stage-2 seed will cost from it (conr/cluster/)."""
        from .cluster.final import FinalStage
        from .cluster.manifold import pixel_vectors

        from .cluster.manifold import warm_up_umap

        self._umap_compile_seconds = warm_up_umap()  # numba's first-call compilation, once a process
        start = time.perf_counter()
        pixels = pixel_vectors(data.images.numpy(), seed=int(self.seed))
        c = cfg.cluster
        stage = FinalStage(pixels, c.n_clusters, seed=int(self.seed), rule=c.final_rule, log=self._log)
        stage.pixel_candidates()
        self._pixel_stage_seconds = time.perf_counter() - start
        self._log(f"final stage: pixel candidates in {self._pixel_stage_seconds:.1f} s "
                  f"(after {self._umap_compile_seconds:.1f} s of UMAP's one-time compilation)")
        return stage

    def _reserved_seconds(self, cfg: Config, epochs_seconds: float = 0.0) -> float:
        """Seconds the budget keeps for the clustering stages around training: the
        candidates on the features at stage 2's start and at the end (each about what
        the pixel candidates took), and the self-labelling stage (an epoch of it about
        a quarter of a training epoch)."""
        c = cfg.cluster
        if c.final != "auto":
            return 0.0
        two_stage = cfg.method in ("conr", "simsiam_connr", "moco_connr")  # a stage 2 to seed
        runs = 2 if two_stage and c.stage2_seed == "final" else 1
        return runs * getattr(self, "_pixel_stage_seconds", 0.0) + 0.25 * c.self_label_epochs * epochs_seconds

    def _budget_epochs(self, data: ImageData, cfg: Config, started: float) -> tuple[int, dict]:
        """Time the first steps of a throw-away trainer and size the epochs to the budget."""
        from .budget import epochs_for_budget, measure_costs, seconds_for
        from .train import Trainer

        minutes = float(self.minutes or default_minutes(len(data), _device_type(self.device)))
        probe = Trainer(cfg, data=data, write=False, log=lambda *a: None)
        costs = measure_costs(probe, checkpoints=self.run_dir is not None)
        del probe
        left = minutes * 60 - (time.perf_counter() - started)
        reserved = self._reserved_seconds(cfg, costs.epoch_seconds)
        epochs = epochs_for_budget(left - reserved, costs)
        estimate = time.perf_counter() - started + seconds_for(epochs, costs) + reserved
        info = {"minutes": minutes, "epochs": epochs, "estimate_seconds": round(estimate, 1),
                "reserved_seconds": round(reserved, 1),
                "image_size": data.image_size,
                **{k: round(v, 4) if isinstance(v, float) else v for k, v in costs.to_dict().items()}}
        self._log(f"time budget {minutes:g} min: a step takes {costs.step_seconds * 1000:.0f} ms at "
                  f"{data.image_size} px ({costs.iters_per_epoch} per epoch), clustering {costs.cluster_seconds:.1f} s "
                  f"-> {epochs} epochs, estimated {estimate / 60:.1f} min in all")
        return epochs, info

    def _fit_budget(self, data: ImageData, cfg: Config, root, survey, started: float):
        """Epochs for the budget; when the budget buys fewer than MIN_BUDGET_EPOCHS at the
        automatic size, train smaller images instead (a step's cost ~ pixels): more
        epochs beat more pixels. Returns (data, config, budget record)."""
        epochs, info = self._budget_epochs(data, cfg, started)
        user_size = self._user_raw().get("data", {}).get("image_size")
        if epochs < MIN_BUDGET_EPOCHS and user_size is None and data.image_size > MIN_NET_SIZE:
            # the epoch count scales ~ 1 / pixels: the largest size that still buys the minimum
            scale = (epochs / MIN_BUDGET_EPOCHS) ** 0.5
            size = max(MIN_NET_SIZE, 4 * int(data.image_size * scale // 4))
            if size < data.image_size:
                self._log(f"time budget: {epochs} epochs at {data.image_size} px are too few; "
                          f"training at {size} px instead")
                old = data.image_size
                data = replace(data, images=resize_uint8(data.images, size))
                cfg = self.build_config(data, root=root, survey=survey)
                epochs, info = self._budget_epochs(data, cfg, started)
                self._size_note = (f"reduced from {old} px so the {info['minutes']:g}-min budget buys "
                                   f"more epochs ({epochs}; at least {MIN_BUDGET_EPOCHS} wanted)")
        cfg = self.build_config(data, root=root, survey=survey, epochs=epochs)
        # a safety net if the machine gets busier than when it was timed: stop (checkpointed and
        # clustered) once the budget is 10 % overrun
        left = info["minutes"] * 60 - (time.perf_counter() - started) - info.get("reserved_seconds", 0.0)
        cfg.run.max_epoch_minutes = max(0.05, 1.1 * left / 60)
        return data, cfg, info

    # ------------------------------------------------------------ API
    def fit(self, X, y=None) -> "CoNR":
        """Train on ``X`` (any accepted input) and cluster it. ``y`` is ignored
        (ground truth, when wanted for scores, comes with an ImageData or class folders)."""
        started = time.perf_counter()  # the budget counts start-up and loading too
        from .train import Trainer

        self._size_note = None
        self._mirror = None
        for attr in [a for a in vars(self) if a.endswith("_") and not a.startswith("_")]:
            delattr(self, attr)  # a refit starts from nothing
        from .vectors import fit_vectors, input_kind

        kind, why = input_kind(X, self.input, self.image_shape)
        if kind == "vectors":
            return fit_vectors(self, X, why)  # checks X (scikit-learn's messages) before the parameters
        self._check_params()
        self._log(f"input: images ({why})")
        survey = survey_input(X)
        data = self.load(X, survey)
        if len(data) == 0:
            raise ValueError("no images to cluster: the input is empty")
        fixed = self._fixed_k()
        if fixed is not None and fixed > len(data):
            raise ValueError(f"{option('n_clusters', fixed)} exceeds the number of images ({len(data)}); lower K")
        if fixed is None and len(data) < 3:
            raise ValueError(f"{len(data)} images: estimating K needs at least 3")
        root = X if isinstance(X, (str, Path)) else None
        cfg = self.build_config(data, root=root, survey=survey)
        # the pixel candidates need K: with K still to be estimated they are made after stage 1
        stage = self._final_stage(data, cfg) if cfg.cluster.final == "auto" and fixed is not None else None
        selection = None
        if fixed is None and self.resume and self.run_dir is not None:
            selection = read_k_selection(self.run_dir)  # a resumed run keeps the K it chose
        if cfg.data.normalization is not None:
            data.normalization = cfg.data.normalization
        budget = None
        fixed_epochs = self._user_raw().get("train", {}).get("epochs")
        saved = Path(self.run_dir) / "config.yaml" if self.run_dir is not None else None
        if self.resume and saved is not None and saved.exists():  # a resumed run keeps its length
            import yaml

            epochs = (yaml.safe_load(saved.read_text()) or {}).get("train", {}).get("epochs")
            cfg = self.build_config(data, root=root, survey=survey, epochs=epochs)
        elif not fixed_epochs:
            data, cfg, budget = self._fit_budget(data, cfg, root, survey, started)
        if selection is not None:  # the K the resumed run chose (build_config gives a provisional one)
            cfg.cluster.n_clusters = int(selection["k"])
        write = self.run_dir is not None
        notes = [f"{k}: {v}" for k, v in self.settings_reasons_.items()]
        trainer = Trainer(cfg, data=data, run_dir=self.run_dir, resume=self.resume, write=write, log=self._log,
                          notes=notes, final_stage=stage)
        if fixed is None and selection is None:
            selection = self._select_k(trainer)
        result = trainer.fit()
        if budget is not None:
            budget["actual_seconds"] = round(time.perf_counter() - started, 1)
            self._log(f"time budget {budget['minutes']:g} min: estimated {budget['estimate_seconds'] / 60:.1f} min, "
                      f"took {budget['actual_seconds'] / 60:.1f} min")
            early = early_finish_note(budget, cfg.train.epochs)
            if early:
                budget["early_note"] = early
                self._log(early)
            if write:
                import json

                from .io import atomic_write_text

                atomic_write_text(Path(self.run_dir) / "budget.json", json.dumps(budget, indent=1) + "\n")
        self.budget_ = budget
        self._set_fitted(trainer, result.features, result.labels, result.centers, result.metrics, result.history)
        if selection is not None:
            self.k_selection_ = selection
        self.input_kind_ = "images"
        return self

    def _select_k(self, trainer) -> dict:
        """Train stage 1 (BYOL; K plays no part in it), estimate K from its features,
        record the choice in the run folder and set it for stage 2."""
        from .cluster.kselect import estimate_k

        cfg = trainer.cfg
        # methods with a stage 2 (CoNR, the ConNR* variants) estimate K where it starts; the others
        # after training
        start = trainer.method.stage2_start()
        stop = start - 1 if start is not None else cfg.train.epochs
        if trainer.epoch < stop:
            seed_mode, cfg.cluster.stage2_seed = cfg.cluster.stage2_seed, "kmeans"  # no seed with a provisional K
            try:
                trainer.fit(until_epoch=stop)
            finally:
                cfg.cluster.stage2_seed = seed_mode
        lo, hi = self._k_range(len(trainer.data))
        self._log(f"estimating K in {lo}..{hi} from the features after epoch {trainer.epoch} ({K_CRITERION})")
        k, table = estimate_k(trainer.extract_features().cpu().numpy(), (lo, hi), seed=cfg.train.seed,
                              criterion=K_CRITERION)
        selection = {"k": int(k), "criterion": K_CRITERION, "k_range": [lo, hi], "epoch": trainer.epoch,
                     "table": table}
        self._log(f"K = {k} ({K_CRITERION} {max(r[K_CRITERION] for r in table):.3f})")
        cfg.cluster.n_clusters = int(k)
        trainer.cluster_epoch = -1  # cluster again with the chosen K before stage 2
        trainer._until_epoch = None
        if trainer.write:
            import json

            import yaml

            from .config import config_to_dict
            from .io import atomic_write_text

            atomic_write_text(Path(trainer.run_dir) / K_SELECTION_FILE, json.dumps(selection, indent=1) + "\n")
            atomic_write_text(Path(trainer.run_dir) / "config.yaml",
                              yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        return selection

    def cluster(self, X) -> "CoNR":
        """Cluster ``X`` with the trained network, without training: features, then the
        run's final clustering with ``n_clusters`` (the final stage without its
        self-labelling, which would train; sets ``labels_`` and the other fitted attributes)."""
        from .train import Trainer

        self._check_fitted()
        self._check_params()
        if getattr(self, "input_kind_", "images") == "vectors":
            raise ValueError("cluster(X) re-clusters images with the trained network; for vectors call fit(X), "
                             "or predict(X) to assign new vectors to the fitted clusters")
        data = self.load(X)
        k = self._fixed_k()
        selection = None
        if k is None:  # K unknown: estimated from the trained network's features of X
            from .cluster.kselect import estimate_k

            lo, hi = self._k_range(len(data))
            k, table = estimate_k(self._features(data).numpy(), (lo, hi), seed=self.seed, criterion=K_CRITERION)
            selection = {"k": int(k), "criterion": K_CRITERION, "k_range": [lo, hi], "table": table}
        if k > len(data):
            raise ValueError(f"{option('n_clusters', k)} exceeds the number of images ({len(data)}); lower K")
        old = self.trainer_
        cfg = old.cfg
        raw = apply_overrides(_cfg_dict(cfg), [f"cluster.n_clusters={int(k)}", "cluster.self_label_epochs=0",
                                               f"train.batch_size={min(cfg.train.batch_size, len(data))}",
                                               f"stage2.k={min(cfg.stage2.k, max(1, len(data) - 1))}",
                                               f"stage2.k1={min(cfg.stage2.k1, len(data))}",
                                               f"stage2.k2={min(cfg.stage2.k2, cfg.stage2.k1, len(data))}"])
        trainer = Trainer(config_from_dict(raw), data=data, write=False, log=self._log)
        trainer.method.load_state_dict(old.method.state_dict())
        trainer.mean, trainer.std = old.mean, old.std
        trainer.history = list(old.history)
        trainer.run_dir = old.run_dir
        record = trainer.cluster_step()
        metrics = dict(record)
        labels, centers = trainer.final_clustering(trainer._last_features)
        if trainer.data.n_labelled:
            from .metrics import evaluate

            metrics.update(evaluate(trainer.data.labels, labels), scored=trainer.data.n_labelled)
        self._set_fitted(trainer, trainer._last_features.cpu(), labels, centers, metrics, list(old.history))
        if selection is not None:
            self.k_selection_ = selection
        return self

    @classmethod
    def from_checkpoint(cls, path, n_clusters: int | None = None, device: str = "auto",
                        verbose: bool = False) -> "CoNR":
        """An estimator holding a saved run's network (a run folder or checkpoint file),
        ready for ``predict`` / ``transform`` / ``cluster``; no images needed."""
        from .train import Trainer, load_checkpoint

        ckpt = load_checkpoint(path, "cpu")
        raw = apply_overrides(ckpt["config"], ["run.progress=false"] +
                              ([f"train.device={device}"] if device != "auto" else []))
        cfg = config_from_dict(raw)
        info = ckpt.get("data", {})
        k = int(n_clusters if isinstance(n_clusters, (int, np.integer)) else cfg.cluster.n_clusters)
        est = cls(n_clusters=k, method=cfg.method, image_size=cfg.data.image_size, device=cfg.train.device,
                  seed=cfg.train.seed, verbose=verbose)
        n = max(cfg.train.batch_size, cfg.cluster.n_clusters)
        size = cfg.data.image_size
        placeholder = ImageData(images=torch.zeros(n, info.get("channels", 3), size, size, dtype=torch.uint8),
                                labels=torch.full((n,), -1, dtype=torch.long), name=info.get("name", "data"),
                                normalization="imagenet")
        trainer = Trainer(cfg, data=placeholder, write=False, log=est._log)
        trainer._restore(ckpt, full=False, quiet=True)
        trainer.history = list(ckpt.get("history", []))
        src = Path(path)
        trainer.run_dir = src if src.is_dir() else src.parent
        est.trainer_ = trainer
        est.config_ = cfg
        centers = ckpt.get("final_centers") if ckpt.get("final_centers") is not None else ckpt.get("centers")
        if centers is not None and k == cfg.cluster.n_clusters:
            est.cluster_centers_ = centers.float().numpy()
        est.history_ = list(trainer.history)
        if ckpt.get("final_features") is not None and k == cfg.cluster.n_clusters:
            est._reference = (ckpt["final_features"].float(), ckpt["final_labels"].long())
        if ckpt.get("partition") is not None and k == cfg.cluster.n_clusters:
            from .cluster.partition import Partition

            est.partition_ = Partition.from_dict(ckpt["partition"])
            if est.partition_.assign == "nearest_center":
                est._reference = None
        if n_clusters is not None and not isinstance(n_clusters, (int, np.integer)):
            est.n_clusters = n_clusters  # "auto" / a range: cluster(X) estimates K from X
        selection = read_k_selection(trainer.run_dir)
        if selection is not None:
            est.k_selection_ = selection
        return est

    def _set_fitted(self, trainer, feats: Tensor, labels: Tensor, centers: Tensor, metrics: dict,
                    history: list) -> None:
        from .boundary import boundary_ratio

        feats, labels, centers = feats.float().cpu(), labels.long().cpu(), centers.float().cpu()
        self.trainer_ = trainer
        self.config_ = trainer.cfg
        self.data_ = trainer.data
        self.skipped_ = list(trainer.data.skipped)
        self.features_ = feats.numpy()
        self.labels_ = labels.numpy()
        self.cluster_centers_ = centers.numpy()
        self.boundary_ratios_ = boundary_ratio(feats, centers, labels, trainer.cfg.stage2.ratio_variant).numpy()
        self.distances_ = (feats - centers[labels]).norm(dim=1).numpy()
        self.metrics_ = {k: v for k, v in metrics.items()}
        self.history_ = list(history)
        self.n_features_out_ = int(feats.shape[1])
        # graph and manifold clusters have no single centre: predict by the nearest clustered image
        partition = getattr(trainer, "partition", None)
        self.partition_ = partition
        nearest_image = partition.assign == "nearest_image" if partition is not None else \
            trainer.cfg.cluster.final != "kmeans"
        self._reference = (feats, labels) if nearest_image else None
        self.n_clusters_ = int(centers.shape[0])

    def _check_fitted(self) -> None:
        if not hasattr(self, "trainer_"):
            raise NotFittedError("this CoNR estimator is not fitted yet; call fit(X) first "
                                 "(or CoNR.from_checkpoint(run_folder))")

    def _features(self, X) -> Tensor:
        self._check_fitted()
        if getattr(self, "input_kind_", "images") == "vectors":
            from .vectors import vector_features

            return vector_features(self, X)
        data = self.load(X)
        trainer = self.trainer_
        images = data.images
        want = trainer.data.channels
        if images.shape[1] != want:  # grey <-> colour, so any input works with the trained network
            images = images.expand(-1, 3, -1, -1) if want == 3 else \
                images.float().mean(dim=1, keepdim=True).round().to(torch.uint8)
        return trainer.extract_features(images.contiguous()).cpu()

    def transform(self, X) -> np.ndarray:
        """L2-normalised features [N, D] of the images (test transform, target network)."""
        return self._features(X).numpy()

    def predict(self, X) -> np.ndarray:
        """The cluster of each image (see :meth:`assign_features`)."""
        return self.assign_features(self._features(X)).numpy()

    def assign_features(self, feats: Tensor) -> Tensor:
        """Clusters of L2-normalised features: with ``cluster.final: kmeans`` the nearest
        centre (cosine, as k-means assigns); with ``spectral`` the cluster of the nearest
        clustered image in feature space (a graph cluster has no single centre), so the
        training images get their own labels back."""
        from .cluster.kmeans import assign

        if getattr(self, "cluster_centers_", None) is None:
            raise NotFittedError("no cluster centres: call fit(X) or cluster(X) first")
        ref = getattr(self, "_reference", None)
        if ref is not None:
            ref_feats, ref_labels = ref
            nearest = torch.cat([(chunk @ ref_feats.t()).argmax(1) for chunk in feats.float().split(4096)])
            return ref_labels[nearest]
        labels, _ = assign(feats, torch.from_numpy(self.cluster_centers_), self.trainer_.cfg.cluster.metric)
        return labels

    def fit_predict(self, X, y=None, **kwargs) -> np.ndarray:
        return self.fit(X).labels_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = []  # features are float32 whatever the input's dtype
        tags.input_tags.sparse = False
        return tags


def early_finish_note(budget: dict, epochs: int) -> str | None:
    """Why a run finished well inside its time budget (None when it used 90 % or more)."""
    used, have = budget.get("actual_seconds", 0.0), 60.0 * budget["minutes"]
    if used >= 0.9 * have:
        return None
    from .budget import EPOCH_GRID

    why = ("the epochs reached the cap of 1,000" if epochs >= 1000 else
           f"{epochs} epochs is the largest value of the epoch grid ({', '.join(map(str, EPOCH_GRID[:3]))}, ..., "
           f"about x1.25 apart) that fits: the count is rounded down so that timing noise does not change it "
           f"and the run repeats (train.epochs=N sets any length)")
    return f"finished in {used / 60:.1f} of {have / 60:g} min: {why}"


def _dotted(raw: dict, key: str):
    """raw["a"]["b"] for key "a.b", None when absent."""
    for part in key.split("."):
        if not isinstance(raw, dict) or part not in raw:
            return None
        raw = raw[part]
    return raw


def _cfg_dict(cfg: Config) -> dict:
    from .config import config_to_dict

    return config_to_dict(cfg)
