"""Prune the timm and Hugging Face ``transformers`` models users already have.

:func:`adapt` replaces the attention modules of a timm ``VisionTransformer`` / ``SwinTransformer`` or a Hugging Face
ViT / DeiT / Swin / BERT-style encoder, in place, by exact equivalents built from our modules (called the same way
by the model's own ``forward``), and registers MLP adapters for their MLPs. The adapted model then goes through
:class:`mhaprune.Pruner`, :func:`mhaprune.prune`, ``apply_plan``, ``save_pruned`` / ``load_pruned`` and ONNX export
like our own models. :func:`from_timm` and :func:`from_hf` build and adapt in one call, offline.

Saved folders record how to rebuild the base model (timm name and arguments, or the Hugging Face class and
config); loading rebuilds it without network access, adapts it, replays the plan and loads the weights.
"""

from __future__ import annotations

import functools
import importlib
import logging
import types
from pathlib import Path

import torch
import torch.nn as nn

from ..adapters import MlpAdapter, prunable_modules, register_adapter, register_conversion
from ..formats.folder import load_state_strict
from .modules import (
    ExternalModelError,
    HFAttention,
    HFBertAttention,
    HFWindowAttention,
    TimmAttention,
    additive_mask,
    from_hf_attention,
    from_hf_bert_attention,
    from_hf_swin_attention,
    from_timm_attention,
    from_timm_window_attention,
)

_logger = logging.getLogger(__name__)

# Hugging Face BERT-style encoders share BertAttention's layout (self.query/key/value, output.dense/LayerNorm)
_BERT_FAMILY = ("Bert", "Roberta", "XLMRoberta", "Camembert", "Electra")


def _timm_converters() -> dict[type, callable]:
    try:
        from timm.layers import Mlp
        from timm.models.swin_transformer import WindowAttention as TimmWindowAttention
        from timm.models.vision_transformer import Attention as TimmVitAttention
    except ImportError:
        return {}
    register_adapter(Mlp, adapter=MlpAdapter())
    return {TimmVitAttention: from_timm_attention, TimmWindowAttention: from_timm_window_attention}


def _hf_converters() -> dict[type, callable]:
    try:
        from transformers.models.deit import modeling_deit
        from transformers.models.swin import modeling_swin
        from transformers.models.vit import modeling_vit
    except ImportError:
        return {}
    register_adapter(modeling_vit.ViTMLP, modeling_deit.DeiTMLP, modeling_swin.SwinMLP, adapter=MlpAdapter())
    conv = {
        modeling_vit.ViTAttention: from_hf_attention,
        modeling_deit.DeiTAttention: from_hf_attention,
        modeling_swin.SwinAttention: from_hf_swin_attention,
    }
    layers = []
    for prefix in _BERT_FAMILY:
        sub = {"XLMRoberta": "xlm_roberta"}.get(prefix, prefix.lower())
        try:
            module = importlib.import_module(f"transformers.models.{sub}.modeling_{sub}")
        except ImportError:
            continue
        att, layer = getattr(module, f"{prefix}Attention", None), getattr(module, f"{prefix}Layer", None)
        if att is not None and layer is not None:
            conv[att] = from_hf_bert_attention
            layers.append(layer)
    register_adapter(*layers, adapter=MlpAdapter(fc1="intermediate.dense", fc2="output.dense"))
    return conv


@functools.cache
def _converters() -> dict[type, callable]:
    """Foreign attention class -> converter; imports timm / transformers and registers the MLP adapters, once."""
    conv = {**_timm_converters(), **_hf_converters()}
    register_conversion(*conv, how="mhaprune.interop.adapt(model)")
    return conv


_FOREIGN_PACKAGES = ("timm.", "transformers.")


def adapt(model: nn.Module) -> nn.Module:
    """Replace every supported timm / Hugging Face attention module by its exact equivalent from our modules (in
    place) and make the MLPs prunable. Returns ``model``. Raises :class:`ExternalModelError` when nothing in the
    model can be pruned."""
    conv = _converters()
    replaced = 0
    for name, module in list(model.named_modules()):
        fn = conv.get(type(module))
        if fn is None:
            continue
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, leaf, fn(module))
        replaced += 1
    if not prunable_modules(model):
        raise ExternalModelError(
            f"{type(model).__name__} has no attention or MLP module that mhaprune can prune; supported: timm "
            f"VisionTransformer / SwinTransformer, Hugging Face ViT, DeiT, Swin and BERT-style encoders"
        )
    _logger.info("adapted %s: %d attention modules converted", type(model).__name__, replaced)
    return model


