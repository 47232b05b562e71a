"""The fast CPU path: the encoder exported to ONNX and run by ONNX Runtime.

Measured side by side on 2 shared CPU cores (benchmarks/encoder_throughput.py,
benchmarks/results/encoder_throughput.json), EfficientNet-Lite0 at 224 px runs at
56-59 images/s under ONNX Runtime against 21 in eager PyTorch with channels-last and 7
in eager NCHW; folding the BatchNorms into the convolutions, ``torch.jit`` freezing and
``torch.compile`` (37 s to compile) brought eager PyTorch no further. ONNX Runtime's
graph optimiser folds every BatchNorm into its convolution and fuses the ReLU6
activations, and its depthwise-convolution kernels suit this network. So on a CPU,
when ``onnxruntime`` is importable (``pip install "conr[fast]"``), extraction exports
the encoder once and runs the export.

The exported graph takes the uint8 images and normalises them itself (the same
multiply-add as :meth:`~conr.encoders.preprocess.Preprocess.normalise`), so the only
work left in Python is stacking the decoded images. The export is cached beside the
feature cache (``<cache>/onnx/``), keyed by the encoder's fingerprint (name, weights
sha256, preprocessing) and the torch version that wrote it, and written atomically.
Every session is checked against the torch network on two random images before it
is used; a mismatch (an exporter bug) falls back to torch with a warning.
"""
from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..io import atomic_write_bytes
from .encoder import Encoder

__all__ = ["onnxruntime_available", "OnnxEncoder", "export_onnx", "onnx_encoder", "ONNX_OPSET"]

ONNX_OPSET = 17
MATCH_TOLERANCE = 1e-3  # max |onnx - torch| / (1 + max |torch|) on the check images
_SESSIONS: dict[tuple, "OnnxEncoder"] = {}  # checked sessions of this process, reused by later extractions
_MAX_SESSIONS = 4


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class _FromUint8(nn.Module):
    """uint8 [B, 3, S, S] -> the network's features, normalisation inside the graph."""

    def __init__(self, encoder: Encoder):
        super().__init__()
        a, b = encoder.preprocess.scale_shift()
        self.register_buffer("scale", a)
        self.register_buffer("shift", b)
        self.network = copy.deepcopy(encoder.network).cpu().to(memory_format=torch.contiguous_format).eval()

    def forward(self, images: Tensor) -> Tensor:
        out = self.network(torch.addcmul(self.shift, images.float(), self.scale))
        return out.reshape(out.shape[0], -1)


def export_onnx(encoder: Encoder, path: str | Path) -> Path:
    """Write ``encoder`` as an ONNX graph (uint8 images in, float32 features out, any
    batch size) to ``path``, atomically."""
    size = encoder.preprocess.size
    example = torch.zeros(2, 3, size, size, dtype=torch.uint8)
    buf = io.BytesIO()
    kwargs = dict(input_names=["images"], output_names=["features"], opset_version=ONNX_OPSET,
                  dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes
        try:  # the TorchScript exporter: no onnxscript needed
            torch.onnx.export(_FromUint8(encoder), (example,), buf, dynamo=False, **kwargs)
        except TypeError:  # a torch from before the ``dynamo`` switch, where this exporter is the only one
            torch.onnx.export(_FromUint8(encoder), (example,), buf, **kwargs)
    return atomic_write_bytes(path, buf.getvalue())


class OnnxEncoder:
    """An ONNX Runtime session that answers like :meth:`Encoder.features`."""

    def __init__(self, encoder: Encoder, path: str | Path, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, int(threads))
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # idle threads sleep instead of spinning: the decoding threads need those cores between batches
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.encoder, self.path = encoder, Path(path)
        self.name, self.dim, self.preprocess = encoder.name, encoder.dim, encoder.preprocess

    def features(self, images: Tensor) -> Tensor:
        x = np.ascontiguousarray(images.cpu().numpy(), dtype=np.uint8)
        (out,) = self.session.run(None, {"images": x})
        return torch.from_numpy(out)

    def check(self, seed: int = 0) -> float:
        """max |onnx - torch| / (1 + max |torch|) on two random images."""
        size = self.preprocess.size
        g = torch.Generator().manual_seed(seed)
        images = torch.randint(0, 256, (2, 3, size, size), generator=g, dtype=torch.uint8)
        ref = self.encoder.features(images)
        return float((self.features(images) - ref).abs().max() / (1 + ref.abs().max()))

    def __repr__(self) -> str:
        return f"OnnxEncoder({self.name!r}, {self.path})"


def onnx_encoder(encoder: Encoder, folder: str | Path, threads: int) -> OnnxEncoder | None:
    """The ONNX Runtime twin of ``encoder`` (exported into ``folder`` on first use), or
    None when onnxruntime is missing, the export fails or its output does not match."""
    if not onnxruntime_available() or not encoder.exportable or encoder.device.type != "cpu":
        return None
    path = Path(folder) / f"{encoder.fingerprint}-torch{torch.__version__.split('+')[0]}-opset{ONNX_OPSET}.onnx"
    memo = (id(encoder), encoder.fingerprint, str(path), int(threads))
    if memo in _SESSIONS and (_SESSIONS[memo] is None or _SESSIONS[memo].path.exists()):
        return _SESSIONS[memo]  # None: this process already tried, warned and fell back
    for attempt in range(2):
        try:
            if not path.exists():
                export_onnx(encoder, path)
            runner = OnnxEncoder(encoder, path, threads)
            error = runner.check()
            break
        except Exception as exc:  # an exporter or runtime without support for some layer: torch still works
            if attempt == 0 and path.exists():  # a cached export this runtime cannot read: write it afresh
                path.unlink(missing_ok=True)
                continue
            warnings.warn(f"ONNX Runtime path unavailable for encoder {encoder.name} ({type(exc).__name__}: "
                          f"{str(exc)[:200]}); extracting with PyTorch", stacklevel=3)
            runner = None
            break
    if runner is not None and error > MATCH_TOLERANCE:
        warnings.warn(f"the ONNX export of encoder {encoder.name} differs from PyTorch by {error:.2e} (relative); "
                      f"extracting with PyTorch", stacklevel=3)
        runner = None
    while len(_SESSIONS) >= _MAX_SESSIONS:
        _SESSIONS.pop(next(iter(_SESSIONS)))
    _SESSIONS[memo] = runner
    return runner
