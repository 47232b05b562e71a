"""A fit, from an input to a trained, clustered run: what ``CoNR.fit`` runs.

Each path resolves its :class:`~conr.auto.record.RunRecord` once (the user's settings,
the automatic ones, the budget's plan), trains with it and returns a :class:`FitResult`;
nothing is written into the estimator. :func:`fit_images` trains a network on the pixels,
:func:`fit_vectors` an MLP on vectors (a table the user has, or an encoder's features:
:mod:`conr.auto.photos`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from torch import Tensor

from ..cluster.stage import build_final_stage
from ..config import dotted_get
from ..data.base import resize_uint8
from ..data.convert import as_image_data, reload_folder, resolve_device_type
from ..data.mirror import mirror_overlap
from ..data.survey import ImageSurvey, survey_images
from ..engine import Trainer
from ..engine.vectors import VectorTrainer
from ..options import option
from .budget import BudgetPlan, finish_budget, smaller_size, time_budget
from .k_selection import read_k_selection, select_k_after_stage1
from .record import RunRecord
from .resolve import fixed_k, image_settings, k_range, provisional_k, vector_settings
from .settings import default_minutes, default_vector_minutes

__all__ = ["FitResult", "fit_images", "fit_vectors", "check_k"]


@dataclass
class FitResult:
    """What a fit made: its record, the trainer (weights, data, history), the final
    features, labels and centres, the scores (with labels known) and the budget's record."""
    record: RunRecord
    trainer: Trainer
    features: Tensor
    labels: Tensor
    centers: Tensor
    metrics: dict
    history: list = field(default_factory=list)
    budget: dict | None = None
    timings: dict = field(default_factory=dict)   # seconds: before training, training, final stage, total


def check_k(n_clusters, n: int, what: str = "images") -> int | None:
    """The K given (None: to estimate), checked against the number of rows."""
    k = fixed_k(n_clusters)
    if k is not None and k > n:
        raise ValueError(f"{option('n_clusters', k)} exceeds the number of {what} ({n}); lower K")
    if k is None and n < 3:
        raise ValueError(f"{n} {what}: estimating K needs at least 3")
    return k


def check_distinct(rows, k: int | None, what: str = "samples") -> None:
    """K distinct rows at least: copies of one row cannot be told apart, so fewer distinct rows than
    K clusters would be split at random (50 equal rows put into 3 clusters). Stops at the K-th
    distinct row, so a usual input costs K rows' bytes."""
    if k is None:
        return
    rows = np.ascontiguousarray(np.asarray(rows).reshape(len(rows), -1))
    seen = set()
    for row in rows:
        seen.add(row.tobytes())
        if len(seen) >= k:
            return
    raise ValueError(f"only {len(seen)} distinct {'row' if len(seen) == 1 else 'rows'} among the {len(rows)} "
                     f"{what} (the rest repeat them): {option('n_clusters', k)} needs at least {k}; lower K or "
                     f"check the input")


def _saved_epochs(run_dir) -> int | None:
    """The epochs of the run a resumed fit continues (its config.yaml), or None."""
    saved = Path(run_dir) / "config.yaml" if run_dir is not None else None
    if saved is None or not saved.exists():
        return None
    import yaml

    return (yaml.safe_load(saved.read_text()) or {}).get("train", {}).get("epochs")


def _budgeted(params: dict, user: dict) -> bool:
    return not user.get("train", {}).get("epochs") and not (params["resume"] and _saved_epochs(params["run_dir"]))


def _train(record: RunRecord, trainer: Trainer, params: dict, started: float, log,
           timings: dict | None = None) -> FitResult:
    """Stage 1 and K where K is estimated, then the rest of the training and the final
    clustering; budget.json where there is a budget. ``timings``: seconds of steps before
    (an encoder's extraction), kept with the run's own."""
    n = len(trainer.data)
    before = time.perf_counter() - started
    if record.k_selection is None and fixed_k(params["n_clusters"]) is None:
        record = record.with_k(select_k_after_stage1(trainer, k_range(params["n_clusters"], n), log=log,
                                                     stage2_for_k=record.neighbourhood_for))
    result = trainer.fit()
    budget = None
    if record.budget is not None:  # the time taken, why it ended early if it did, budget.json
        budget = finish_budget(record.budget, started, record.config.train.epochs,
                               trainer.run_dir if trainer.write else None, log,
                               pins=record.repeat_pins(trainer.epoch))
    partition = trainer.partition
    times = {**(timings or {}), "before_training": round(before, 1),
             "training": round(sum(r.get("epoch_seconds", 0.0) for r in result.history), 1),
             "final_stage_candidates": round(sum(c.get("seconds", 0.0) for c in partition.candidates), 1)
             if partition is not None and partition.candidates else 0.0,
             "seed_candidates": round(sum(c.get("seconds", 0.0) for c in trainer.seed_candidates), 1),
             "total": round(time.perf_counter() - started, 1)}
    return FitResult(record=record, trainer=trainer, features=result.features, labels=result.labels,
                     centers=result.centers, metrics=result.metrics, history=result.history, budget=budget,
                     timings=times)


