"""The fast training step's pieces that are not the loss: the SGD implementation
(fused kernels on CUDA, multi-tensor ``foreach`` elsewhere) and ``torch.compile``
of the networks (train.compile).

Both leave the results unchanged: fused/foreach SGD computes the same update as
the per-parameter loop, and the compiled networks keep their parameters, buffers
and state-dict keys (``nn.Module.compile`` compiles ``forward`` in place), so
checkpoints load either way.
"""
from __future__ import annotations

import inspect
import warnings

import torch
from torch import nn

__all__ = ["sgd_impl", "make_sgd", "set_sgd_impl", "compile_networks", "compile_works"]


def sgd_impl(device: torch.device) -> dict:
    """``{"fused": True}`` on CUDA when this PyTorch has fused SGD, else ``{"foreach": True}``."""
    device = torch.device(device)
    if device.type == "cuda" and "fused" in inspect.signature(torch.optim.SGD).parameters:
        return {"fused": True}
    return {"foreach": True}


def make_sgd(param_groups, device, *, momentum: float, weight_decay: float, lr: float = 0.0) -> torch.optim.SGD:
    """SGD with momentum and weight decay, on the fastest implementation for ``device``."""
    return torch.optim.SGD(param_groups, lr=lr, momentum=momentum, weight_decay=weight_decay, **sgd_impl(device))


def set_sgd_impl(optimizer: torch.optim.Optimizer, device) -> None:
    """After ``load_state_dict`` (which restores the saved groups' flags, e.g. a GPU
    checkpoint's ``fused``), choose this device's implementation again."""
    impl = sgd_impl(device)
    for group in optimizer.param_groups:
        if "fused" in group:
            group["fused"] = impl.get("fused", False)
        if "foreach" in group:
            group["foreach"] = impl.get("foreach", False) or None


_COMPILE_OK: dict[str, bool] = {}


def compile_works(device_type: str) -> tuple[bool, str]:
    """Whether torch.compile (inductor) builds and runs a tiny function on this device type."""
    if device_type in _COMPILE_OK:
        return _COMPILE_OK[device_type], ""
    try:
        fn = torch.compile(lambda x: torch.relu(x) * 2 + 1)
        x = torch.randn(8, device=device_type)
        ok = bool(torch.allclose(fn(x), torch.relu(x) * 2 + 1))
        why = "" if ok else "compiled result differs from eager"
    except Exception as exc:  # missing compiler, unsupported platform, ...
        ok, why = False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    _COMPILE_OK[device_type] = ok
    return ok, why


def _networks(module: nn.Module):
    """The sub-modules that are called: those defining ``forward`` (a backbone, a head);
    containers without a ``forward`` (a Method, BYOL's network holder) are searched."""
    for child in module.children():
        if type(child).forward is nn.Module.forward:
            yield from _networks(child)
        else:
            yield child


def _guarded(module: nn.Module, compiled, device_type: str, log):
    """The compiled call; off the GPU a compile failure at the first call falls back to eager."""
    def call(*args, **kwargs):
        try:
            return compiled(*args, **kwargs)
        except Exception as exc:
            if device_type == "cuda":
                raise
            log(f"warning: torch.compile of {type(module).__name__} failed on {device_type} "
                f"({type(exc).__name__}); running it uncompiled")
            module._compiled_call_impl = None
            return module._call_impl(*args, **kwargs)
    return call


def compile_networks(method: nn.Module, device, log=print, **options) -> list[str]:
    """``torch.compile`` the forward of every network of ``method`` in place.

    On CUDA a failure is an error. On other devices, when inductor cannot build
    code here (no C++ compiler, ...), compilation is skipped with a warning, and a
    network whose compilation fails at its first call runs uncompiled from then on.
    Returns the names of the compiled modules."""
    device_type = torch.device(device).type
    if device_type != "cuda":
        ok, why = compile_works(device_type)
        if not ok:
            log(f"warning: train.compile skipped: torch.compile does not work on {device_type} here ({why})")
            return []
    names = {id(m): n for n, m in method.named_modules()}
    done = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for net in _networks(method):
            net.compile(**options)
            net._compiled_call_impl = _guarded(net, net._compiled_call_impl, device_type, log)
            done.append(names.get(id(net), type(net).__name__))
    return done
