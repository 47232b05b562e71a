"""From what the user asked and what the input is to a run's configuration, as pure
functions: the user's settings (read once a fit, :func:`user_settings`), then the
configuration of a run on images (:func:`image_settings`) or on vectors
(:func:`vector_settings`), each with the reasons for its automatic choices. The time
budget's plan, where there is one, is an input like the others: its decisions apply over
the automatic settings, never over the user's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from ..cluster.kselect import parse_k
from ..config import AugmentSection, Config, apply_overrides, check_config_keys, config_from_dict, deep_merge, dotted_get, read_yaml, resolve_config_path
from ..data.survey import ImageSurvey, pick_image_size
from .budget import BudgetPlan
from .settings import auto_settings, neighbourhood_sizes, within_clusters

__all__ = ["user_settings", "fixed_k", "provisional_k", "k_range", "image_settings", "vector_settings",
           "default_vector_epochs"]


def fixed_k(n_clusters) -> int | None:
    """The K given (an int), else None (``"auto"`` or a range: estimated)."""
    k = parse_k(n_clusters)
    return k if isinstance(k, int) else None


def k_range(n_clusters, n_images: int) -> tuple[int, int]:
    """The candidates for K: the range given, or the default for ``n_images`` ("auto"),
    capped below the number of images."""
    from ..cluster.kselect import default_k_range

    k = parse_k(n_clusters)
    lo, hi = default_k_range(n_images) if k == "auto" else k
    return lo, min(hi, max(lo, n_images - 1))


def provisional_k(n_clusters, n_images: int) -> int:
    """The K stage 1 monitors with while K is still unknown: 10, clamped into the range."""
    lo, hi = k_range(n_clusters, n_images)
    return int(min(max(10, lo), hi))


def user_settings(params: Mapping) -> dict:
    """The settings the user chose, nested as a config is: the config file (read here, once
    a fit), the estimator's arguments, then the overrides (``section.key=value``, last).
    ``params``: the estimator's parameters (``get_params()``)."""
    raw: dict = read_yaml(resolve_config_path(params["config"])) if params.get("config") else {}
    explicit = [f"method={params['method']}", f"train.seed={int(params['seed'])}", f"train.device={params['device']}"]
    k = fixed_k(params["n_clusters"])
    if k is not None:
        explicit.append(f"cluster.n_clusters={k}")
    if params.get("deterministic"):
        explicit.append("train.deterministic=true")
    if not params.get("verbose"):
        explicit.append("run.progress=false")
    for key, name in (("data.image_size", "image_size"), ("model.backbone", "backbone"), ("train.epochs", "epochs"),
                      ("train.batch_size", "batch_size"), ("train.lr", "lr")):
        if params.get(name) is not None:
            explicit.append(f"{key}={params[name]}")
    settings = apply_overrides(raw, explicit + list(params.get("overrides") or []))
    check_config_keys(settings)   # a typo is named now, not after the images are read
    return settings


def _apply_budget(auto: dict, why: dict, budget: BudgetPlan | None) -> None:
    if budget is None:
        return
    for key, value in budget.overrides().items():
        section, name = key.split(".")
        auto.setdefault(section, {})[name] = value
    why.update(budget.reasons)


def _merge(auto: dict, user: dict, budget: BudgetPlan | None) -> dict:
    """The user's settings over the automatic ones; ``train.threads=auto`` becomes the count the
    budget chose (one thread where timing found it faster; else it stays, and torch's count runs)."""
    raw = deep_merge(auto, user)
    if budget is not None and budget.threads and raw.get("train", {}).get("threads") == "auto":
        raw["train"]["threads"] = budget.threads
    return raw


def _reasons(why: dict, user: dict) -> dict:
    """The reasons of the settings the user left to the rules, unset or ``auto`` (the epochs
    always: the user's choice is a reason too)."""
    return {k: v for k, v in why.items() if dotted_get(user, k) in (None, "auto") or k == "train.epochs"}


