"""ONNX export (TorchScript-based exporter, dynamic batch) with an ONNX Runtime parity check."""

from __future__ import annotations

import importlib
import logging
import os
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn as nn

_logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17


class ExportError(ValueError):
    """The model cannot be exported, or the exported model does not match the PyTorch one."""


class _Logits(nn.Module):
    """Exports only the logits (Hugging Face models return an output object)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out if torch.is_tensor(out) else out.logits


def _require(module: str, what: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError as e:
        raise ExportError(
            f"{what} needs the {module} package, which is not installed: pip install 'mhaprune[onnx]'"
        ) from e


def onnx_parity(path: str | Path, model: nn.Module, x: torch.Tensor) -> float:
    """Max abs difference between ONNX Runtime (CPU) and PyTorch outputs on ``x``."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ExportError("onnxruntime is not installed; pip install 'mhaprune[onnx]'") from e
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        ref = _Logits(model).eval()(x)
    return float((torch.from_numpy(y) - ref).abs().max())


def export_onnx(
    model: nn.Module,
    path: str | Path,
    input_size=None,
    opset: int = DEFAULT_OPSET,
    check: bool = True,
    tolerance: float = 1e-4,
) -> dict:
    """Write ``model`` (eval mode, fp32, CPU) to ``path`` as ONNX with a dynamic batch axis; input ``input``, output
    ``logits``. With ``check``, ONNX Runtime must reproduce PyTorch within ``tolerance`` (max abs) on a random batch
    of 1 and of 3, else :class:`ExportError` and no file is left. Returns ``{"opset", "max_abs_diff", "path"}``."""
    _require("onnx", "ONNX export")  # before any file is made
    if check:
        _require("onnxruntime", "the ONNX Runtime parity check (or pass check=False / --no-check)")
    input_size = tuple(input_size or getattr(model, "input_size", None) or ())
    if len(input_size) != 3:
        raise ExportError("export needs the model's input size (C, H, W); text models are not exported here")
    model = model.eval().float().cpu()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
            torch.onnx.export(
                _Logits(model).eval(),
                (torch.randn(2, *input_size),),  # batch 1 would let the tracer fold batch-size arithmetic
                tmp,
                dynamo=False,
                opset_version=opset,
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            )
        result = {"opset": opset, "path": str(path)}
        if check:
            g = torch.Generator().manual_seed(0)
            diff = max(onnx_parity(tmp, model, torch.randn(b, *input_size, generator=g)) for b in (1, 3))
            if not diff <= tolerance:
                raise ExportError(f"ONNX Runtime output differs from PyTorch by {diff:.3g} (> {tolerance})")
            result["max_abs_diff"] = diff
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _logger.info("exported %s (opset %d)", path, opset)
    return result
