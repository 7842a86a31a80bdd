"""The reliability table of ``docs/reliability.md``, row by row, plus the interrupt/resume and untrusted-file tests.

Each "Bad input" row of the table is run exactly as written there (placeholders substituted): exit code, message,
no traceback, and what is left on disk are asserted. A row without a setup here, or a setup without a row, fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import mhaprune
from mhaprune.cli import main
from mhaprune.export import save_model, save_pruned
from mhaprune.pruning import apply_plan, random_plan

DOC = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"
MARKER_ENV = "MHAPRUNE_PAYLOAD_MARKER"


def _table_rows() -> dict[str, dict]:
    """Rows of the "Bad input" table: id -> {command, message, exit, left}."""
    text = DOC.read_text()
    section = text.split("## Bad input", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 6 or cells[0] in ("id", "---"):
            continue
        rid, _, command, message, code, left = cells
        rows[rid] = {"command": command.strip("`"), "message": message, "exit": int(code), "left": left}
    return rows


ROWS = _table_rows()


class Payload:
    """Unpickling this creates the file named in $MHAPRUNE_PAYLOAD_MARKER: proof that code ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


def _payload_bytes(marker: Path) -> bytes:
    return pickle.dumps({"model": Payload(str(marker))}, protocol=2)


# ---------------------------------------------------------------- case set-ups: fill $DIR (or return None)
def _model_folder(path: Path, depth: int = 1, **kw) -> Path:
    torch.manual_seed(0)
    return save_model(mhaprune.create_model("deit_micro", depth=depth, **kw), path)


def _pruned_folder(path: Path, depth: int = 1, **kw) -> Path:
    torch.manual_seed(0)
    model = mhaprune.create_model("deit_micro", depth=depth, **kw)
    apply_plan(model, random_plan(model, model.input_size, 0.6, seed=1))
    return save_pruned(model, path)


def _edit_config(folder: Path, fn) -> Path:
    cfg = json.loads((folder / "config.json").read_text())
    fn(cfg)
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def _first_keep(cfg: dict) -> list[list[int]]:
    layer = next(iter(cfg["plan"]["layers"].values()))
    return layer["keep"]["qk"]


def _transplant_plan(folder: Path, donor: Path) -> Path:
    plan = json.loads((donor / "config.json").read_text())["plan"]
    return _edit_config(folder, lambda c: c.__setitem__("plan", plan))


def _images(folder: Path, classes: int, per_class: int, name="{}.png", content=None) -> Path:
    from PIL import Image

    for c in range(classes):
        (folder / f"c{c:02d}").mkdir(parents=True)
        for i in range(per_class):
            f = folder / f"c{c:02d}" / name.format(i)
            if content is not None:
                f.write_bytes(content)
            else:
                Image.fromarray(np.full((28, 28), 40 * c % 255, np.uint8), mode="L").save(f)
    return folder


def _setup_ckpt_other_arch(d):
    return _edit_config(_model_folder(d), lambda c: c.__setitem__("architecture", "flatten_deit_micro"))


