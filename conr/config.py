"""Run configuration: typed sections, YAML files, dotted command-line overrides.

A config file is YAML with the sections below; ``_base_: other.yaml`` inherits
another file (relative to this one, or a packaged config name) and overrides
it. ``key.sub=value`` strings override single fields (values parsed as YAML).
Unknown keys and wrongly typed values are rejected with the closest valid key.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "Config", "DataConfig", "AugmentSection", "ModelConfig", "TrainConfig", "Stage2Config",
    "ClusterConfig", "RunConfig", "HaDisConfig", "SimSiamConfig", "MoCoConfig", "ConfigError", "load_config",
    "config_from_dict", "apply_overrides",
    "config_to_dict", "packaged_config_dir", "resolve_config_path", "validate_config",
]


class ConfigError(ValueError):
    """A config that cannot run; the message names the key and the fix."""


@dataclass
class DataConfig:
    name: str = "digits"            # digits | cifar10 | cifar100 | cifar20 | stl10 | imagefolder | ...
    root: str | None = None          # folder the dataset lives in
    split: str = "train+test"        # which split(s) to cluster; the paper merges train and test
    image_size: int = 32             # training / evaluation resolution
    channels: int = 3                # image folders: 3 = RGB, 1 = grey (conr cluster picks 1 for grey folders)
    normalization: str | None = None  # cifar10 | cifar100 | imagenet | auto; None = dataset default
    subset: int | None = None        # keep only this many images (a seeded random subset), for quick runs
    on_bad_image: str = "skip"       # skip | fail: what an unreadable image file does
    download: bool = False           # fetch the dataset when it is missing and a source exists
    in_memory: bool | str = "auto"   # true: decode once, hold on the device | false: stream the image files
                                     # (DataLoader workers decode + resize) | auto: stream above 8 GiB decoded
    workers: int | None = None       # decoding processes when streaming; None = min(8, CPUs)


@dataclass
class AugmentSection:
    scale: list[float] = field(default_factory=lambda: [0.08, 1.0])  # RandomResizedCrop area range, stage 1
    ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])
    hflip_p: float = 0.5
    jitter: list[float] = field(default_factory=lambda: [0.4, 0.4, 0.4, 0.1])  # brightness, contrast, saturation, hue
    jitter_p: float = 0.8
    gray_p: float = 0.2
    blur_p: float = 0.0
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 2.0])
    rotation: float = 0.0           # max degrees; 0 in the paper


@dataclass
class ModelConfig:
    backbone: str = "resnet18_cifar"  # resnet18_cifar | resnet34_cifar | resnet18 | resnet34 | resnet50 | small_cnn
    width: int | None = None         # small_cnn channel width
    hidden_dim: int = 4096           # projector / predictor hidden width
    proj_dim: int = 256              # projector / predictor output width


@dataclass
class TrainConfig:
    epochs: int = 1000               # T, all stages together
    batch_size: int = 512            # global batch (all processes together)
    lr: float = 0.05                 # base LR per 256 images: LR = lr * batch_size / 256
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: int = 50          # linear LR warm-up
    lr_schedule: str = "official_cosine"  # after the warm-up: official_cosine = 0.5·LR·(1 + cos(π(e − W)/T)),
                                     # T = all epochs, never 0 (the official code) | cosine_to_zero (over T − W)
    predictor_lr_mult: float = 10.0  # stage-1 predictor LR multiplier
    ema_base: float = 0.996          # target EMA momentum at the start
    ema_schedule: str = "cosine"     # cosine (to 1.0 over the run) | constant
    symmetric: bool = True           # average the loss over both view orders
    seed: int = 0
    device: str = "auto"             # auto | cpu | cuda | cuda:N
    precision: str = "fp32"          # fp32 | bf16 (autocast on CUDA)
    channels_last: bool = False
    compile: bool = False            # torch.compile the networks
    deterministic: bool = False      # torch deterministic algorithms (bit-exact resume on CPU)
    threads: int | None = None       # CPU threads; None = torch default
    # Several processes (torchrun): every loss term computed on the batch gathered over ranks (CoNR's
    # neighbourhoods, MoCo, HaDis' HSD/prototypes) gets, under
    #   global   (default): the gradient of the global loss: the same update for any number of processes;
    #   per_rank: the gradient flowing only into each rank's own slice, then averaged over ranks: 1/world_size
    #             of the global gradient, exactly the official multi-GPU code. The same effect on any number
    #             of processes: keep `global` and set stage2.loss_scale = 1/world_size of the run to copy
    #             (0.25 for the official 4-GPU CIFAR runs). Per-rank terms (BYOL) are unaffected by the mode.
    grad_scale_mode: str = "global"  # global | per_rank
    sync_bn: bool = False            # BatchNorm statistics over the gathered batch (online and target nets);
                                     # with it, N processes x batch b train exactly as 1 process x batch N*b
    shuffle_bn: bool = True          # target/key forward on a batch shuffled across processes so its BN
                                     # statistics mix ranks (spec 1); no effect on one process or with sync_bn
                                     # (with bn_group_size: shuffled across the groups, as across ranks)
    bn_group_size: int | None = None  # BatchNorm statistics over consecutive groups of this many samples of
                                     # each process's batch: 1 process x 512 with 128 normalises exactly as the
                                     # official 4 GPUs x 128 without SyncBN did; None = the whole batch


@dataclass
class Stage2Config:
    start_epoch: int = 800           # t0: last epoch of stage 1 (BYOL); stage 2 runs t0+1..T
    neighborhood: str = "conaff"     # conaff | euclidean | self (instance loss only)
    k: int = 10                      # neighbourhood size (self included)
    k1: int = 10                     # initial ranking list length
    k2: int = 2                      # query-expansion rows; 1 switches propagation off
    boundary_filter: bool = True
    fr0: float = 0.8                 # kept fraction at t0
    relax: bool = True               # progressive relaxation of the kept fraction to 1
    t_end: int = 850                 # epoch where the kept fraction reaches 1 (paper text: T)
    keep_rule: str = "code"          # code (strictly below the cut) | paper (exactly the fraction)
    ratio_variant: str = "code"      # code (d_own/d_next) | paper (Eq. 11)
    lr_factor: float = 0.1           # stage-2 LR = lr_factor x the cosine schedule
    predictor_lr_factor: float = 0.1
    crop_scale: list[float] = field(default_factory=lambda: [0.45, 1.0])
    loss_scale: float = 1.0          # multiply the stage-2 loss; 0.25 with train.grad_scale_mode=global
                                     # reproduces the official 4-GPU runs on any number of processes


@dataclass
class HaDisConfig:
    """HaDis (spec 6): loss = L_BYOL(noisy) + hsd_weight·L_HSD + proto_weight·L_proto."""
    latent_std: float = 0.001        # σ of the diffused sampling alignment (noise on the online projection)
    hsd_weight: float = 1.0          # weight of the hardness-aware self-distillation term
    hsd_temperature: float = 0.5     # τ of the two-logit cross-entropy
    proto_weight: float = 0.1        # w: 0.1 CIFAR-10 / STL-10 / ImageNet-Dogs, 0.05 CIFAR-20 / ImageNet-10
    proto_temperature: float = 0.5   # temperature of the InfoNCE over cluster centres
    warmup_epochs: int | None = None  # noise and prototype term off up to this epoch; None = train.warmup_epochs
    resample: bool = False           # draw images with weights ∝ 1 / pseudo-cluster size (CIFAR-20)
    absent_logit: float | None = None  # None: clusters absent from the batch are removed exactly;
                                       # -10 reproduces the ProPos code's fill value


@dataclass
class SimSiamConfig:
    """SimSiam heads (CIFAR variant of the SimSiam paper: 2-layer projector)."""
    proj_hidden_dim: int = 2048      # projector hidden width
    proj_dim: int = 2048             # projector output (z) width
    proj_layers: int = 2             # 2 (CIFAR) or 3 (ImageNet) Linear-BN layers in the projector
    pred_hidden_dim: int = 512       # predictor bottleneck width
    fix_predictor_lr: bool = True    # predictor at the base LR, not the cosine schedule (SimSiam paper)


@dataclass
class MoCoConfig:
    """MoCo v2: momentum key encoder, a queue of negative keys, InfoNCE."""
    dim: int = 128                   # output width of the MLP head
    hidden_dim: int | None = None    # MLP head hidden width; None = the backbone's feature width (MoCo v2)
    queue_size: int = 4096           # number of negative keys (the MoCo CIFAR-10 recipe)
    temperature: float = 0.2         # InfoNCE temperature T (MoCo v2)
    momentum: float = 0.99           # key-encoder EMA momentum (the MoCo CIFAR-10 recipe)


@dataclass
class ClusterConfig:
    n_clusters: int = 10             # K
    metric: str = "cosine"
    max_iter: int = 300
    tol: float = 1e-4
    n_init: int = 10                 # k-means++ restarts, lowest inertia wins (torch_clustering's n_init)
    flip_average: bool = False       # features = mean over the image and its mirror (automatic settings: on)
    final: str = "kmeans"            # final labels: kmeans (the pseudo-labels) | spectral (k-NN graph, conr/spectral.py)
    eval_every: int = 1              # cluster + score every N epochs in stage 1 (stage 2: every epoch)
    eval_batch_size: int = 1024


@dataclass
class RunConfig:
    out_dir: str = "runs"
    name: str | None = None          # run folder name; None = <dataset>-<method>-<timestamp>
    log_every: int = 20              # iterations between logged losses (no host sync in between)
    save_every: int = 0              # keep an extra checkpoint every N epochs (0 = only the last)
    progress: bool = True            # progress bar with loss and ETA
    tensorboard: bool = True
    max_epoch_minutes: float | None = None  # stop cleanly (checkpointed) after this wall time in minutes
    stop_after_epoch: int | None = None  # stop cleanly (clustered, checkpointed) after this epoch; the schedule
                                         # stays train.epochs' (repeats a run the time limit stopped)


@dataclass
class Config:
    method: str = "conr"
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentSection = field(default_factory=AugmentSection)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    hadis: HaDisConfig = field(default_factory=HaDisConfig)
    simsiam: SimSiamConfig = field(default_factory=SimSiamConfig)
    moco: MoCoConfig = field(default_factory=MoCoConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    run: RunConfig = field(default_factory=RunConfig)


# ----------------------------------------------------------------------------- parsing

def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _suggest(key: str, options) -> str:
    close = difflib.get_close_matches(key, list(options), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(sorted(options))}"


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{where} expects a list, got {value!r}")
        (item,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} expects true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where} expects an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "5e-4" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where} expects a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} expects a string, got {value!r}")
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    return value


def _build(cls, raw: Any, where: str):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping of keys to values, got {raw!r}")
    types_ = _field_types(cls)
    kwargs = {}
    for key, value in raw.items():
        name = f"{where}.{key}" if where else str(key)
        if key not in types_:
            options = [f"{where}.{k}" if where else k for k in types_]
            raise ConfigError(f"unknown config key {name!r}{_suggest(name, options)}")
        kwargs[key] = _coerce(value, types_[key], name)
    return cls(**kwargs)


def config_from_dict(raw: dict) -> Config:
    """Build and validate a Config from nested plain data."""
    cfg = _build(Config, raw, "")
    validate_config(cfg)
    return cfg


def config_to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def packaged_config_dir() -> Path:
    return Path(__file__).resolve().parent / "configs"


def resolve_config_path(name: str | Path, relative_to: Path | None = None) -> Path:
    """A config path as given, relative to another config, or a packaged config name."""
    p = Path(name)
    candidates = [p]
    if relative_to is not None and not p.is_absolute():
        candidates.append(relative_to / p)
    stem = p.name if p.suffix in (".yaml", ".yml") else p.name + ".yaml"
    candidates.append(packaged_config_dir() / stem)
    for c in candidates:
        if c.is_file():
            return c
    shipped = ", ".join(sorted(q.stem for q in packaged_config_dir().glob("*.yaml")))
    raise ConfigError(f"config file {str(name)!r} not found; give a path to a YAML file or one of "
                      f"the shipped configs: {shipped}")


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _read_yaml(path: Path, seen: tuple = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"config {path} inherits itself through _base_")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} must hold a mapping of sections, got {type(raw).__name__}")
    base = raw.pop("_base_", None)
    if base is not None:
        parent = _read_yaml(resolve_config_path(base, path.parent), seen + (path,))
        raw = _deep_merge(parent, raw)
    return raw


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value (e.g. stage2.k=20)")
    key, value = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has no key before '='")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return key.split("."), parsed


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    out = copy.deepcopy(raw)
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for p in parts[:-1]:
            if not isinstance(node.get(p, {}), dict):
                raise ConfigError(f"override {text!r}: {p!r} is a value, not a section")
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or the defaults when ``path`` is None) and apply overrides."""
    raw = _read_yaml(resolve_config_path(path)) if path is not None else {}
    raw = apply_overrides(raw, list(overrides or []))
    return config_from_dict(raw)


# ----------------------------------------------------------------------------- validation

def _choice(value: str, options, key: str) -> None:
    if value not in options:
        raise ConfigError(f"{key}={value!r} is not one of {', '.join(map(repr, options))}")


def validate_config(cfg: Config) -> None:
    """Cross-field checks that need no data; each message names the key to change."""
    from .methods import METHODS  # local: methods import this module

    if cfg.method not in METHODS:
        raise ConfigError(f"method={cfg.method!r} is unknown; known methods: {', '.join(sorted(METHODS))}")
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
    _choice(c.final, ("kmeans", "spectral"), "cluster.final")
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
    method_validate = getattr(METHODS[cfg.method], "validate_config", None)
    if method_validate is not None:
        method_validate(cfg)
