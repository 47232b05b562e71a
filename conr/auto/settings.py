"""Training settings that follow from a user's images and time budget.

``conr cluster`` and :class:`conr.CoNR` look at the images first (:func:`survey_files`,
:func:`survey_images`: how many, their native resolution, grey or colour) and derive
every setting from that look (:func:`auto_settings`); each choice comes with the
reason for it, written into the run's ``config.yaml`` (``auto_settings.yaml``) and
shown in the report. The rules, in short:

* **image size**: the median shorter side, rounded down to a multiple of 4: never
  upsampled, except to the 16 px the network needs (two pooling stages plus a crop),
  and capped at 32 px on a CPU and 64 px on a GPU; when the time budget buys fewer
  than 60 epochs at that size, smaller images are trained instead (a step costs
  about its pixels: more epochs beat more pixels in a short budget);
* **channels**: a folder whose images are all grey is trained on one channel, with
  brightness / contrast jitter only (no saturation, hue or grey-conversion);
* **crops**: the smallest crop keeps a side of at least ~12 native pixels
  (RandomResizedCrop scale ``[(12 / side)², 1]``, within 0.08..0.5): strong crops for
  large images, mild ones for tiny images where a crop of 8 % would leave no object;
* **batch and neighbourhood**: the batch holds ~4 images of each cluster on average
  (64..256 on a CPU, 256..512 on a GPU, never more than the images); the
  CoNR neighbourhood k is half the expected members of a cluster in a batch (1..10),
  so 40 clusters of 10 images still get true neighbours (:func:`neighbourhood_sizes`, for
  vectors too); where a cluster expects fewer than 40 images those neighbours are kept within
  the sample's pseudo-cluster (:func:`within_clusters`);
* **length**: epochs from the time budget (:mod:`conr.auto.budget` measures the step) or,
  without one, from a budget of image passes; CoNR's stage 2 takes the last 40 % of
  the epochs (its boundary filter relaxed over the first half of it);
* **clustering**: features averaged over each image and its mirror (flips are part of
  the training views, so the two should agree; averaging steadies the neighbourhoods);
  k-means with 10 restarts (lowest inertia) for the pseudo-labels CoNR
  trains with; the final labels by spectral clustering of the features' k-NN graph
  (:mod:`conr.cluster.spectral`), which follows elongated clusters that k-means cuts.
"""
from __future__ import annotations

import math

from ..cluster.policy import SELF_LABEL_MIN_MEMBERS, SMALL_CLUSTER_MEMBERS
from ..data.survey import CPU_MAX_SIZE, GPU_MAX_SIZE, MIN_NET_SIZE, ImageSurvey, pick_image_size

__all__ = ["auto_settings", "neighbourhood_sizes", "within_clusters",
           "self_label_epochs",
           "default_minutes", "default_vector_minutes", "schedule_for_epochs", "MIN_BUDGET_EPOCHS"]

MIN_BUDGET_EPOCHS = 60      # fewer epochs than this in the budget: train smaller images instead
CPU_PASS_BUDGET = 120_000   # image passes at 32 px when no time budget is measured
GPU_PASS_BUDGET = 10_000_000
STAGE2_SHARE = 0.4          # CoNR stage 2 = the last 40 % of the epochs


def default_minutes(n_images: int, device_type: str = "cpu") -> float:
    """The default time budget: 1 min per 1,000 images on a CPU, within 6 to 10 min;
    1 min per 10,000 on a GPU (5 to 60 min). The CPU floor comes from the measured
    curve (benchmarks/budget_curve.py, docs/time-budget.md): on scikit-learn's
    1,797 digits, 1.5 / 3 / 6 minutes on 2 cores gave ACC 0.81 / 0.86 / 0.96, and only
    6 beat the raw pixels' UMAP + GMM (0.88)."""
    if device_type == "cuda":
        return float(min(60.0, max(5.0, n_images / 10_000)))
    return float(min(10.0, max(6.0, n_images / 1_000)))


def default_vector_minutes(n_rows: int, device_type: str = "cpu") -> float:
    """The default time budget of a run on N vectors (embeddings, or an encoder's features,
    whose extraction is counted on top): 1 min per 1,000 rows on a CPU, as for images, but
    from 3 min (an MLP step costs a fraction of a CNN's: small sets need less), at most 10;
    1 min per 10,000 on a GPU (2 to 20 min). On CIFAR-10's 10,000 test photos 5 minutes
    bought 64 epochs and ACC 0.495 (one seed), 6 minutes 128 epochs and 0.538."""
    if device_type == "cuda":
        return float(min(20.0, max(2.0, n_rows / 10_000)))
    return float(min(10.0, max(3.0, n_rows / 1_000)))


