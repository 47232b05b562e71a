"""A scikit-learn style estimator around the trainer.

    >>> model = conr.CoNR(n_clusters=10).fit("photos/")      # a folder, an ImageData,
    >>> model.labels_, model.cluster_centers_                  # an array/tensor or PIL images
    >>> model.predict(new_images), model.transform(new_images)

Without settings of its own it derives them from the images (:mod:`conr.auto.settings`)
and sizes the run to a time budget (:mod:`conr.auto.budget`: ``minutes``). Each automatic
choice is overridable by a constructor argument, a ``config`` YAML file or ``overrides``
(``section.key=value``), in that order (overrides win); ``epochs`` replaces the budget.
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

from .auto.k_selection import (K_CRITERION, K_SELECTION_FILE, estimate_selection, fixed_k, k_range, read_k_selection,
                     select_k_after_stage1)
from .data.survey import ImageSurvey, pick_image_size, survey_images
from .auto.settings import auto_settings, default_minutes
from .auto.budget import finish_budget, fit_to_budget, timed_pixel_stage
from .config import (Config, apply_overrides, config_from_dict, config_to_dict, deep_merge, dotted_get, read_yaml,
                     resolve_config_path)
from .data.base import ImageData
from .data.convert import as_image_data, match_channels, reload_folder, resolve_device_type, square_crop, survey_input
from .engine import Trainer, load_checkpoint
from .options import option

__all__ = ["CoNR", "as_image_data", "survey_input", "square_crop", "NotFittedError", "read_k_selection",
           "K_CRITERION", "K_SELECTION_FILE"]


class NotFittedError(_SklearnNotFittedError):
    """predict / transform before fit (scikit-learn's NotFittedError, so ``except`` clauses and
    ``check_is_fitted``-based code written for scikit-learn catch it)."""


# ----------------------------------------------------------------------------- estimator

class CoNR(ClusterMixin, TransformerMixin, BaseEstimator):
    """Deep image clustering (BYOL warm-up, then CoNR) in the scikit-learn style.

    Args:
        n_clusters: K, at least 2 and at most the number of images; or ``"auto"`` (None
            too) / a range ``(lo, hi)`` or ``"lo..hi"``: K is estimated from the stage-1
            features (:func:`conr.cluster.kselect.estimate_k`) before CoNR's stage 2 trains with it.
        method: training method (``conr`` by default; see ``conr methods``).
        image_size, backbone, epochs, batch_size, lr: None = the automatic rule
            (:mod:`conr.auto.settings`); a value overrides it. ``epochs`` (or the
            override ``train.epochs=N``) replaces the time budget.
        minutes: time budget for training and clustering (None: from the number of
            images, :func:`conr.auto.settings.default_minutes`); the first steps are timed
            and the epochs sized to fit (:mod:`conr.auto.budget`).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda[:N]``.
        seed: seeds weights, data order, augmentation and k-means.
        deterministic: deterministic algorithms (bit-exact resume on a CPU).
        config: a YAML config (path or shipped name) merged over the automatic settings.
        overrides: list of ``section.key=value`` strings applied last.
        run_dir: folder for checkpoints and logs (None: train in memory).
        resume: continue the run in ``run_dir`` from its checkpoint.
        on_bad_image: ``skip`` (report and leave out) or ``fail`` for unreadable files.
        verbose: print the trainer's log lines and a progress bar.
        image_shape: how to unflatten a flat N x D array: (H, W) or (H, W, C); None guesses.
        input: ``auto``, ``images`` or ``vectors`` (embeddings you have: an MLP trained with CoNR,
            conr/vectors.py); ``auto`` takes a 2-D table as images only when unambiguous (D = H*H
            or 3*H*H, H >= 8, pixel values). ``input_kind_`` says which path was taken.

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
                 deterministic: bool = False, config: str | None = None, overrides: list[str] | None = None,
                 run_dir: str | None = None, resume: bool = False, on_bad_image: str = "skip",
                 verbose: bool = False, image_shape: tuple | None = None, input: str = "auto"):
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
        raw: dict = read_yaml(resolve_config_path(self.config)) if self.config else {}
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
        return fixed_k(self.n_clusters, provisional, n_images)

    def _k_range(self, n_images: int) -> tuple[int, int]:
        return k_range(self.n_clusters, n_images)

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
        data = as_image_data(X, size, self.on_bad_image, resolve_device_type(self.device), channels=channels,
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
        device_type = resolve_device_type(self.device)
        auto_size = data.image_size == pick_image_size(survey.native_size, device_type)
        auto, why = auto_settings(survey, k, device_type,
                                  epochs=t.get("epochs") or epochs, batch_size=t.get("batch_size"),
                                  image_size=None if auto_size else data.image_size)
        if t.get("epochs"):
            why["train.epochs"] = "chosen by the user"
        elif epochs is not None:
            why["train.epochs"] = "sized to the time budget"
        if not auto_size:
            why["data.image_size"] = "chosen by the user"
        why.update(getattr(self, "_budget_reasons", None) or {})  # what the time budget changed, and why
        raw = deep_merge(auto, user)
        self.settings_reasons_ = {k: v for k, v in why.items() if dotted_get(user, k) is None or k == "train.epochs"}
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
        """The pixel candidates, made before training, timed; a budget bounds their layouts (conr/budget.py)."""
        user = self._user_raw()
        budgeted = not user.get("train", {}).get("epochs") and "consensus_runs" not in user.get("cluster", {})
        self._pixel_stage = timed_pixel_stage(data.images, cfg, int(self.seed), log=self._log,
                                              minutes=self._minutes(data) if budgeted else None)
        return self._pixel_stage

    def _minutes(self, data: ImageData) -> float:
        return float(self.minutes or default_minutes(len(data), resolve_device_type(self.device)))

    def _fit_budget(self, data: ImageData, cfg: Config, root, survey, started: float):
        """Epochs for the budget, or smaller images (reloaded) when it buys too few (conr/budget.py)."""
        def configure(data, epochs=None, reasons=None):
            self._budget_reasons.update(reasons or {})
            return self.build_config(data, root=root, survey=survey, epochs=epochs)

        return fit_to_budget(data, cfg, started, self._minutes(data), configure,
                             user_size=self._user_raw().get("data", {}).get("image_size"),
                             checkpoints=self.run_dir is not None,
                             pixel_stage=getattr(self, "_pixel_stage", None), log=self._log,
                             reload=None if root is None else lambda n: reload_folder(root, n, data, self.on_bad_image))

    # ------------------------------------------------------------ API
    def fit(self, X, y=None) -> "CoNR":
        """Train on ``X`` (any accepted input) and cluster it. ``y`` is ignored
        (ground truth, when wanted for scores, comes with an ImageData or class folders)."""
        started = time.perf_counter()  # the budget counts start-up and loading too
        self._mirror = self._pixel_stage = None
        self._budget_reasons = {}   # settings the time budget changed: why (conr/budget.py fit_to_budget)
        for attr in [a for a in vars(self) if a.endswith("_") and not a.startswith("_")]:
            delattr(self, attr)  # a refit starts from nothing
        from .auto.vectors import fit_vectors, input_kind

        kind, why = input_kind(X, self.input, self.image_shape)
        if kind == "vectors":
            return fit_vectors(self, X, why, hooks=dict(  # checks X (scikit-learn's words) before the parameters
                check_params=self._check_params, fixed_k=self._fixed_k, log=self._log, select_k=self._select_k,
                set_fitted=self._set_fitted))
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
        budget, fixed_epochs = None, self._user_raw().get("train", {}).get("epochs")
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
        if budget is not None:  # the time taken, why it ended early if it did, budget.json
            finish_budget(budget, started, cfg.train.epochs, self.run_dir if write else None, self._log)
        self.budget_ = budget
        self._set_fitted(trainer, result.features, result.labels, result.centers, result.metrics, result.history)
        if selection is not None:
            self.k_selection_ = selection
        self.input_kind_ = "images"
        return self

    def _select_k(self, trainer) -> dict:
        """Train stage 1, estimate K from its features, record and set it (conr/auto_k.py)."""
        return select_k_after_stage1(trainer, self._k_range(len(trainer.data)), log=self._log)

    def cluster(self, X) -> "CoNR":
        """Cluster ``X`` with the trained network, without training: features, then the
        run's final clustering with ``n_clusters`` (the final stage without its
        self-labelling, which would train; sets ``labels_`` and the other fitted attributes)."""
        self._check_fitted()
        self._check_params()
        if getattr(self, "input_kind_", "images") == "vectors":
            raise ValueError("cluster(X) re-clusters images with the trained network; for vectors call fit(X), "
                             "or predict(X) to assign new vectors to the fitted clusters")
        data = self.load(X)
        k = self._fixed_k()
        selection = None
        if k is None:  # K unknown: estimated from the trained network's features of X
            selection = estimate_selection(self._features(data).numpy(), self._k_range(len(data)), self.seed)
            k = selection["k"]
        if k > len(data):
            raise ValueError(f"{option('n_clusters', k)} exceeds the number of images ({len(data)}); lower K")
        old = self.trainer_
        cfg = old.cfg
        raw = apply_overrides(config_to_dict(cfg), [f"cluster.n_clusters={int(k)}", "cluster.self_label_epochs=0",
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
        labels, centers = trainer.final_clustering(trainer.last_features)
        if trainer.data.n_labelled:
            from .ops.metrics import evaluate

            metrics.update(evaluate(trainer.data.labels, labels), scored=trainer.data.n_labelled)
        self._set_fitted(trainer, trainer.last_features.cpu(), labels, centers, metrics, list(old.history))
        if selection is not None:
            self.k_selection_ = selection
        return self

    @classmethod
    def from_checkpoint(cls, path, n_clusters: int | None = None, device: str = "auto",
                        verbose: bool = False) -> "CoNR":
        """An estimator holding a saved run's network (a run folder or checkpoint file),
        ready for ``predict`` / ``transform`` / ``cluster``; no images needed."""
        ckpt = load_checkpoint(path, "cpu")
        est = cls(n_clusters=2, verbose=verbose)
        trainer = Trainer.from_checkpoint(path, device=None if device == "auto" else device, log=est._log,
                                          images=False, ckpt=ckpt)  # the weights only: no images
        cfg = trainer.cfg
        k = int(n_clusters if isinstance(n_clusters, (int, np.integer)) else cfg.cluster.n_clusters)
        est.set_params(n_clusters=k, method=cfg.method, image_size=cfg.data.image_size, device=cfg.train.device,
                       seed=cfg.train.seed)
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
        from .ops.boundary import boundary_ratio

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
            from .auto.vectors import vector_features

            return vector_features(self, X)
        data = self.load(X)
        trainer = self.trainer_
        images = match_channels(data.images, trainer.data.channels)  # any input works with the network
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
        from .cluster.partition import assign_new

        if getattr(self, "cluster_centers_", None) is None:
            raise NotFittedError("no cluster centres: call fit(X) or cluster(X) first")
        return assign_new(feats, torch.from_numpy(self.cluster_centers_), getattr(self, "_reference", None),
                          self.trainer_.cfg.cluster.metric)

    def fit_predict(self, X, y=None, **kwargs) -> np.ndarray:
        return self.fit(X).labels_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = []  # features are float32 whatever the input's dtype
        tags.input_tags.sparse = False
        return tags

