"""Setting a run up before its first step: threads and determinism, the device and the
process group, the checks of the data against the config, and the method with its
BatchNorm variant, memory format, optimiser and compiled networks."""
from __future__ import annotations

import torch

from .batchnorm import convert_group_batchnorm
from ..config import Config, ConfigError
from .distributed import convert_sync_batchnorm, init_from_env
from ..methods import build_method
from ..options import option
from .speed import compile_networks, make_sgd

__all__ = ["resolve_device", "start_runtime", "check_data", "build_model"]


def resolve_device(name: str) -> torch.device:
    """The device ``name`` stands for ("auto": a GPU where there is one), refused with the fix where
    it is not a device or not on this machine."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"{option('train.device', repr(name))} is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{option('train.device', repr(name))} but no CUDA device is available; use "
                          f"{option('train.device', 'cpu')}")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"{option('train.device', repr(name))} but this machine has {torch.cuda.device_count()} "
                          f"CUDA device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{option('train.device', repr(name))} but Apple's MPS is not available here; use "
                          f"{option('train.device', 'cpu')}")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"{option('train.device', repr(name))}: conr runs on cpu, cuda or mps")
    return dev


def start_runtime(train_cfg) -> tuple[torch.device, bool]:
    """Threads and deterministic algorithms as configured; the device and, under torchrun
    (WORLD_SIZE > 1), the process group (NCCL on cuda:LOCAL_RANK, gloo on CPU).
    Returns (device, whether this call started the group)."""
    if isinstance(train_cfg.threads, int) and train_cfg.threads:  # "auto": the budget's count, else torch's
        torch.set_num_threads(train_cfg.threads)
    if train_cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    return init_from_env(resolve_device(train_cfg.device))


def check_data(data, cfg: Config, world_size: int, log=print) -> None:
    """Errors that name the fix when the data cannot be trained with this config;
    warnings for unreadable images that were skipped."""
    n, t, k = len(data), cfg.train, cfg.cluster.n_clusters
    if n == 0:
        raise ValueError("the dataset is empty; point data.root at a folder with images")
    if k > n:
        raise ConfigError(f"{option('cluster.n_clusters', k)} exceeds the number of images ({n}); lower K")
    if t.batch_size > n:
        raise ConfigError(f"train.batch_size={t.batch_size} exceeds the number of images ({n}); "
                          f"lower train.batch_size to at most {n}")
    if t.batch_size % world_size:
        raise ConfigError(f"train.batch_size={t.batch_size} is the global batch and must divide by "
                          f"the number of processes ({world_size})")
    local = t.batch_size // world_size
    if t.bn_group_size and local % t.bn_group_size:
        raise ConfigError(f"train.bn_group_size={t.bn_group_size} must divide the per-process batch "
                          f"({local} = train.batch_size / {world_size} processes)")
    for path, why in data.skipped[:5]:
        log(f"warning: skipped unreadable image {path} ({why})")
    if len(data.skipped) > 5:
        log(f"warning: ... and {len(data.skipped) - 5} more unreadable images skipped")


def build_model(cfg: Config, channels: int, device: torch.device, distributed: bool, log=print):
    """The method (seeded with train.seed) on ``device`` with its BatchNorm variant and
    memory format, and its SGD optimiser; networks compiled when asked. Returns
    (method, optimizer)."""
    t = cfg.train
    torch.manual_seed(t.seed)
    method = build_method(cfg, channels).to(device)
    if t.sync_bn and distributed:
        convert_sync_batchnorm(method)  # same Parameter objects: before the optimiser anyway
    if t.bn_group_size:  # per-GPU BatchNorm groups on one device (conr/batchnorm.py)
        convert_group_batchnorm(method, t.bn_group_size)
    if t.channels_last:
        method = method.to(memory_format=torch.channels_last)
    # fused SGD on CUDA, foreach elsewhere: the same update as the per-parameter loop (conr/speed.py)
    optimizer = make_sgd(method.param_groups(), device, momentum=t.momentum, weight_decay=t.weight_decay)
    if t.compile:  # networks' forward compiled in place; same parameters and state-dict keys
        compile_networks(method, device, log=log)
    return method, optimizer