def image_settings(user: dict, survey: ImageSurvey, data, *, device_type: str, k: int, root=None,
                   on_bad_image: str = "skip", budget: BudgetPlan | None = None,
                   epochs: int | None = None) -> tuple[Config, dict, dict]:
    """The configuration of a run on the images ``data`` (an ImageData, as loaded):
    automatic settings for ``survey`` and ``k`` (:func:`conr.auto.settings.auto_settings`),
    the ``budget``'s decisions over them, the user's settings over both. ``root``: the folder
    the images came from (recorded so that ``conr plot`` can reload them); ``epochs``: the
    length of the run a resumed run continues. Returns (config, automatic, reasons)."""
    t = user.get("train", {})
    auto_size = data.image_size == pick_image_size(survey.native_size, device_type)
    length = t.get("epochs") or (budget.epochs if budget is not None else epochs)
    auto, why = auto_settings(survey, k, device_type, epochs=length, batch_size=t.get("batch_size"),
                              image_size=None if auto_size else data.image_size)
    if t.get("epochs"):
        why["train.epochs"] = "chosen by the user"
    elif budget is not None:
        why["train.epochs"] = f"sized to the {budget.minutes:g}-min time budget"
    elif epochs is not None:
        why["train.epochs"] = "the length of the run it continues"
    if not auto_size:
        why["data.image_size"] = "chosen by the user"
    _apply_budget(auto, why, budget)
    if dotted_get(user, "cluster.n_clusters") is None:
        why["cluster.n_clusters"] = "provisional while stage 1 trains; estimated after it"
    raw = _merge(auto, user, budget)
    if raw["model"].get("backbone") != "small_cnn" and "width" not in user.get("model", {}):
        raw["model"].pop("width", None)  # the automatic small_cnn width means nothing to a ResNet
    d = raw.setdefault("data", {})
    d.update(image_size=data.image_size, channels=data.channels, on_bad_image=on_bad_image)
    if root is not None:
        d.update(name="imagefolder", root=str(Path(root).resolve()), split="all", subset=None)
    else:  # in-memory images: the config names no dataset that could be reloaded
        d.update(name="numpy", root=None, split="all", subset=None)
    return config_from_dict(raw), auto, _reasons(why, user)


