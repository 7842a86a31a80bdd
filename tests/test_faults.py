"""Faults of real runs: a full disk (a size-limited tmpfs as the output place) ends every writing command with exit
2 and one line naming the file and the cause; nothing half-written or temporary is left, and the last good
checkpoint stays intact."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mhaprune.cli import main
from tests.test_reliability import _wait_for


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of a given size mounted under ``tmp_path`` (needs root / CAP_SYS_ADMIN: skipped where the machine
    cannot mount one)."""
    mounted = []

    def mount(size_bytes: int) -> Path:
        where = tmp_path / f"fs{len(mounted)}"
        where.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(where)],
                           capture_output=True, text=True)  # fmt: skip
        if r.returncode != 0:
            pytest.skip(f"this machine cannot mount a size-limited tmpfs ({r.stderr.strip() or r.returncode})")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", str(where)], check=False)


def _fill(fs: Path, leave: int) -> None:
    """Fill the file system but ``leave`` bytes."""
    st = os.statvfs(fs)
    free = st.f_bavail * st.f_frsize
    with open(fs / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))


def _leftovers(fs: Path) -> list[str]:
    return sorted(str(p.relative_to(fs)) for p in fs.rglob("*") if p.is_file() and p.name != "filler")


def test_export_to_a_full_disk_is_one_line_and_leaves_nothing(small_disk, capsys):
    fs = small_disk(1 << 20)
    _fill(fs, 16 << 10)
    out = fs / "m.onnx"
    assert main(["export", "--model", "deit_micro", "--onnx", str(out), "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {out}" in err and "No space left on device" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert _leftovers(fs) == []  # no partial file, no temp file


def test_prune_onto_a_full_disk_is_one_line_and_leaves_no_temp_file(small_disk, image_folder, capsys):
    fs = small_disk(1 << 20)
    _fill(fs, 48 << 10)  # room for the small JSON files, not for the weights
    out = fs / "run"
    argv = ["prune", "--model", "deit_micro", "--random-init", "--model-arg", "depth=1", "--data", str(image_folder),
            "--method", "l1", "--target-macs", "0.6", "--eval-splits", "none", "--calib-size", "8", "--threads", "1",
            "--no-progress", "--out", str(out)]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if "error:" in ln]
    assert len(lines) == 1 and "No space left on device" in lines[0] and f"cannot write {out}" in lines[0], err
    assert "Traceback" not in err
    assert not [p for p in _leftovers(fs) if p.endswith(".tmp")], _leftovers(fs)
    assert not (out / "config.json").exists()  # no folder that looks complete


def _train(out: Path, *extra) -> list[str]:
    return [sys.executable, "-m", "mhaprune", "train", "--model", "deit_micro", "--model-arg", "depth=1",
            "--data", "IMAGES", "--epochs", "3", "--batch-size", "16", "--threads", "1", "--no-progress",
            "--out", str(out), *extra]  # fmt: skip


def test_a_full_disk_mid_training_keeps_the_last_good_checkpoint(small_disk, tmp_path, image_folder):
    ref = tmp_path / "ref"
    argv = [a if a != "IMAGES" else str(image_folder) for a in _train(ref, "--max-steps", "9")]
    subprocess.run(argv, check=True, capture_output=True)
    size = (ref / "checkpoint.pt").stat().st_size
    # room for one checkpoint (and the small files) but not for a second one written beside it
    fs = small_disk(int(1.6 * size) + (64 << 10))
    run = fs / "run"
    argv = [a if a != "IMAGES" else str(image_folder) for a in _train(run)]
    r = subprocess.run(argv, capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if "error:" in ln]
    assert len(lines) == 1 and "No space left on device" in lines[0] and "cannot write" in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    state = torch.load(run / "checkpoint.pt", weights_only=True)  # the last good checkpoint, whole
    assert state["step"] == 9  # the end of the first epoch (144 images / 16)
    assert not any(p.name.endswith(".tmp") for p in run.iterdir()), sorted(os.listdir(run))
    assert not (run / "model.safetensors").exists()


# ------------------------------------------------------------------------------------ one output, one run


def test_a_second_run_on_a_folder_in_use_fails_at_once_and_a_stale_lock_is_taken_over(tmp_path, image_folder):
    import json
    import signal
    import time

    run = tmp_path / "run"
    argv = [a if a != "IMAGES" else str(image_folder) for a in _train(run, "--epochs", "40", "--save-every", "5")]
    first = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: (run / ".mhaprune.lock").exists() and (run / "checkpoint.pt").exists(), first)
        assert json.loads((run / ".mhaprune.lock").read_text())["pid"] == first.pid
        t0 = time.time()
        for extra in ((), ("--resume",), ("--overwrite",)):
            r = subprocess.run(argv + list(extra), capture_output=True, text=True)
            assert r.returncode == 2 and f"is in use by process {first.pid}" in r.stderr, r.stderr
        assert time.time() - t0 < 60  # at once, not after the first run
        assert first.poll() is None  # the first run was not disturbed
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert (run / ".mhaprune.lock").exists()  # a killed process leaves its lock: stale now
    r = subprocess.run(argv[:-2] + ["--out", str(run), "--epochs", "2", "--resume"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"taking over the stale lock of process {first.pid}" in r.stderr
    assert not (run / ".mhaprune.lock").exists() and (run / "model.safetensors").exists()


def test_two_exports_to_one_file_never_both_write_it(tmp_path):
    out = tmp_path / "m.onnx"
    argv = [sys.executable, "-m", "mhaprune", "export", "--model", "deit_micro", "--onnx", str(out), "--threads", "1"]
    procs = [subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.returncode, err) for p in procs for _, err in [p.communicate(timeout=300)]]
    codes = sorted(c for c, _ in results)
    assert codes == [0, 2], results  # one wrote it; the other was refused (in use, or it exists by then)
    err = next(e for c, e in results if c == 2)
    assert "is in use by process" in err or "exists; pass --overwrite" in err
    assert out.exists() and not (tmp_path / "m.onnx.lock").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_a_torchrun_restart_resumes_the_run_and_other_ranks_leave_the_folder_to_rank_0(tmp_path, monkeypatch):
    """Under ``torchrun --max-restarts``, a restarted worker continues from the folder's checkpoint (``--resume``
    implied), and ranks other than 0 neither check nor lock the folder (rank 0 owns it)."""
    import argparse

    from mhaprune.cli._common import elastic_resume, prepare_out_dir

    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"x")
    args = argparse.Namespace(resume=False, overwrite=True)
    elastic_resume(args, str(run))
    assert not args.resume  # the first attempt: as given
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    elastic_resume(args, str(run))
    assert args.resume and not args.overwrite
    monkeypatch.setenv("RANK", "1")
    assert prepare_out_dir(str(run), False, False) == run  # would refuse on rank 0: it holds a run
    assert not (run / ".mhaprune.lock").exists()