def fit_images(X, params: dict, user: dict, *, started: float, log=print, input_reason: str = "images",
               survey: ImageSurvey | None = None, more_reasons: dict | None = None) -> FitResult:
    """Train a network on the images ``X`` (anything :func:`conr.data.convert.as_image_data`
    takes) with CoNR and cluster them. ``params``: the estimator's parameters; ``user``: the
    user's settings (:func:`conr.auto.resolve.user_settings`); ``started``: when the fit began
    (perf_counter; the budget counts from it); ``survey``: the look at the input (sizes, grey);
    ``more_reasons``: {key: why} of choices made before (the encoder rule's)."""
    device_type = resolve_device_type(params["device"])
    data_user = user.get("data", {})
    channels = data_user.get("channels") or (None if survey is None else (1 if survey.grey else 3))
    data = as_image_data(X, data_user.get("image_size"), params["on_bad_image"], device_type, channels=channels,
                         image_shape=params.get("image_shape"))
    if channels == 1 and data.channels == 3:  # grey images handed over as RGB
        data = replace(data, images=data.images[:, :1].contiguous())
    if len(data) == 0:
        raise ValueError("no images to cluster: the input is empty")
    given_k = check_k(params["n_clusters"], len(data))
    if isinstance(data.images, Tensor):   # a streamed folder's files are read by the training, not here
        check_distinct(data.images.numpy(), given_k, "images")
    k = given_k or provisional_k(params["n_clusters"], len(data))
    root = X if isinstance(X, (str, Path)) else None
    look = survey or survey_images(data.images)
    look = ImageSurvey(n_images=len(data), shorter_sides=look.shorter_sides, grey=data.channels == 1,
                       mirror_overlap=mirror_overlap(data.images.numpy(), seed=int(params["seed"])))
    seed = int(params["seed"])
    selection = read_k_selection(params["run_dir"]) if given_k is None and params["resume"] and \
        params["run_dir"] is not None else None
    if selection is not None:  # a resumed run keeps the K it chose
        k = int(selection["k"])

    def settings(data, budget=None, epochs=None):
        return image_settings(user, look, data, device_type=device_type, k=k, root=root,
                              on_bad_image=params["on_bad_image"], budget=budget, epochs=epochs)

    cfg, auto, reasons = settings(data)
    if cfg.data.normalization is not None:
        data.normalization = cfg.data.normalization
    minutes = float(params["minutes"] or default_minutes(len(data), device_type))
    budgeted = _budgeted(params, user)
    stage = None
    if cfg.cluster.final == "auto":  # the input's candidates, made and timed before training
        layouts_given = dotted_get(user, "cluster.consensus_runs") is not None
        stage = build_final_stage(data, cfg.cluster, seed, log=log,
                                  minutes=minutes if budgeted and not layouts_given else None)
        stage.prepare()
    plan = None
    if not budgeted:
        cfg, auto, reasons = settings(data, epochs=_saved_epochs(params["run_dir"]) if params["resume"] else None)
    else:
        def timed(data, cfg):
            return time_budget(cfg, data, minutes, started, checkpoints=params["run_dir"] is not None,
                               input_seconds=(stage.input_seconds or 0.0) if stage else 0.0,
                               compile_seconds=stage.compile_seconds if stage else 0.0, log=log)

        timing = timed(data, cfg)
        reduced_from = None
        size = smaller_size(timing, data_user.get("image_size"))
        if size is not None:
            log(f"time budget: {timing.epochs} epochs at {data.image_size} px are too few; training at {size} px "
                f"instead")
            reduced_from = data.image_size
            # reloaded from the source at the new size where there is one (a folder): exactly the
            # images a repeat with data.image_size=<size> loads
            data = reload_folder(root, size, data, params["on_bad_image"]) if root is not None else \
                replace(data, images=resize_uint8(data.images, size))
            cfg, auto, reasons = settings(data)
            timing = timed(data, cfg)
        plan = BudgetPlan.decide(timing, minutes, started, default_layouts=cfg.cluster.consensus_runs,
                                 layouts=stage.consensus_runs if stage is not None and stage.inputs is not None
                                 else None, reduced_from_size=reduced_from)
        cfg, auto, reasons = settings(data, budget=plan)
    record = RunRecord(input_kind="images", input_reason=input_reason, user=user, automatic=auto,
                       reasons={**(more_reasons or {}), **reasons}, config=cfg, budget=plan, k_selection=selection,
                       n_rows=len(data))
    trainer = Trainer(record.config, data=data, run_dir=params["run_dir"], resume=params["resume"],
                      write=params["run_dir"] is not None, log=log, notes=record.notes(), final_stage=stage,
                      k_provisional=given_k is None and selection is None)
    return _train(record, trainer, params, started, log)