def neighbourhood_sizes(batch: int, n_clusters: int) -> tuple[dict, str]:
    """CoNR's neighbourhood in a batch, ``{"k", "k1", "k2"}``, and the reason for it: k (self
    included) is half the members a cluster expects in a batch of ``batch`` (``batch /
    n_clusters``), within 1..10, so that most of a sample's neighbours can come from its own
    cluster (40 clusters of 10 images in a batch of 256 hold ~6 of each: k = 3); the ranking
    lists as long (k1 = k), query expansion over two rows (k2, at most k). k stays under the
    batch (at most half of it, rounded). Images and vectors alike."""
    per_cluster = batch / max(1, int(n_clusters))
    k = int(min(10, max(1, round(per_cluster / 2))))
    return ({"k": k, "k1": k, "k2": min(2, k)},
            f"half of the ~{per_cluster:.1f} members of a cluster in a batch of {batch} (1..10)")


def within_clusters(n_rows: int, n_clusters: int) -> tuple[bool, str]:
    """Whether stage 2 keeps a sample's neighbours within its pseudo-cluster
    (``stage2.same_cluster``: a neighbour the pseudo-labels put in another cluster is replaced by
    the sample itself), and why: where a cluster expects fewer than
    :data:`~conr.cluster.policy.SMALL_CLUSTER_MEMBERS` of the ``n_rows`` (``n_rows / n_clusters``).

    Measured as paired whole runs (docs/results.md, "Small clusters keep their neighbours"): on
    ORL's 40 people of 10 faces only 56 % of stage 2's in-batch neighbours were of the anchor's
    class, and those the pseudo-labels put elsewhere only 14 %; kept within the pseudo-cluster, ORL
    gained 0.5 points (6 runs, 3 ahead, 1 behind) and a held-back COIL-20 of 11 views an object
    0.6 (6 runs, 1 ahead, none behind). Where clusters are large it was level (COIL-20's 72 views,
    digits' 180) or lost (CIFAR-10's 1,000 photos 0.8 points, the COIL-20 vectors 2.0)."""
    members = n_rows / max(1, int(n_clusters))
    small = members < SMALL_CLUSTER_MEMBERS
    return small, (f"a cluster expects {members:.0f} members, "
                   + (f"fewer than {SMALL_CLUSTER_MEMBERS}: neighbours of another pseudo-cluster are left out"
                      if small else f"at least {SMALL_CLUSTER_MEMBERS}: every in-batch neighbour counts"))


def self_label_epochs(epochs: int) -> int:
    """Epochs of the self-labelling stage: a quarter of the training's, within 5..50
    (an epoch of it costs about a quarter of a training epoch: half the images, one view)."""
    return int(min(50, max(5, round(0.25 * epochs))))


def _pow2_ceil(x: float) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1.0, x))))