def _workers(pid: int) -> list[int]:
    """The training workers among ``pid``'s children (not helper processes such as a resource tracker)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"mhaprune" in cmdline and b"train" in cmdline:
            out.append(int(stat.parent.name))
    return sorted(out)


def _torchrun(images, out: Path) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--max-restarts", "1",
            "--standalone", "-m", "mhaprune", "train", "--model", "deit_micro", "--model-arg", "depth=1",
            "--model-arg", "drop_path_rate=0.0", "--data", str(images), "--epochs", "6", "--batch-size", "16",
            "--save-every", "3", "--deterministic", "--no-augment", "--device", "cpu", "--threads", "1",
            "--no-progress", "--out", str(out)]  # fmt: skip


def test_a_lost_rank_under_torchrun_restarts_and_ends_with_the_uninterrupted_weights(tmp_path, image_folder):
    """``torchrun --nproc-per-node 2 --max-restarts 1`` (gloo on CPU): one worker killed mid-epoch; the agent
    restarts both, they resume from the last checkpoint, and the final weights equal an uninterrupted run's."""
    import signal

    from safetensors.torch import load_file

    if not Path("/proc/self/stat").exists():
        pytest.skip("needs /proc to find torchrun's workers")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = tmp_path / "ref"
    subprocess.run(_torchrun(image_folder, ref), check=True, capture_output=True, env=env, timeout=300)
    run = tmp_path / "run"
    log = open(tmp_path / "log.txt", "w")  # noqa: SIM115 - closed below
    agent = subprocess.Popen(_torchrun(image_folder, run), stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_for(lambda: (run / "checkpoint.pt").exists(), agent)
        workers = _workers(agent.pid)
        assert len(workers) == 2, workers
        step = torch.load(run / "checkpoint.pt", weights_only=True)["step"]
        os.kill(workers[-1], signal.SIGKILL)
        assert agent.wait(timeout=300) == 0, (tmp_path / "log.txt").read_text()[-3000:]
    finally:
        if agent.poll() is None:
            agent.kill()
        log.close()
    text = (tmp_path / "log.txt").read_text()
    assert "torchrun restart 1: resuming the run" in text and step < 54
    a, b = load_file(ref / "model.safetensors"), load_file(run / "model.safetensors")
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
