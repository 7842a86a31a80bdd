"""Shared CLI helpers: user errors, model loading, key=value model arguments, YAML recipes."""

from __future__ import annotations

import ast
import os
import shutil
from pathlib import Path

import torch

from ..data import DatasetError
from ..export import CheckpointError, ExportError
from ..models import UnknownModelError
from ..train import TrainingError


class UserError(ValueError):
    """Bad input from the command line: reported without a traceback, exit code 2."""


USER_ERRORS = (
    UserError,
    DatasetError,
    CheckpointError,
    ExportError,
    UnknownModelError,
    TrainingError,
    ValueError,
    FileExistsError,
    PermissionError,
    FileNotFoundError,
)


def parse_model_args(pairs: list[str] | None) -> dict:
    """``["drop_path_rate=0.1", "attn_type=LLSS"]`` -> dict (Python literals where they parse, else strings)."""
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise UserError(f"--model-arg expects KEY=VALUE, got {pair!r}")
        k, v = pair.split("=", 1)
        try:
            out[k.strip()] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k.strip()] = v
    return out


def load_yaml_config(path: str | None) -> dict:
    if not path:
        return {}
    import yaml

    p = Path(path)
    if not p.exists():
        raise UserError(f"config file {p} does not exist")
    try:
        cfg = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"config file {p} is not valid YAML: {e}") from e
    if not isinstance(cfg, dict):
        raise UserError(f"config file {p} must hold a mapping of option: value")
    return {k.replace("-", "_"): v for k, v in cfg.items()}


def resolve(args, defaults: dict, recipe: dict) -> dict:
    """Explicit flags win over the YAML recipe, which wins over the built-in defaults."""
    out = {}
    unknown = set(recipe) - set(defaults)
    if unknown:
        raise UserError(f"unknown option(s) in the config file: {', '.join(sorted(unknown))}")
    for k, d in defaults.items():
        v = getattr(args, k, None)
        out[k] = v if v is not None else recipe.get(k, d)
    return out


def pick_device(name: str | None) -> str:
    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name} requested but CUDA is not available; use --device cpu")
    return name


def prepare_out_dir(
    out: str, overwrite: bool, resume: bool, markers=("config.json", "checkpoint.pt"), create: bool = True
) -> Path:
    """Refuse to write into a folder that already holds a run unless ``--overwrite`` or ``--resume``.

    With ``create=False`` only validate (call it before any work, so that bad input leaves nothing behind). Under
    torchrun, rank 0 checks the folder and holds its lock; the other ranks only use it."""
    path = Path(out)
    if int(os.environ.get("RANK", "0") or 0) != 0:
        return path
    if overwrite and resume:
        raise UserError(
            "--overwrite and --resume conflict: --overwrite deletes the run in --out, --resume continues it; "
            "give one of them"
        )
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {path} exists and is not a folder")
    if path.is_dir():  # a run writing there now: say so first, whatever the flags
        from ..utils.lock import LockedError, RunLock

        try:
            RunLock(path).check()
        except LockedError as e:
            raise UserError(f"--out {e}") from e
    holds_run = path.is_dir() and any((path / m).exists() for m in markers)
    if holds_run and not (overwrite or resume):
        raise UserError(f"--out {path} already holds a run; pass --overwrite to replace it or --resume to continue it")
    if resume and not any((path / m).exists() for m in markers if m.endswith(".pt")):
        raise UserError(f"--resume given but {path} holds no checkpoint; drop --resume to start a new run")
    parent = next((p for p in [path, *path.parents] if p.exists()), Path("."))
    if not os.access(parent, os.W_OK):
        raise UserError(f"--out {path} is not writable; choose another folder")
    if not create:
        return path
    from ..utils.lock import LOCK_NAME, LockedError, RunLock

    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"--out {path} is not writable ({e.strerror}); choose another folder") from e
    try:
        RunLock(path).acquire()  # one run per folder, before anything in it is replaced
    except LockedError as e:
        raise UserError(f"--out {e}") from e
    if holds_run and overwrite and not resume:
        for entry in path.iterdir():
            if entry.name != LOCK_NAME:
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    return path


def elastic_resume(args, out: str, markers=("checkpoint.pt",)) -> None:
    """Under torchrun's restarts (``--max-restarts``), a restarted worker continues the run from its checkpoint:
    ``--resume`` is implied when ``TORCHELASTIC_RESTART_COUNT`` > 0 and the folder holds one."""
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    if restarts > 0 and not args.resume and any((Path(out) / m).exists() for m in markers):
        import logging

        logging.getLogger(__name__).warning("torchrun restart %d: resuming the run in %s", restarts, out)
        args.resume, args.overwrite = True, False


def add_data_args(parser, default: str | None = None) -> None:
    """``--data``, ``--data-dir`` and ``--fit``: one data source for every command."""
    d = parser.add_argument_group("data")
    d.add_argument("--data", default=default, metavar="fashion-mnist|PATH", help="dataset or image-folder tree")
    d.add_argument("--data-dir", metavar="DIR", help="folder with the Fashion-MNIST IDX files")
    d.add_argument(
        "--channels",
        type=int,
        choices=(1, 3),
        help="convert the images to 1 (grayscale, ITU-R 601 luma) or 3 (RGB) channels; must be what the model "
        "takes (default: converted to the model's channels automatically)",
    )
    d.add_argument(
        "--fit",
        choices=("pad", "resize", "none"),
        help="bring images to the model's input size: pad smaller ones (Fashion-MNIST default), resize (image "
        "folders' default), or none (refuse other sizes)",
    )
    return d


def add_threads_arg(group) -> None:
    group.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch CPU threads (default: the free cores, i.e. the available cores minus the tasks running now; "
        "OMP_NUM_THREADS when set)",
    )


def load_model_arg(model: str | None, checkpoint: str | None, pretrained: bool = False, model_args=None):
    """A model from ``--model NAME`` (optionally with bundled weights) or ``--checkpoint DIR``."""
    from ..export import load_model
    from ..models import create_model

    if bool(model) == bool(checkpoint):
        raise UserError("give exactly one of --model NAME or --checkpoint DIR")
    if checkpoint:
        if model_args:
            raise UserError("--model-arg cannot be combined with --checkpoint (the folder fixes the architecture)")
        return load_model(checkpoint)
    return create_model(model, pretrained=pretrained, **(model_args or {}))


def check_classes(model, classes, fix: str) -> None:
    """The model's head must output exactly one score per class of the dataset; ``fix`` says what to do if not."""
    n = getattr(model, "num_classes", None)
    if not classes:
        raise UserError(
            "the images carry no labels (a folder without class subfolders): sort them into ROOT/<class>/<image>, "
            "or prune with a label-free objective (--objective logits or features: distillation from the dense model)"
        )
    if n is not None and n != len(classes):
        raise UserError(f"the dataset has {len(classes)} classes but the model's head outputs {n}; {fix}")


def new_head_hint(source: str, classes) -> str:
    """How to bring a trained model to the dataset's classes: a fresh head, fine-tuned (``mhaprune train``)."""
    return (
        f"fine-tune it on these classes first (a fresh head): mhaprune train {source} --num-classes {len(classes)} "
        f"--data DATA --out DIR, then use DIR"
    )


def set_threads(n: int | None) -> int:
    """Apply ``--threads`` (validated), or the default of :func:`mhaprune.utils.default_threads`; returns it."""
    import torch

    from ..utils import default_threads

    if n is not None and n < 1:
        raise UserError(f"--threads must be >= 1, got {n}")
    n = n or default_threads()
    torch.set_num_threads(n)
    return n