def default_vector_epochs(n: int, batch_size: int) -> int:
    """About 1,000 optimiser steps, within 30..200 epochs."""
    steps = max(1, n // batch_size)
    return int(min(200, max(30, round(1000 / steps))))


VIEW_NEIGHBORS = AugmentSection.view_neighbors   # the most nearest rows a view of a vector is drawn from


def view_neighbors(n: int, k: int) -> int:
    """How many of a row's nearest rows (itself included) its views are drawn from: at most
    half the members a cluster expects (N / K), so that most views come from the row's own
    cluster, and at most :data:`VIEW_NEIGHBORS`; at least 2 (the row and its nearest)."""
    return int(max(2, min(VIEW_NEIGHBORS, (n // max(1, k)) // 2)))


def vector_settings(user: dict, n: int, *, k: int, budget: BudgetPlan | None = None,
                    epochs: int | None = None, data: dict | None = None) -> tuple[Config, dict, dict]:
    """The configuration of a run on N vectors: the ``mlp`` backbone (D -> 512 -> 128), BYOL
    for the first 60 % of the epochs, then CoNR (kept fraction relaxed to 1 over the next
    15 %), earlier where the warm-up's signal says so (``stage2.warmup_end``, checked every 5 %
    of the epochs); batch clamped to N; CoNR's neighbourhood as on images, half a cluster's
    expected members in a batch (:func:`conr.auto.settings.neighbourhood_sizes`), kept within a
    pseudo-cluster where clusters are small (:func:`conr.auto.settings.within_clusters`); views from the nearest rows, at
    most half a cluster's expected members (:func:`view_neighbors`); the final stage with the vectors
    themselves among its candidates. The ``budget`` (or the run it continues, ``epochs``)
    sizes the epochs where the user did not; ``data``: what the config's data section says of
    the rows (an encoder's name and the folder its images came from). Returns (config,
    automatic, reasons)."""
    t = user.get("train", {})
    b = int(min(t.get("batch_size") or 256, n))
    if b < 2:
        raise ValueError(f"{n} vectors: training needs at least 2")
    e = int(t.get("epochs") or (budget.epochs if budget is not None else epochs or default_vector_epochs(n, b)))
    start = min(e - 1, int(0.6 * e))
    neighbourhood, why_k = neighbourhood_sizes(b, k)
    neighbourhood["same_cluster"], why_same = within_clusters(n, k)
    views = view_neighbors(n, k)
    why = {"model.backbone": "vectors: an MLP (D -> 512 -> 128) under BYOL's projector and predictor",
           "train.batch_size": f"256 vectors a batch, at most the {n} given",
           "stage2.k": why_k,
           "stage2.same_cluster": why_same,
           "train.epochs": ("chosen by the user" if t.get("epochs") else
                            f"sized to the {budget.minutes:g}-min time budget" if budget is not None else
                            "the length of the run it continues" if epochs else
                            "about 1,000 optimiser steps, within 30..200 epochs"),
           "stage2.start_epoch": "CoNR's stage 2 takes the last 40 % of the epochs (BYOL before it)",
           "stage2.warmup_end": ("or starts earlier, where k-means of the warm-up's features falls below half its best "
                                 "silhouette in the input's layout (the head outstaying its use: "
                                 "conr/engine/warmup_end.py), measured every 5 % of the epochs"),
           "augment.view_neighbors": (f"a view of a vector is one of its {views} nearest rows (itself included): at "
                                      f"most half the {n // max(1, k)} members a cluster expects, at most "
                                      f"{VIEW_NEIGHBORS}"),
           "cluster.final": ("final labels chosen without labels among k-means, spectral and UMAP + GMM partitions "
                             "of the network's features and of the vectors themselves"),
           "cluster.stage2_seed": "CoNR's stage 2 starts from the best label-free partition, not k-means of weak "
                                  "features"}
    auto = {
        "data": {"name": "vectors", **(data or {})},
        "augment": {"view_neighbors": views},
        "model": {"backbone": "mlp", "width": 512, "hidden_dim": 512, "proj_dim": 128},
        "train": {"epochs": e, "batch_size": b, "lr": 0.2, "warmup_epochs": max(1, min(10, e // 10)),
                  "ema_base": 0.99, "channels_last": False},
        "stage2": {"start_epoch": start, "t_end": min(e, start + max(1, int(0.15 * e))), **neighbourhood,
                   "lr_factor": 1.0, "predictor_lr_factor": 1.0, "warmup_end": "signal"},
        "cluster": {"n_clusters": int(k), "flip_average": False, "n_init": 5, "eval_every": max(1, e // 20),
                    "final": "auto", "stage2_seed": "final", "self_label_epochs": 0},
        "run": {"tensorboard": False, "log_every": 50},
    }
    _apply_budget(auto, why, budget)
    if dotted_get(user, "cluster.n_clusters") is None:
        why["cluster.n_clusters"] = "provisional while stage 1 trains; estimated after it"
    given = {section: dict(values) for section, values in user.items() if isinstance(values, dict)}
    given.pop("data", None)  # an image size or folder means nothing to vectors
    if "batch_size" in given.get("train", {}):
        given["train"]["batch_size"] = b  # at most the N vectors
    given.get("model", {}).pop("backbone", None)  # checked by the caller: vectors train the mlp
    given.update({key: value for key, value in user.items() if not isinstance(value, dict)})
    raw = _merge(auto, given, budget)
    return config_from_dict(raw), auto, _reasons(why, user)

