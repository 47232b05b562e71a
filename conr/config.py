"""Run configuration: typed sections, YAML files, dotted command-line overrides.

A config file is YAML with the sections below; ``_base_: other.yaml`` inherits
another file (relative to this one, or a packaged config name) and overrides
it. ``key.sub=value`` strings override single fields (values parsed as YAML).
Unknown keys and wrongly typed values are rejected with the closest valid key.
The cross-field checks (which values may go together) are in conr/config_checks.py.
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

from .cluster.policy import CONSENSUS_RUNS, DEFAULT_JOINT_GRAPH, DEFAULT_RULE, DEFAULT_WARMUP_WEIGHT
from .config_checks import validate_config
from .errors import ConfigError

__all__ = ["dotted_get", "yaml_mapping", 
    "Config", "DataConfig", "AugmentSection", "ModelConfig", "TrainConfig", "Stage2Config",
    "ClusterConfig", "RunConfig", "HaDisConfig", "SimSiamConfig", "MoCoConfig", "ConfigError", "load_config",
    "config_from_dict", "apply_overrides", "check_config_keys",
    "config_to_dict", "packaged_config_dir", "resolve_config_path", "validate_config",
]


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
    encoder: str | None = None       # rows are this pretrained encoder's features of the images (conr/encoders/)
    encoder_weights: str | None = None  # ... with the weights of this local file instead of the encoder's own


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
    view_neighbors: int = 10        # vectors: a view is one of a row's this-many nearest rows (itself included)


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
    threads: int | str | None = None  # CPU threads; None = torch default; auto = one where the time budget finds it faster
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
    warmup_end: str = "fixed"        # fixed (stage 2 after start_epoch) | signal (earlier, where the warm-up's
                                     # features fall away from the input's structure: conr/engine/warmup_end.py)
    neighborhood: str = "conaff"     # conaff | euclidean | self (instance loss only)
    k: int = 10                      # neighbourhood size (self included)
    k1: int = 10                     # initial ranking list length
    k2: int = 2                      # query-expansion rows; 1 switches propagation off
    same_cluster: bool = False       # a neighbour of another pseudo-cluster than its anchor's is replaced by
                                     # the anchor itself (conr.ops.neighbors.same_cluster_neighbors); off in
                                     # the paper's configs, on in automatic settings where a cluster expects
                                     # fewer than 40 members (conr.auto.settings.within_clusters)
    group_members: int = 0           # >1: stage-2 batches hold their pseudo-clusters in runs of this many
                                     # members (conr/ops/grouped_order.py); 0: random batches, the paper's
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
    # The defaults are the paper protocol's (`conr train`: the official code's k-means labels, no final
    # stage). `conr cluster` / conr.CoNR's automatic settings turn the final stage on (conr/auto/settings.py);
    # its policy (the rule, the layouts, when stage 2 keeps its seed) lives in conr/cluster/policy.py.
    n_clusters: int = 10             # K
    metric: str = "cosine"
    max_iter: int = 300
    tol: float = 1e-4
    n_init: int = 10                 # k-means++ restarts, lowest inertia wins (torch_clustering's n_init)
    flip_average: bool = False       # features = mean over the image and its mirror (automatic settings: on)
    final: str = "kmeans"            # final labels: kmeans (the pseudo-labels) | spectral (k-NN graph, conr/spectral.py)
                                     # | auto (candidates on features and pixels, a label-free rule: conr/cluster/final.py)
    final_rule: str = DEFAULT_RULE   # how final=auto ends: consensus (a weighted vote of the candidates) | away | joint
                                     # | manifold | prefer_features | silhouette_umap | agreement | ncut | stability
                                     # (one candidate chosen; conr/cluster/policy.py)
    final_pixels: bool = True        # final=auto: the raw pixels' partitions are candidates too (off: the features' only)
    consensus_runs: int = CONSENSUS_RUNS  # final=auto: UMAP layouts a UMAP + GMM consensus is made of (a time
                                     # budget may make fewer: conr/cluster/policy.py consensus_allowance)
    mixture_starts: bool = True      # final=auto: each UMAP layout's Gaussian mixture (full covariances) also starts
                                     # from the same representation's k-means and spectral partitions; the fit of
                                     # the highest likelihood is kept (off: scikit-learn's own starts only)
    joint_graph: str = DEFAULT_JOINT_GRAPH  # final=auto: the joint candidate's graph where the views share links:
                                     # intersection (only links both hold) | union (a link either view holds;
                                     # measured: conr/cluster/policy.py joint_way)
    input_geometry: str = "auto"     # final=auto, vectors: how the input's rows are read: auto (as they come: a user's
                                     # vectors and an encoder's features alike) | directions | as_given
    seed_rule: str = "auto"          # stage2_seed=final: the rule that chooses the seed: auto (final_rule, but away
                                     # under consensus: conr/cluster/policy.py seed_rule) | any final_rule name
                                     # | features_consensus (the vote of the candidates on the features alone)
    warmup_votes: bool = True        # stage2_seed=final, final_rule=consensus: the warm-up's candidates on its
                                     # features (those the seed was chosen among) vote in the ending too, as
                                     # <algorithm>/warmup (conr/cluster/policy.py warmup_voters)
    warmup_weight: str = DEFAULT_WARMUP_WEIGHT  # warmup_votes: their part of the vote: half (the warm-up's candidates and the
                                     # end's each hold half, the end's sharing its seed's errors) | count (each
                                     # candidate by its own weight; conr/cluster/policy.py shared_weights)
    stage2_seed: str = "kmeans"      # stage 2's first pseudo-labels: kmeans (of the warm-up's features) | final
                                     # (the final stage's choice, carried on as the features improve)
    stage2_update_iters: int = 0     # stage2_seed=final: Lloyd steps a stage-2 epoch moves the carried partition
                                     # on the current features (0 = the seed's labels kept to the end: a Lloyd step
                                     # took them below the seed on digits, COIL-20 and ORL; docs/final-stage.md)
    stage2_refreshes: int = 0        # stage2_seed=final: times in stage 2 the carried partition is chosen afresh by
                                     # the final stage on the current features (evenly spaced; 0 = never)
    self_label_epochs: int = 0       # final=auto: epochs of the self-labelling stage (0 = off; conr/cluster/self_label.py)
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


def check_config_keys(raw: dict) -> None:
    """Every key of ``raw`` (nested plain data, possibly partial) is a config key and every value has
    its key's type: a typo is named before a run spends anything (an encoder's extraction, say).
    The checks between keys come when the whole config is built (:func:`config_from_dict`)."""
    _build(Config, raw, "")


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


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def yaml_mapping(path: Path, what: str, expect: str) -> dict:
    """The YAML mapping in ``path`` (empty file: {}); a ConfigError naming the file when it is
    not valid YAML or not a mapping (``what``: "config", "grid"; ``expect``: what it should hold)."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} {path} must hold a mapping of {expect}, got {type(raw).__name__}")
    return raw


def read_yaml(path: Path, seen: tuple = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"config {path} inherits itself through _base_")
    raw = yaml_mapping(path, "config", "sections")
    base = raw.pop("_base_", None)
    if base is not None:
        parent = read_yaml(resolve_config_path(base, path.parent), seen + (path,))
        raw = deep_merge(parent, raw)
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


def dotted_get(raw: dict, key: str):
    """raw["a"]["b"] for the dotted key "a.b" of nested plain data; None when absent."""
    for part in key.split("."):
        if not isinstance(raw, dict) or part not in raw:
            return None
        raw = raw[part]
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or the defaults when ``path`` is None) and apply overrides."""
    raw = read_yaml(resolve_config_path(path)) if path is not None else {}
    raw = apply_overrides(raw, list(overrides or []))
    return config_from_dict(raw)