def fit_vectors(data, params: dict, user: dict, *, started: float, log=print, input_reason: str = "vectors",
                encoder: dict | None = None, more_reasons: dict | None = None,
                data_section: dict | None = None, timings: dict | None = None) -> FitResult:
    """Train an MLP with CoNR on the rows of ``data`` (a VectorData: a table the user has, or
    an encoder's features) and cluster them, with the same final stage as images (the input
    rows among its candidates) and, with ``minutes`` given or an encoder's features, a time
    budget (``started``: when the fit began; an encoder's extraction counts). ``encoder``: the
    spec of the encoder whose features the rows are; ``data_section``: the config's data
    fields for them (conr/auto/photos.py); ``more_reasons``: {key: why} of choices made before."""
    n = len(data)
    given_k = check_k(params["n_clusters"], n, "images" if encoder is not None else "samples")
    check_distinct(data.images.numpy(), given_k, "images" if encoder is not None else "samples")
    k = given_k or provisional_k(params["n_clusters"], n)
    seed = int(params["seed"])
    cfg, auto, reasons = vector_settings(user, n, k=k, data=data_section)
    budgeted = _budgeted(params, user)
    device_type = resolve_device_type(params["device"])
    # the budget counts what came before (an encoder's extraction): by default that, and the vectors' own
    minutes = float(params["minutes"] or (time.perf_counter() - started) / 60 + default_vector_minutes(n, device_type))
    stage = None
    if cfg.cluster.final == "auto":
        layouts_given = dotted_get(user, "cluster.consensus_runs") is not None
        stage = build_final_stage(data, cfg.cluster, seed, log=log,
                                  minutes=minutes if budgeted and not layouts_given else None)
        stage.prepare()
    plan = None
    if budgeted:
        timing = time_budget(cfg, data, minutes, started, trainer_type=VectorTrainer,
                             checkpoints=params["run_dir"] is not None,
                             input_seconds=(stage.input_seconds or 0.0) if stage else 0.0,
                             compile_seconds=stage.compile_seconds if stage else 0.0, log=log)
        plan = BudgetPlan.decide(timing, minutes, started, default_layouts=cfg.cluster.consensus_runs,
                                 layouts=stage.consensus_runs if stage is not None and stage.inputs is not None
                                 else None)
        cfg, auto, reasons = vector_settings(user, n, k=k, budget=plan, data=data_section)
    elif params["resume"]:
        cfg, auto, reasons = vector_settings(user, n, k=k, epochs=_saved_epochs(params["run_dir"]), data=data_section)
    record = RunRecord(input_kind="encoder" if encoder is not None else "vectors", input_reason=input_reason,
                       user=user, automatic=auto, reasons={**(more_reasons or {}), **reasons}, config=cfg,
                       budget=plan, encoder=encoder, n_rows=n)
    log(f"input: {record.input_kind} ({input_reason}); {n} x {data.n_features}, mlp backbone, "
        f"{cfg.train.epochs} epochs, batch {cfg.train.batch_size}")
    trainer = VectorTrainer(record.config, data, run_dir=params["run_dir"], resume=params["resume"],
                            write=params["run_dir"] is not None, log=log, notes=record.notes(), final_stage=stage,
                            k_provisional=given_k is None)
    return _train(record, trainer, params, started, log, timings)