def _setup_weights_truncated(d):
    _model_folder(d)
    w = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(w[: len(w) // 2])
    return d


def _setup_config_truncated(d):
    _model_folder(d)
    c = (d / "config.json").read_bytes()
    (d / "config.json").write_bytes(c[: len(c) // 2])
    return d


def _setup_weights_pickle(d):
    _model_folder(d)
    (d / "model.safetensors").write_bytes(_payload_bytes(d.parent / "payload-ran"))
    return d


def _setup_resume_pickle(d):
    d.mkdir()
    (d / "resolved_config.json").write_text("{}")
    (d / "checkpoint.pt").write_bytes(_payload_bytes(d.parent / "payload-ran"))
    return d


def _checkpointed_run(d: Path) -> Path:
    """A real (tiny) train run folder with its checkpoint and the checkpoint's SHA-256 record."""
    from mhaprune.train import TrainConfig, Trainer

    d.mkdir()
    (d / "resolved_config.json").write_text("{}")
    model = mhaprune.create_model("deit_micro")
    data = torch.utils.data.TensorDataset(torch.randn(8, 1, 28, 28), torch.zeros(8, dtype=torch.long))
    Trainer(model, data, None, TrainConfig(epochs=0, max_steps=1, batch_size=4, device="cpu", progress=False),
            out_dir=d).save_checkpoint()  # fmt: skip
    return d


def _flip_byte(path: Path, where: float = 0.6) -> None:
    data = bytearray(path.read_bytes())
    i = int(len(data) * where)
    data[i] ^= 0x10
    path.write_bytes(bytes(data))


def _setup_resume_bitflip(d):
    _flip_byte(_checkpointed_run(d) / "checkpoint.pt")
    return d


def _setup_resume_truncated(d):
    p = _checkpointed_run(d) / "checkpoint.pt"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    return d


def _setup_prune_resume_pickle(d):
    (d / "search").mkdir(parents=True)
    (d / "resolved_config.json").write_text("{}")
    (d / "search" / "checkpoint.pt").write_bytes(_payload_bytes(d.parent / "payload-ran"))
    return d


def _setup_plan_edit(fn):
    return lambda d: _edit_config(_pruned_folder(d), fn)


def _flat_images(d: Path) -> Path:
    """Images directly in the folder, no class subfolders."""
    _images(d.parent / "classes", 1, 12)
    (d.parent / "classes" / "c00").rename(d)
    return d


def _tiny_encoder(d: Path, tokenizer: bool) -> Path:
    from tests.conftest import tiny_text_encoder

    return tiny_text_encoder(d, tokenizer=tokenizer)


def _text_files(d: Path) -> Path:
    d.mkdir(parents=True)
    (d / "empty.txt").write_text("\n  \n")
    (d / "latin1.txt").write_bytes("caf\xe9 au lait\nna\xefve\n".encode("latin-1"))
    (d / "items.csv").write_text("id,text\n1,hello there\n2,general kenobi\n")
    return d


def _encoder_folder(d: Path) -> Path:
    """A mhaprune folder of a dense text encoder that records no source model."""
    from mhaprune.interop import from_hf
    from tests.conftest import tiny_text_encoder

    tiny_text_encoder(d.parent / "hf")
    save_model(from_hf(d.parent / "hf"), d)
    from mhaprune.data.text import copy_tokenizer

    copy_tokenizer(d.parent / "hf", d)
    return d


SETUPS = {
    "images-unlabeled": lambda d: _flat_images(d),
    "text-empty": _text_files,
    "text-not-utf8": _text_files,
    "text-csv-column": _text_files,
    "text-no-tokenizer": lambda d: _tiny_encoder(d, tokenizer=False),
    "eval-text-reference": _encoder_folder,
    "ckpt-incomplete": lambda d: (_model_folder(d) / "model.safetensors").unlink() or d,
    "ckpt-other-arch": _setup_ckpt_other_arch,
    "ckpt-unknown-arch": lambda d: _edit_config(
        _model_folder(d), lambda c: c.__setitem__("architecture", "no_such_model")
    ),
    "folder-newer-format": lambda d: _edit_config(_model_folder(d), lambda c: c.__setitem__("format_version", 99)),
    "ckpt-bad-args": lambda d: _edit_config(_model_folder(d), lambda c: c["model_args"].__setitem__("wings", 2)),
    "weights-corrupt": lambda d: (_model_folder(d) / "model.safetensors").write_bytes(os.urandom(4096)) and d,
    "weights-truncated": _setup_weights_truncated,
    "weights-pickle": _setup_weights_pickle,
    "config-corrupt": lambda d: (_model_folder(d) / "config.json").write_text("{not json") and d,
    "config-truncated": _setup_config_truncated,
    "plan-other-model": lambda d: _transplant_plan(_pruned_folder(d), _pruned_folder(d.parent / "donor", depth=2)),
    "plan-other-shape": lambda d: _transplant_plan(
        _pruned_folder(d), _pruned_folder(d.parent / "donor", embed_dim=192, num_heads=4)
    ),
    "plan-out-of-range": _setup_plan_edit(lambda c: _first_keep(c)[0].__setitem__(-1, 999)),
    "plan-duplicated": _setup_plan_edit(lambda c: _first_keep(c)[0].__setitem__(1, _first_keep(c)[0][0])),
    "plan-unequal": _setup_plan_edit(lambda c: _first_keep(c)[0].pop()),
    "plan-malformed": _setup_plan_edit(lambda c: c["plan"].pop("layers")),
    "data-empty": lambda d: _images(d, 2, 0),
    "data-unreadable": lambda d: _images(d, 2, 2, content=b"not a png"),
    "data-classes": lambda d: _images(d, 11, 2),
    "data-classes-fewer": lambda d: _images(d, 2, 4),
    "eval-classes": lambda d: _images(d, 2, 4),
    "out-is-file": lambda d: d.mkdir() or (d / "file.txt").write_text("x") and d,
    "out-holds-run": lambda d: _model_folder(d),
    "resume-pickle": _setup_resume_pickle,
    "resume-bitflip": _setup_resume_bitflip,
    "resume-truncated": _setup_resume_truncated,
    "weights-bitflip": lambda d: _flip_byte(_model_folder(d) / "model.safetensors") or d,
    "prune-resume-pickle": _setup_prune_resume_pickle,
    "export-exists": lambda d: d.mkdir() or (d / "model.onnx").write_text("x") and d,
    "recipe-invalid": lambda d: d.mkdir() or (d / "recipe.yaml").write_text("lr: [1,\n") and d,
    "recipe-unknown-key": lambda d: d.mkdir() or (d / "recipe.yaml").write_text("learning_rate: 0.1\n") and d,
}


def _snapshot(path: Path | None) -> dict:
    if path is None or not path.exists():
        return {}
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(path.rglob("*"))
    }


@pytest.fixture(scope="module")
def shared(tmp_path_factory, image_folder, text_encoder):
    root = tmp_path_factory.mktemp("shared")
    return {
        "$IMAGES": str(image_folder),
        "$MODEL": str(_model_folder(root / "model")),
        "$PRUNED": str(_pruned_folder(root / "pruned")),
        "$TEXT": str(text_encoder),
    }


def test_every_table_row_has_a_setup_or_needs_none():
    assert len(ROWS) >= 40
    needs_dir = {rid for rid, r in ROWS.items() if "$DIR" in r["command"]}
    assert needs_dir == set(SETUPS), f"rows using $DIR without a setup: {needs_dir - set(SETUPS)}; " + (
        f"setups without a row: {set(SETUPS) - needs_dir}"
    )


@pytest.mark.parametrize("rid", sorted(ROWS))
def test_table_row(rid, tmp_path, shared, capsys):
    row = ROWS[rid]
    case_dir = tmp_path / "case"
    if rid in SETUPS:
        SETUPS[rid](case_dir)
    before = _snapshot(case_dir)
    subs = {**shared, "$OUT": str(tmp_path / "out"), "$DIR": str(case_dir), "$TMP": str(tmp_path)}
    command = re.sub(r"\$[A-Z]+", lambda m: subs[m.group(0)], row["command"])
    argv = shlex.split(command)
    assert argv[0] == "mhaprune"
    capsys.readouterr()
    try:
        code = main(argv[1:])
    except SystemExit as e:  # argparse's own errors (an unknown choice): usage, then the error line, exit 2
        code = e.code
    err = capsys.readouterr().err
    assert code == row["exit"], err
    assert row["message"] in err, err
    prefix = f"mhaprune {argv[1]}: error: "
    assert "Traceback" not in err and (err.startswith(prefix) or (err.startswith("usage: ") and prefix in err)), err
    assert not (tmp_path / "payload-ran").exists(), "unpickling ran code"
    out = tmp_path / "out"
    if row["left"] == "none":
        assert not out.exists(), sorted(os.listdir(out))
        assert _snapshot(case_dir) == before, "the input folder was modified"
    else:
        assert row["left"] == "checkpoint"
        step = torch.load(out / "checkpoint.pt", weights_only=True)["step"]
        assert f"at step {step}" in err and str(out / "checkpoint.pt") in err
        assert not (out / "model.safetensors").exists() and not (out / "config.json").exists()


def test_debug_shows_the_traceback(capsys):
    with pytest.raises(Exception, match="Did you mean"):
        main(["--debug", "macs", "--model", "flaten_swin_micro"])


def test_console_entry_point_exits_2_without_traceback():
    r = subprocess.run(
        [sys.executable, "-m", "mhaprune", "macs", "--model", "flaten_swin_micro"], capture_output=True, text=True
    )
    assert r.returncode == 2 and "Did you mean" in r.stderr and "Traceback" not in r.stderr


# ------------------------------------------------------------------------------------ untrusted files
def test_pickle_payload_is_refused_by_every_loader(tmp_path):
    from mhaprune.export import CheckpointError, load_model
    from mhaprune.train import TrainConfig, Trainer, TrainingError

    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(_payload_bytes(marker))
    # the payload is real: plain unpickling runs it
    pickle.loads(evil.read_bytes())
    assert marker.exists()
    marker.unlink()
    with pytest.raises(pickle.UnpicklingError):
        torch.load(evil, weights_only=True)
    folder = _model_folder(tmp_path / "m")
    (folder / "model.safetensors").write_bytes(evil.read_bytes())
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(folder)
    model = mhaprune.create_model("deit_micro", depth=1)
    data = torch.utils.data.TensorDataset(torch.randn(8, 1, 28, 28), torch.zeros(8, dtype=torch.long))
    trainer = Trainer(model, data, None, TrainConfig(epochs=1, batch_size=4, device="cpu"))
    with pytest.raises(TrainingError, match="cannot be loaded safely"):
        trainer.load_checkpoint(evil)
    assert not marker.exists()


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    from mhaprune.utils import atomic_write_bytes

    target = tmp_path / "f.json"
    atomic_write_bytes(target, b"old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new" * 1000)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"], "a temp file was left behind"


# ------------------------------------------------------------------------------------ interrupted runs
def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mhaprune", *args]


def _train_argv(images, out, *extra):
    return _cli(
        "train", "--model", "deit_micro", "--model-arg", "depth=1", "--data", str(images), "--epochs", "6",
        "--batch-size", "16", "--save-every", "1000", "--deterministic", "--threads", "1", "--no-progress",
        "--out", str(out), *extra,
    )  # fmt: skip


def _wait_for(pred, proc, timeout=180.0):
    deadline = time.time() + timeout
    while not pred():
        assert proc.poll() is None, "the run ended before the event"
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


def _assert_same_weights(a: Path, b: Path):
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert sorted(wa) == sorted(wb)
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def _step_lines(path: Path) -> list[int]:
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if '"loss"' in line]


@pytest.fixture(scope="module")
def train_reference(tmp_path_factory, image_folder):
    ref = tmp_path_factory.mktemp("train") / "ref"
    subprocess.run(_train_argv(image_folder, ref), check=True, capture_output=True)
    return ref


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_signal_checkpoints_and_resumes_to_the_same_weights(tmp_path, image_folder, train_reference, sig,
                                                                    code):  # fmt: skip
    """Ctrl-C and SIGTERM (what batch schedulers and preemptible machines send) stop after the step with a
    checkpoint; --resume then ends with the weights of the uninterrupted run."""
    ref = train_reference
    run = tmp_path / "run"
    proc = subprocess.Popen(_train_argv(image_folder, run), stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (run / "metrics.jsonl").exists(), proc)  # log_every 50 > steps: written at the first epoch
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert f"{signal.Signals(sig).name} received" in err
    assert "Traceback" not in err
    assert f"checkpoint written to {run / 'checkpoint.pt'}" in err and "--resume" in err
    step = torch.load(run / "checkpoint.pt", weights_only=True)["step"]
    assert 0 < step < 54 and f"interrupted at step {step}" in err
    assert not (run / "model.safetensors").exists()
    r = subprocess.run(_train_argv(image_folder, run, "--resume"), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    _assert_same_weights(ref, run)
    assert _step_lines(run / "metrics.jsonl") == _step_lines(ref / "metrics.jsonl")


def test_resume_drops_metrics_logged_after_the_checkpoint(tmp_path, image_folder):
    out = tmp_path / "r"
    r = subprocess.run(_train_argv(image_folder, out, "--max-steps", "14"), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ckpt_step = torch.load(out / "checkpoint.pt", weights_only=True)["step"]
    # pretend a killed run had logged steps beyond its checkpoint, and was cut mid-line
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": ckpt_step + 5, "loss": 1.0}) + "\n" + '{"step": 99')
    (out / "config.json").unlink()
    (out / "model.safetensors").unlink()
    r = subprocess.run(_train_argv(image_folder, out, "--max-steps", "21", "--resume"), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert ckpt_step + 5 not in steps and 99 not in steps
    assert steps == sorted(steps)


def _prune_argv(images, out, *extra):
    return _cli(
        "prune", "--model", "deit_micro", "--random-init", "--model-arg", "depth=1", "--data", str(images),
        "--target-macs", "0.6", "--search-epochs", "3", "--finetune-epochs", "3", "--batch-size", "16",
        "--save-every", "4", "--calib-size", "8", "--deterministic", "--threads", "1", "--no-progress",
        "--out", str(out), *extra,
    )  # fmt: skip


@pytest.fixture(scope="module")
def prune_reference(tmp_path_factory, image_folder):
    ref = tmp_path_factory.mktemp("prune") / "ref"
    r = subprocess.run(_prune_argv(image_folder, ref), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return ref


def _kill_and_resume(stage: str, tmp_path, images, ref, sig=signal.SIGKILL):
    run = tmp_path / "run"
    proc = subprocess.Popen(_prune_argv(images, run), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (run / stage / "checkpoint.pt").exists(), proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if sig == signal.SIGTERM:  # stopped after the step, with a checkpoint and the hint, no traceback
        assert proc.returncode == 143 and "rerun the same command with --resume" in err and "Traceback" not in err
    assert not (run / "model.safetensors").exists(), "the run finished before it could be killed"
    search_ckpt = (run / "search" / "checkpoint.pt").read_bytes()
    r = subprocess.run(_prune_argv(images, run, "--resume", "--keep-checkpoints"), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    if stage == "finetune":  # the finished search was not run again
        assert (run / "search" / "checkpoint.pt").read_bytes() == search_ckpt
    _assert_same_weights(ref, run)
    plan, plan_ref = (json.loads((p / "config.json").read_text())["plan"] for p in (run, ref))
    assert plan == plan_ref
    rep, rep_ref = (json.loads((p / "report.json").read_text()) for p in (run, ref))
    assert rep["val"] == rep_ref["val"] and rep["pruned"] == rep_ref["pruned"]


def test_prune_killed_in_search_resumes_to_the_same_result(tmp_path, image_folder, prune_reference):
    _kill_and_resume("search", tmp_path, image_folder, prune_reference)


def test_prune_killed_in_finetune_resumes_to_the_same_result(tmp_path, image_folder, prune_reference):
    _kill_and_resume("finetune", tmp_path, image_folder, prune_reference)


@pytest.mark.parametrize("stage", ["search", "finetune"])
def test_prune_terminated_resumes_to_the_same_result(stage, tmp_path, image_folder, prune_reference):
    _kill_and_resume(stage, tmp_path, image_folder, prune_reference, sig=signal.SIGTERM)
