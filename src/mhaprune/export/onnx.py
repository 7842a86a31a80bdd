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

from ..utils import write_error

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


class _TextOutputs(nn.Module):
    """A text encoder called with ``input_ids`` and ``attention_mask``: its logits (a model with a head) or its last
    hidden state ``(batch, sequence, hidden)``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        logits = getattr(out, "logits", None)
        return logits if logits is not None else out.last_hidden_state


def is_text_model(model: nn.Module) -> bool:
    """A Hugging Face model that takes token ids (it has a vocabulary and no image size)."""
    cfg = getattr(model, "config", None)
    return cfg is not None and getattr(cfg, "vocab_size", None) and not getattr(model, "input_size", None)


def text_inputs(model: nn.Module, batch: int, length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random token ids of the model's vocabulary, the last row padded to half its length (masked out)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    if batch > 1:
        mask[-1, length // 2 :] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _require(module: str, what: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError as e:
        raise ExportError(
            f"{what} needs the {module} package, which is not installed: pip install 'mhaprune[onnx]'"
        ) from e


def onnx_parity(path: str | Path, model: nn.Module, x) -> float:
    """Max abs difference between ONNX Runtime (CPU) and PyTorch outputs on ``x`` (an image batch, or a dict of
    ``input_ids`` / ``attention_mask`` for a text encoder; padded positions of its hidden states are left out)."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ExportError("onnxruntime is not installed; pip install 'mhaprune[onnx]'") from e
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {k: v.numpy() for k, v in x.items()} if isinstance(x, dict) else {session.get_inputs()[0].name: x.numpy()}
    (y,) = session.run(None, feeds)
    with torch.no_grad():
        ref = _TextOutputs(model).eval()(**x) if isinstance(x, dict) else _Logits(model).eval()(x)
    diff = (torch.from_numpy(y) - ref).abs()
    if isinstance(x, dict) and diff.ndim == 3:  # hidden states: the padded positions carry no meaning
        diff = diff[x["attention_mask"].bool()]
    return float(diff.max())


def export_onnx(
    model: nn.Module,
    path: str | Path,
    input_size=None,
    opset: int = DEFAULT_OPSET,
    check: bool = True,
    tolerance: float = 1e-4,
    overwrite: bool = True,
) -> dict:
    """Write ``model`` (eval mode, fp32, CPU) to ``path`` as ONNX with a dynamic batch axis; input ``input``, output
    ``logits``. A Hugging Face text encoder takes ``input_ids`` and ``attention_mask`` (dynamic batch and sequence
    length) and gives its ``logits`` or its ``last_hidden_state``. With ``check``, ONNX Runtime must reproduce
    PyTorch within ``tolerance`` (max abs) on a random batch of 1 and of 3 (text: of 5 and 12 tokens, one row
    padded), else :class:`ExportError` and no file is left. ``overwrite=False`` never replaces an existing file
    (the final link fails instead of a rename). Returns ``{"opset", "max_abs_diff", "path",
    "inputs"}``."""
    _require("onnx", "ONNX export")  # before any file is made
    if check:
        _require("onnxruntime", "the ONNX Runtime parity check (or pass check=False / --no-check)")
    text = is_text_model(model)
    input_size = tuple(input_size or getattr(model, "input_size", None) or ())
    if not text and len(input_size) != 3:
        raise ExportError("export needs the model's input size (C, H, W), or a Hugging Face text encoder")
    model = model.eval().float().cpu()
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise write_error(path, e) from e
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
            if text:  # input_ids, attention_mask -> logits or last_hidden_state; dynamic batch and sequence
                ex = text_inputs(model, 2, 7)
                has_logits = getattr(model(**ex), "logits", None) is not None
                output = "logits" if has_logits else "last_hidden_state"
                seq = {0: "batch", 1: "sequence"}
                torch.onnx.export(
                    _TextOutputs(model).eval(), (ex["input_ids"], ex["attention_mask"]), tmp, dynamo=False,
                    opset_version=opset, input_names=["input_ids", "attention_mask"], output_names=[output],
                    dynamic_axes={"input_ids": seq, "attention_mask": seq, output: {0: "batch"} if has_logits else seq},
                )  # fmt: skip
            else:
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
        result = {"opset": opset, "path": str(path), "inputs": ["input_ids", "attention_mask"] if text else ["input"]}
        if check:
            g = torch.Generator().manual_seed(0)
            if text:
                probes = [text_inputs(model, 1, 5, seed=1), text_inputs(model, 3, 12, seed=2)]
            else:
                probes = [torch.randn(b, *input_size, generator=g) for b in (1, 3)]
            diff = max(onnx_parity(tmp, model, x) for x in probes)
            if not diff <= tolerance:
                raise ExportError(f"ONNX Runtime output differs from PyTorch by {diff:.3g} (> {tolerance})")
            result["max_abs_diff"] = diff
        if overwrite:
            os.replace(tmp, path)
        else:  # no-clobber in one step: the link fails if the file appeared meanwhile
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise ExportError(f"{path} exists (written meanwhile); pass overwrite=True / --overwrite") from None
    except OSError as e:
        raise write_error(path, e) from e
    except RuntimeError as e:  # torch's serializer reports a full disk as a RuntimeError
        if "No space left" in str(e) or "write" in str(e).lower():
            raise write_error(path, OSError(28, "No space left on device")) from e
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _logger.info("exported %s (opset %d)", path, opset)
    return result
