"""The cross-field checks of a config (conr/config.py builds it, these say whether it can
run): each needs no data, and each message names the key to change. The method's own
checks live beside the methods' registry (conr/methods/registry.py)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    from .config import Config

__all__ = ["validate_config"]


def _choice(value: str, options, key: str) -> None:
    if value not in options:
        raise ConfigError(f"{key}={value!r} is not one of {', '.join(map(repr, options))}")


def validate_config(cfg: Config) -> None:
    """Cross-field checks that need no data; each message names the key to change."""
    from .methods import check_method_config, method_class  # on first use: importing the methods loads torch

    method_class(cfg.method)  # an unknown method first: the other checks may depend on it
    t, s, c = cfg.train, cfg.stage2, cfg.cluster
    if c.n_init < 1:
        raise ConfigError(f"cluster.n_init={c.n_init} must be >= 1 (k-means restarts; the official runs use 10)")
    if c.n_clusters < 2:
        raise ConfigError(f"cluster.n_clusters={c.n_clusters}: clustering needs K >= 2 clusters")
    if t.epochs < 1:
        raise ConfigError(f"train.epochs={t.epochs} must be >= 1")
    stop = cfg.run.stop_after_epoch
    if stop is not None and not 1 <= stop <= t.epochs:
        raise ConfigError(f"run.stop_after_epoch={stop} must be between 1 and train.epochs={t.epochs} "
                          "(or null: train to the end)")
    if t.batch_size < 2:
        raise ConfigError(f"train.batch_size={t.batch_size} must be >= 2 (BatchNorm needs pairs)")
    if t.lr <= 0:
        raise ConfigError(f"train.lr={t.lr} must be > 0")
    _choice(t.ema_schedule, ("cosine", "constant"), "train.ema_schedule")
    _choice(t.precision, ("fp32", "bf16"), "train.precision")
    if t.threads is not None and t.threads != "auto" and not (isinstance(t.threads, int) and t.threads >= 1):
        raise ConfigError(f"train.threads={t.threads!r} must be a number of CPU threads >= 1, auto (the time "
                          f"budget times one thread against all and takes the faster) or null (torch's count)")
    if t.bn_group_size is not None:
        if t.sync_bn:
            raise ConfigError("train.bn_group_size and train.sync_bn exclude each other (groups vs one "
                              "batch over all processes); set one of them")
        if t.bn_group_size < 2 or t.batch_size % t.bn_group_size:
            raise ConfigError(f"train.bn_group_size={t.bn_group_size} must be >= 2 and divide "
                              f"train.batch_size={t.batch_size} (e.g. 128 for 512 = 4 x 128)")
    _choice(t.lr_schedule, ("official_cosine", "cosine_to_zero"), "train.lr_schedule")
    _choice(t.grad_scale_mode, ("global", "per_rank"), "train.grad_scale_mode")
    if not 0.0 <= t.ema_base <= 1.0:
        raise ConfigError(f"train.ema_base={t.ema_base} must lie in [0, 1]")
    _choice(s.neighborhood, ("conaff", "euclidean", "self"), "stage2.neighborhood")
    _choice(s.keep_rule, ("code", "paper"), "stage2.keep_rule")
    _choice(s.ratio_variant, ("code", "paper"), "stage2.ratio_variant")
    _choice(c.metric, ("cosine", "euclidean"), "cluster.metric")
    _choice(c.final, ("kmeans", "spectral", "auto"), "cluster.final")
    from .cluster.policy import (JOINT_GRAPHS, RULES, SEED_RULES,  # plain data at import: the names live in the policy
                                 WARMUP_WEIGHTS)

    _choice(c.final_rule, RULES, "cluster.final_rule")
    _choice(c.seed_rule, ("auto", *SEED_RULES), "cluster.seed_rule")
    _choice(c.warmup_weight, tuple(WARMUP_WEIGHTS), "cluster.warmup_weight")
    _choice(c.stage2_seed, ("kmeans", "final"), "cluster.stage2_seed")
    _choice(c.joint_graph, JOINT_GRAPHS, "cluster.joint_graph")
    _choice(c.input_geometry, ("auto", "directions", "as_given"), "cluster.input_geometry")
    _choice(s.warmup_end, ("fixed", "signal"), "stage2.warmup_end")
    if c.stage2_update_iters < 0:
        raise ConfigError(f"cluster.stage2_update_iters={c.stage2_update_iters} must be >= 0 "
                          "(0 = the stage-2 seed's labels kept)")
    if c.stage2_refreshes < 0:
        raise ConfigError(f"cluster.stage2_refreshes={c.stage2_refreshes} must be >= 0 (0 = the seed carried on "
                          "by Lloyd steps only)")
    if c.consensus_runs < 1:
        raise ConfigError(f"cluster.consensus_runs={c.consensus_runs} must be >= 1 (1 = a single UMAP + GMM run)")
    if c.self_label_epochs < 0:
        raise ConfigError(f"cluster.self_label_epochs={c.self_label_epochs} must be >= 0 (0 = off)")
    _choice(cfg.data.on_bad_image, ("skip", "fail"), "data.on_bad_image")
    if cfg.data.in_memory not in (True, False, "auto"):
        raise ConfigError(f"data.in_memory={cfg.data.in_memory!r} is not one of true, false, 'auto'")
    if cfg.data.workers is not None and cfg.data.workers < 0:
        raise ConfigError(f"data.workers={cfg.data.workers} must be >= 0 (0 decodes in the training process)")
    if s.k < 1:
        raise ConfigError(f"stage2.k={s.k} must be >= 1 (the sample itself)")
    if s.k >= t.batch_size:
        raise ConfigError(f"stage2.k={s.k} must be smaller than train.batch_size={t.batch_size}: "
                          f"the neighbourhood is searched inside the batch")
    if s.k1 < s.k2:
        raise ConfigError(f"stage2.k1={s.k1} < stage2.k2={s.k2}: k2 rows are taken from the top-k1 "
                          f"list, so raise k1 or lower k2")
    if s.k2 < 1 or s.k1 > t.batch_size:
        raise ConfigError(f"stage2.k1={s.k1}, k2={s.k2}: need 1 <= k2 <= k1 <= train.batch_size")
    if not 0.0 <= s.fr0 <= 1.0:
        raise ConfigError(f"stage2.fr0={s.fr0} must lie in [0, 1]")
    if s.start_epoch < 0:
        raise ConfigError(f"stage2.start_epoch={s.start_epoch} must be >= 0")
    for key, pair in (("augment.scale", cfg.augment.scale), ("stage2.crop_scale", s.crop_scale),
                      ("augment.ratio", cfg.augment.ratio), ("augment.blur_sigma", cfg.augment.blur_sigma)):
        if len(pair) != 2 or not 0 < pair[0] <= pair[1]:
            raise ConfigError(f"{key}={pair} must be [low, high] with 0 < low <= high")
    if cfg.augment.view_neighbors < 1:
        raise ConfigError(f"augment.view_neighbors={cfg.augment.view_neighbors} must be >= 1 (1 = the row itself, "
                          "with noise and dropout only)")
    if cfg.data.channels not in (1, 3):
        raise ConfigError(f"data.channels={cfg.data.channels} must be 1 (grey) or 3 (RGB)")
    if cfg.data.image_size < 4:
        raise ConfigError(f"data.image_size={cfg.data.image_size} is too small (>= 4)")
    if cfg.data.subset is not None and cfg.data.subset < c.n_clusters:
        raise ConfigError(f"data.subset={cfg.data.subset} keeps fewer images than clusters "
                          f"(cluster.n_clusters={c.n_clusters})")
    from .models import BACKBONES

    if cfg.model.backbone not in BACKBONES:
        raise ConfigError(f"model.backbone={cfg.model.backbone!r} is unknown; choose one of "
                          f"{', '.join(sorted(BACKBONES))}")
    check_method_config(cfg)