def adapt_if_foreign(model: nn.Module) -> nn.Module:
    """Adapt ``model`` when it holds timm / Hugging Face attention modules (what :class:`mhaprune.Pruner` calls, so
    that it takes those models directly); a Hugging Face model also records how to rebuild it for saving."""
    if not any(type(m).__module__.startswith(_FOREIGN_PACKAGES) for m in model.modules()):
        return model  # our own models: no need to import timm or transformers (seconds)
    conv = _converters()
    if not any(type(m) in conv for m in model.modules()):
        return model
    try:
        import transformers

        if isinstance(model, transformers.PreTrainedModel) and not hasattr(model, "arch_name"):
            return from_hf_model(model)
    except ImportError:
        pass
    return adapt(model)


# ----------------------------------------------------------------------------------------- building, offline
def _timm_input_size(model: nn.Module) -> tuple[int, int, int] | None:
    pe = getattr(model, "patch_embed", None)
    if pe is None or not hasattr(pe, "img_size"):
        return None
    h, w = pe.img_size if isinstance(pe.img_size, (tuple, list)) else (pe.img_size, pe.img_size)
    return (pe.proj.in_channels, int(h), int(w))


def _load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise ExternalModelError(f"--pretrained-file {path} does not exist")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
        raise ExternalModelError(f"{path} cannot be loaded safely ({type(e).__name__}: {e})") from e
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


def from_timm(name: str, pretrained_file: str | Path | None = None, **kwargs) -> nn.Module:
    """``timm.create_model(name, pretrained=False, **kwargs)`` (weights from ``pretrained_file``, a safetensors or
    ``weights_only`` torch file, if given), adapted. Nothing is downloaded."""
    try:
        import timm
    except ImportError as e:
        raise ExternalModelError("timm is not installed; pip install 'mhaprune[timm]'") from e
    try:
        model = timm.create_model(name, pretrained=False, **kwargs)
    except RuntimeError as e:
        raise ExternalModelError(f"timm cannot build {name!r}: {e}") from e
    if pretrained_file is not None:
        load_state_strict(model, _load_weights_file(pretrained_file), str(pretrained_file))
    adapt(model)
    model.arch_name = f"timm:{name}"
    model.model_args = dict(kwargs)
    model.input_size = _timm_input_size(model)
    return model


