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

from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
from sklearn.exceptions import NotFittedError as _SklearnNotFittedError
from torch import Tensor

from .auto.k_selection import K_CRITERION, K_SELECTION_FILE, estimate_selection, read_k_selection
from .auto.resolve import fixed_k, k_range, user_settings
from .config import apply_overrides, config_from_dict, config_to_dict
from .data.convert import as_image_data, match_channels, resolve_device_type, square_crop, survey_input
from .engine import Trainer, load_checkpoint
from .options import option
from .threads import torch_threads

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
            conr/engine/vectors.py); ``auto`` takes a 2-D table as images only when unambiguous (D = H*H
            or 3*H*H, H >= 8, pixel values). ``input_kind_`` says which path was taken.
        encoder: images only: ``auto`` (colour photos -> the embedded ImageNet encoder, grey
            images -> trained from scratch; conr/auto/photos.py), ``none`` (from scratch), or an
            encoder's name (``efficientnet_lite0``, ``timm:NAME``, ``torchvision:NAME``,
            ``open_clip:ARCH/TAG``; conr/encoders/): CoNR then trains on its features.
        encoder_weights: a local state-dict file for the encoder (no network needed).

    Attributes after ``fit``: ``run_record_`` (the run's settings, each with where it came
    from: conr/auto/record.py), ``timings_`` (seconds: extraction where an encoder ran, before
    training, training, the final stage's candidates, total), ``n_clusters_`` (the K used), ``k_selection_`` (with an
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
                 verbose: bool = False, image_shape: tuple | None = None, input: str = "auto",
                 encoder: str = "auto", encoder_weights: str | None = None):
        self.n_clusters = n_clusters
        self.encoder = encoder
        self.encoder_weights = encoder_weights
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
        from .engine.setup import resolve_device

        resolve_device(self.device)   # a device this machine lacks is named before any work
        if not isinstance(self.encoder, str) or not self.encoder:
            raise ValueError(f"encoder={self.encoder!r}: give 'auto', 'none' or an encoder's name (conr.encoders.ENCODERS)")
        if self.encoder_weights is not None and not Path(self.encoder_weights).is_file():
            raise FileNotFoundError(f"encoder_weights={self.encoder_weights!r}: no such file; give a saved state dict "
                                    f"(.pth, .pt, .bin or .safetensors)")

    def _log(self, *args) -> None:
        if self.verbose:
            print(*args)

    def load(self, X):
        """The input as the fitted network takes it: ImageData at its size and channels (before
        a fit: ``image_size`` or the automatic size, the input's channels), or for a run on an
        encoder's features, the encoder's features of the images (a VectorData, cached)."""
        if getattr(self, "input_kind_", None) == "encoder":
            from .auto.photos import photo_data

            return photo_data(X, self._fitted_encoder(), on_bad_image=self.on_bad_image, verbose=self.verbose,
                              log=self._log)
        size, channels = self.image_size, None
        if hasattr(self, "trainer_"):
            size, channels = self.trainer_.cfg.data.image_size, self.trainer_.cfg.data.channels
        return as_image_data(X, size, self.on_bad_image, resolve_device_type(self.device), channels=channels,
                             image_shape=self.image_shape)

    # ------------------------------------------------------------ API
    def fit(self, X, y=None) -> "CoNR":
        """Train on ``X`` (any accepted input) and cluster it. ``y`` is ignored
        (ground truth, when wanted for scores, comes with an ImageData or class folders)."""
        started = time.perf_counter()  # the budget counts start-up and loading too
        with torch_threads(None):  # a run the budget sized at fewer threads gives the caller's count back
            return self._fit(X, started)

    def _fit(self, X, started: float) -> "CoNR":
        for attr in [a for a in vars(self) if a.endswith("_") and not a.startswith("_")]:
            delattr(self, attr)  # a refit starts from nothing
        from .auto.fit import fit_images, fit_vectors
        from .data.vectors import VectorData, check_vectors, input_kind

        kind, why = input_kind(X, self.input, self.image_shape)
        if kind == "vectors":
            arr = check_vectors(self, X, reset=True)  # scikit-learn's checks of X come before the parameters'
            self._check_params()
            if self.backbone not in (None, "mlp"):
                raise ValueError(f"backbone={self.backbone!r} is an image network; vectors train the 'mlp' backbone "
                                 f"(leave backbone=None)")
            n = arr.shape[0]
            labels = X.labels if isinstance(X, VectorData) else torch.full((n,), -1, dtype=torch.long)
            data = VectorData(images=torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)), labels=labels)
            result = fit_vectors(data, self.get_params(), user_settings(self.get_params()), started=started,
                                 log=self._log, input_reason=why)
        else:
            from .auto.photos import choose_encoder, fit_photos

            self._check_params()
            survey = survey_input(X)
            if survey is None and self.encoder == "auto":  # arrays: look at the images themselves
                from .data.survey import survey_images

                survey = survey_images(as_image_data(X, None, self.on_bad_image, image_shape=self.image_shape).images)
            name, reason = choose_encoder(self.encoder, survey)
            self._log(f"input: images ({why}); " + (f"encoder {name}: {reason}" if name else reason))
            user = user_settings(self.get_params())
            if name is not None:
                result = fit_photos(X, self.get_params(), user, started=started, encoder_name=name,
                                    encoder_reason=reason, log=self._log, input_reason=why)
            else:
                result = fit_images(X, self.get_params(), user, started=started, log=self._log, input_reason=why,
                                    survey=survey, more_reasons={"data.encoder": reason})
        self._set_fitted(result.trainer, result.features, result.labels, result.centers, result.metrics,
                         result.history)
        partition = getattr(result.trainer, "partition", None)   # cluster(X) of the run's own images gives it
        self._run_ending = (result.features.float().cpu(), partition) if partition is not None else None
        self.run_record_ = result.record
        self.budget_ = result.budget
        self.timings_ = dict(result.timings)
        self.settings_reasons_ = dict(result.record.reasons)
        if result.record.k_selection is not None:
            self.k_selection_ = dict(result.record.k_selection)
        self.input_kind_ = result.record.input_kind
        return self

    def cluster(self, X) -> "CoNR":
        """Cluster ``X`` with the trained network, without training: features, then the
        run's final clustering with ``n_clusters`` (the final stage without its
        self-labelling, which would train; sets ``labels_`` and the other fitted attributes).
        The run's own images in its order, with its K, get the run's own partition (saved with a
        checkpoint): the same assignments as the run, its warm-up's votes and self-labelling included."""
        self._check_fitted()
        self._check_params()
        if getattr(self, "input_kind_", "images") == "vectors":
            raise ValueError("cluster(X) re-clusters images with the trained network; for vectors call fit(X), "
                             "or predict(X) to assign new vectors to the fitted clusters")
        data = self.load(X)
        k = fixed_k(self.n_clusters)
        selection = None
        if k is None:  # K unknown: estimated from the trained network's features of X
            selection = estimate_selection(self._features(data).numpy(), k_range(self.n_clusters, len(data)),
                                           self.seed)
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
        with torch_threads(None):  # the trainer sets the run's threads; the caller's stay
            trainer = type(old)(config_from_dict(raw), data=data, write=False, log=self._log)  # or VectorTrainer
        trainer.method.load_state_dict(old.method.state_dict())
        trainer.set_normalisation(old.mean, old.std)
        trainer.history = list(old.history)
        trainer.run_dir = old.run_dir
        record = trainer.cluster_step()
        metrics = dict(record)
        own = self._own_ending(trainer.last_features, k)
        if own is not None:   # the run's own images, in its order: its own ending (self-labelling and the
            trainer.partition = own   # warm-up's votes included, which a final stage made here would not have)
            labels, centers = own.labels, own.centers
        else:
            labels, centers = trainer.final_clustering(trainer.last_features)
        if trainer.data.n_labelled:
            from .ops.metrics import evaluate

            metrics.update(evaluate(trainer.data.labels, labels), scored=trainer.data.n_labelled)
        self._set_fitted(trainer, trainer.last_features.cpu(), labels, centers, metrics, list(old.history))
        if selection is not None:
            self.k_selection_ = selection
        return self

    def _own_ending(self, feats: Tensor, k: int):
        """The saved run's Partition where ``feats`` are the run's own final features (the same images in
        the same order, K unchanged), else None."""
        saved = getattr(self, "_run_ending", None)
        if saved is None:
            return None
        run_feats, partition = saved
        feats = feats.float().cpu()
        if k != int(partition.centers.shape[0]) or feats.shape != run_feats.shape \
                or not torch.allclose(feats, run_feats, atol=1e-4):
            return None
        return partition

    @classmethod
    def from_checkpoint(cls, path, n_clusters: int | None = None, device: str = "auto",
                        verbose: bool = False) -> "CoNR":
        """An estimator holding a saved run's network (a run folder or checkpoint file),
        ready for ``predict`` / ``transform`` / ``cluster``; no images needed."""
        ckpt = load_checkpoint(path, "cpu")
        est = cls(n_clusters=2, verbose=verbose)
        vectors = (ckpt.get("config") or {}).get("model", {}).get("backbone") == "mlp"
        if vectors:
            from .engine.vectors import VectorTrainer as trainer_type
        else:
            trainer_type = Trainer
        with torch_threads(None):  # the trainer sets the run's threads; the caller's stay
            trainer = trainer_type.from_checkpoint(path, device=None if device == "auto" else device, log=est._log,
                                                   images=False, ckpt=ckpt)  # the weights only: no images
        cfg = trainer.cfg
        if vectors:
            est.input_kind_ = "encoder" if cfg.data.encoder else "vectors"
            est.n_features_in_ = int(ckpt.get("data", {}).get("channels", 0))
            est.set_params(input="vectors" if not cfg.data.encoder else "auto", encoder=cfg.data.encoder or "auto",
                           encoder_weights=cfg.data.encoder_weights)
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
            if ckpt.get("final_features") is not None:   # cluster(X) of the run's own images gives this ending
                est._run_ending = (ckpt["final_features"].float(), est.partition_)
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

    def _fitted_encoder(self):
        """The encoder of a run on an encoder's features (loaded once, from the run's config)."""
        data_cfg = self.trainer_.cfg.data
        cached = getattr(self, "_encoder_model", None)
        if cached is None or cached[0] != (data_cfg.encoder, data_cfg.encoder_weights):
            from .encoders import load_encoder

            cached = ((data_cfg.encoder, data_cfg.encoder_weights),
                      load_encoder(data_cfg.encoder, weights=data_cfg.encoder_weights))
            self._encoder_model = cached
        return cached[1]

    def _check_fitted(self) -> None:
        if not hasattr(self, "trainer_"):
            raise NotFittedError("this CoNR estimator is not fitted yet; call fit(X) first "
                                 "(or CoNR.from_checkpoint(run_folder))")

    def _features(self, X) -> Tensor:
        self._check_fitted()
        from .data.vectors import VectorData

        kind = getattr(self, "input_kind_", "images")
        if kind == "vectors":
            from .data.vectors import check_vectors

            arr = check_vectors(self, X, reset=False)
            return self.trainer_.extract_features(torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))).cpu()
        if kind == "encoder":  # images through the run's encoder, then the head
            data = X if isinstance(X, VectorData) else self.load(X)
            return self.trainer_.extract_features(data.images).cpu()
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