def schedule_for_epochs(epochs: int) -> dict:
    """Stage-2 start, relaxation end, warm-up and evaluation cadence for ``epochs``."""
    epochs = max(1, int(epochs))
    start = min(epochs - 1, max(1, round((1 - STAGE2_SHARE) * epochs))) if epochs > 1 else 0
    t_end = min(epochs, start + max(1, round(0.5 * (epochs - start))))
    return {"train": {"epochs": epochs, "warmup_epochs": int(round(0.05 * epochs))},
            "stage2": {"start_epoch": int(start), "t_end": int(t_end)},
            "cluster": {"eval_every": max(1, epochs // 10)}}


def auto_settings(survey: ImageSurvey, n_clusters: int, device_type: str = "cpu", *,
                  epochs: int | None = None, batch_size: int | None = None,
                  image_size: int | None = None) -> tuple[dict, dict]:
    """The automatic config (nested plain data) and the reason for each choice
    ({dotted key: reason}). ``epochs`` / ``batch_size`` / ``image_size``: values the
    user fixed; the rest follows them."""
    gpu = device_type == "cuda"
    n, k_clusters = survey.n_images, int(n_clusters)
    members = n / k_clusters                    # images a cluster expects
    small, why_small = within_clusters(n, k_clusters)
    self_label = not small                      # enough of them for a cluster head to learn from
    why: dict[str, str] = {}
    native = survey.native_size
    size = int(image_size or pick_image_size(native, device_type))
    if image_size is None:
        cap = GPU_MAX_SIZE if gpu else CPU_MAX_SIZE
        why["data.image_size"] = (f"median shorter side {native} px" + (
            f", raised to the {MIN_NET_SIZE} px the network needs" if size > native else
            f", capped at {cap} px on a {'GPU' if gpu else 'CPU'}" if size < 4 * (native // 4) else
            ", kept (never upsampled)"))
    channels = 1 if survey.grey else 3
    why["data.channels"] = "all sampled images are grey: one channel" if survey.grey else "colour images: RGB"

    cap_batch, min_batch = (512, 256) if gpu else (256, 64)
    batch = batch_size or int(min(n, cap_batch, max(min_batch, _pow2_ceil(4 * k_clusters))))
    if batch_size is None:
        why["train.batch_size"] = (f"~4 images per cluster on average (K={k_clusters}), within "
                                   f"{min_batch}..{cap_batch}"
                                   + (f", at most the {n} images" if batch == n else ""))
    neighbourhood, why["stage2.k"] = neighbourhood_sizes(batch, k_clusters)
    neighbourhood["same_cluster"], why["stage2.same_cluster"] = small, why_small

    s_min = float(min(0.5, max(0.08, (12.0 / max(1, native)) ** 2)))
    why["augment.scale"] = f"smallest crop keeps a side of ~12 of the {native} native px"
    augment = {"scale": [round(s_min, 3), 1.0]}
    if survey.grey:
        augment.update(jitter=[0.4, 0.4, 0.0, 0.0], gray_p=0.0)
        why["augment.jitter"] = "grey images: brightness and contrast only, no saturation / hue / grey-conversion"
    flip = True
    if survey.mirror_overlap is not None:
        from ..data.mirror import MIRROR_OVERLAP_MIN

        flip = survey.mirror_overlap >= MIRROR_OVERLAP_MIN
        augment["hflip_p"] = 0.5 if flip else 0.0
        why["augment.hflip_p"] = (f"a mirrored image shares {survey.mirror_overlap:.2f} of the original's 10 nearest "
                                  f"images ({'at least' if flip else 'under'} {MIRROR_OVERLAP_MIN}): mirrors "
                                  + ("look like members, flips are views" if flip else
                                     "are strangers (digits, letters), no flips"))
        if not flip and survey.grey and native <= 32:
            augment["rotation"] = 10.0
            why["augment.rotation"] = "small grey images without flips: small rotations (±10°) as views"

    if epochs is None:
        cost = (size / 32.0) ** 2 * (1.0 if channels == 3 else 0.8)
        budget = (GPU_PASS_BUDGET if gpu else CPU_PASS_BUDGET) / cost
        lo, hi = (20, 1000) if gpu else (10, 300)
        epochs = int(min(hi, max(lo, round(budget / max(1, n)))))
        why["train.epochs"] = "a budget of image passes (no time measured yet)"
    iters = epochs * max(1, n // batch)

    if gpu:
        model = {"backbone": "resnet18_cifar" if size <= 64 else "resnet34_cifar",
                 "hidden_dim": 4096, "proj_dim": 256}
        why["model.backbone"] = "a GPU: the paper's CIFAR ResNet"
    else:
        model = {"backbone": "small_cnn", "width": 16, "hidden_dim": 512, "proj_dim": 128}
        why["model.backbone"] = "a CPU: a small CNN (width 16) trains many epochs in the budget"
    sched = schedule_for_epochs(epochs)
    short = epochs <= 300
    stage2_epochs = epochs - sched["stage2"]["start_epoch"]
    lr_factor = 1.0 if stage2_epochs < 100 else 0.1
    why["train.lr"] = ("0.2 per 256 images: a short run needs large steps" if short else
                       "0.05 per 256 images, the paper's")
    why["stage2.lr_factor"] = (f"full LR in a stage 2 of {stage2_epochs} epochs (the paper's 0.1 suits hundreds)"
                               if lr_factor == 1.0 else "the paper's 0.1 for a long stage 2")
    raw = {
        "method": "conr",
        "data": {"image_size": size, "channels": channels},
        "augment": augment,
        "model": model,
        "train": {"batch_size": int(batch), "lr": 0.2 if short else 0.05,
                  "ema_base": 0.99 if iters < 10_000 else 0.996, "ema_schedule": "cosine",
                  **sched["train"]},
        "stage2": {**neighbourhood, "loss_scale": 1.0, "crop_scale": [max(0.45, s_min), 1.0],
                   "lr_factor": lr_factor, "predictor_lr_factor": lr_factor,
                   **sched["stage2"]},
        "cluster": {"n_clusters": k_clusters, "n_init": 10, "final": "auto", "flip_average": flip,
                    "stage2_seed": "final",
                    "self_label_epochs": self_label_epochs(epochs) if self_label else 0,
                    **sched["cluster"]},
        "run": {"tensorboard": False, "log_every": 20},
    }
    raw["train"]["channels_last"] = True
    why["train.channels_last"] = "channels-last convolutions (about 2x faster CPU steps for small CNNs)"
    if gpu:
        raw["train"]["precision"] = "bf16"
        why["train.precision"] = "a GPU: bf16 autocast (losses and neighbourhoods stay float32)"
    why["stage2.start_epoch"] = f"CoNR's stage 2 takes the last {STAGE2_SHARE:.0%} of the epochs"
    why["cluster.n_init"] = "k-means restarts for the pseudo-labels, lowest inertia wins"
    why["cluster.flip_average"] = ("features averaged over each image and its mirror, a view the training "
                                   "made equivalent (steadier neighbourhoods)" if flip else
                                   "no mirror average: mirrors are not members of this set")
    why["cluster.final"] = ("final labels chosen without labels among k-means, spectral and UMAP + GMM partitions "
                            "of the features and of the pixels (conr/cluster/final.py)")
    why["cluster.stage2_seed"] = "CoNR's stage 2 starts from the best label-free partition, not k-means of weak features"
    why["cluster.self_label_epochs"] = (
        f"off: a cluster expects {members:.0f} images, fewer than the {SELF_LABEL_MIN_MEMBERS} a cluster "
        f"head needs to learn from (it collapsed on 40 people of 10 faces and on 100 palm classes of 20)"
        if not self_label else
        "a cluster head trained on each cluster's most confident half, a quarter of the training epochs (5..50)")
    return raw, why