def _hf_class(name: str):
    import transformers

    cls = getattr(transformers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        raise ExternalModelError(f"{name!r} is not a transformers model class")
    return cls


def from_hf_model(model: nn.Module) -> nn.Module:
    """Adapt an in-memory Hugging Face model and record how to rebuild it (its class and config) for saving."""
    adapt(model)
    cfg = model.config
    model.save_pretrained = types.MethodType(_refuse_save_pretrained, model)
    model.arch_name = f"hf:{type(model).__name__}"
    model.model_args = {}
    model.mhaprune_build = {"hf_config": cfg.to_dict()}
    if getattr(cfg, "num_labels", None) is not None:
        model.num_classes = cfg.num_labels
    size = getattr(cfg, "image_size", None)
    if size is not None:
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        model.input_size = (cfg.num_channels, h, w)
    else:
        model.input_size = None
    return model


def _refuse_save_pretrained(self, *args, **kwargs):
    """``save_pretrained`` of an adapted model would not round-trip: our attention modules hold fused ``qkv``
    weights that ``from_pretrained`` does not read (it re-initialises them, with a warning only), and a pruned model
    has per-layer widths a Hugging Face config cannot state."""
    what = "pruned" if getattr(self, "pruning_plan", None) is not None else "adapted by mhaprune (fused q/k/v)"
    raise ExternalModelError(
        f"this {type(self).__name__} is {what}: save_pretrained() would write weights that from_pretrained() cannot "
        f"load back (it would re-initialise them). Save it with mhaprune.save_pruned(model, DIR) (or save_model for "
        f"a dense one) and load it with mhaprune.load_pruned(DIR); for deployment, export ONNX (mhaprune export)"
    )


def from_hf(path: str | Path, random_init: bool = False, model_class: str | None = None) -> nn.Module:
    """A Hugging Face model from a local folder (``config.json`` and, unless ``random_init``, its weights), adapted.
    The class is ``model_class`` or the config's ``architectures[0]``. Nothing is downloaded."""
    try:
        import transformers
    except ImportError as e:
        raise ExternalModelError("transformers is not installed; pip install 'mhaprune[hf]'") from e
    path = Path(path)
    if not (path / "config.json").exists():
        raise ExternalModelError(f"{path} holds no config.json; pass a folder written by save_pretrained()")
    config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
    name = model_class or (config.architectures or [None])[0]
    if name is None:
        raise ExternalModelError(f"{path}/config.json names no architecture; pass the model class name")
    cls = _hf_class(name)
    has_weights = any((path / f).exists() for f in ("model.safetensors", "model.safetensors.index.json"))
    if random_init:
        model = cls(config)
    elif not has_weights:
        raise ExternalModelError(
            f"{path} holds no model.safetensors; pass a folder with trained weights, or --random-init to prune "
            f"untrained weights"
        )
    else:
        from transformers.utils import logging as hf_logging

        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # our commands show their own progress (and none off a TTY)
        try:
            model = cls.from_pretrained(str(path), local_files_only=True)
        finally:
            if bars:
                hf_logging.enable_progress_bar()
    return from_hf_model(model.eval())


def build_from_config(cfg: dict) -> nn.Module:
    """Rebuild a base timm / Hugging Face model from a saved folder's ``config.json`` (no weights), adapted."""
    arch = cfg["architecture"]
    library, _, name = arch.partition(":")
    if library == "timm":
        return from_timm(name, **cfg.get("model_args", {}))
    if library == "hf":
        cls = _hf_class(name)
        if "hf_config" not in cfg:
            raise ExternalModelError(f"config.json for {arch} lacks its hf_config")
        config = cls.config_class.from_dict(cfg["hf_config"])
        return from_hf_model(cls(config).eval())
    raise ExternalModelError(f"unknown model source {library!r} in architecture {arch!r}")


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Give ``model`` a fresh, untrained classifier head of ``num_classes`` outputs, in place (and return it).

    For a trained or pruned model and a dataset with other classes: what comes out must be fine-tuned (``mhaprune
    train --checkpoint DIR --num-classes N``). Works on our models (``head``), adapted timm models
    (``reset_classifier``) and Hugging Face ``*ForImageClassification`` / ``*ForSequenceClassification`` models
    (``classifier``, and ``config.num_labels``); the recorded builder arguments follow, so the saved folder
    reloads with the new head. Pruning does not touch the head, so a pruned model keeps its plan."""
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    arch = getattr(model, "arch_name", "") or ""
    if arch.startswith("hf:"):
        old = getattr(model, "classifier", None)
        if not isinstance(old, nn.Linear):
            raise ExternalModelError(f"{arch} has no linear classifier head (model.classifier) to replace")
        model.classifier = _fresh_linear(old, num_classes)
        model.config.num_labels = num_classes  # also rebuilds id2label / label2id
        model.num_labels = num_classes
        model.mhaprune_build = {**getattr(model, "mhaprune_build", {}), "hf_config": model.config.to_dict()}
    elif arch.startswith("timm:"):
        ref = model.get_classifier()
        model.reset_classifier(num_classes)
        new = model.get_classifier()
        if isinstance(ref, nn.Linear) and isinstance(new, nn.Linear):
            new.to(device=ref.weight.device, dtype=ref.weight.dtype)
        model.model_args = {**getattr(model, "model_args", {}), "num_classes": num_classes}
    else:
        old = getattr(model, "head", None)
        if not isinstance(old, nn.Linear):
            raise ValueError(f"{arch or type(model).__name__} has no linear classifier head (model.head) to replace")
        model.head = _fresh_linear(old, num_classes)
        nn.init.trunc_normal_(model.head.weight, std=0.02)  # our models' head initialisation
        nn.init.zeros_(model.head.bias)
        model.model_args = {**getattr(model, "model_args", {}), "num_classes": num_classes}
    model.num_classes = num_classes
    _logger.info("replaced the classifier head of %s by a fresh one with %d outputs", arch or "the model", num_classes)
    return model


def _fresh_linear(old: nn.Linear, out_features: int) -> nn.Linear:
    return nn.Linear(old.in_features, out_features, bias=old.bias is not None).to(
        device=old.weight.device, dtype=old.weight.dtype
    )


def is_external(arch: str) -> bool:
    return arch.startswith(("timm:", "hf:"))


__all__ = [
    "ExternalModelError",
    "HFAttention",
    "HFBertAttention",
    "HFWindowAttention",
    "TimmAttention",
    "adapt",
    "adapt_if_foreign",
    "additive_mask",
    "build_from_config",
    "from_hf",
    "from_hf_model",
    "from_timm",
    "is_external",
    "replace_head",
]
