import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file
from torch.utils.data import TensorDataset

import mhaprune
from mhaprune.train import ClassificationLoss, DistillationLoss, TrainConfig, Trainer, mix_batch
from mhaprune.utils import distributed as du


def tiny_model():
    torch.manual_seed(0)
    return mhaprune.create_model("deit_micro", depth=1, drop_path_rate=0.0)


def data(n=64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 28, 28, generator=g)
    return TensorDataset(x, (x.mean((1, 2, 3)) > 0).long())


def _ddp_worker(rank, world, port, steps, out):
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    model = tiny_model()
    cfg = TrainConfig(epochs=0, max_steps=steps, batch_size=16, warmup_epochs=0, progress=False, clip_grad=1.0)
    t = Trainer(model, data(), None, cfg)
    t.fit()
    if rank == 0:
        torch.save({k: v.clone() for k, v in model.state_dict().items()}, out)
    del t, model  # the DDP wrapper holds the group
    du.shutdown()


def test_ddp_two_processes_equal_single_process(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp.pt"
    mp.spawn(_ddp_worker, args=(2, port, 6, str(out)), nprocs=2, join=True)
    single = tiny_model()
    Trainer(
        single,
        data(),
        None,
        TrainConfig(epochs=0, max_steps=6, batch_size=16, warmup_epochs=0, progress=False, clip_grad=1.0),
    ).fit()
    ddp = torch.load(out, weights_only=True)
    for k, v in single.state_dict().items():
        # same global batch of 16; only the order of float32 sums differs
        torch.testing.assert_close(ddp[k], v, rtol=1e-4, atol=1e-5, msg=k)


def _train_cmd(folder, out, extra=()):
    return [
        sys.executable,
        "-m",
        "mhaprune",
        "train",
        "--model",
        "deit_micro",
        "--model-arg",
        "depth=1",
        "--data",
        str(folder),
        "--epochs",
        "30",
        "--batch-size",
        "16",
        "--save-every",
        "3",
        "--deterministic",
        "--threads",
        "1",
        "--no-progress",
        "--out",
        str(out),
        *extra,
    ]


def test_kill_and_resume_gives_the_same_final_weights(tmp_path, image_folder):
    ref = tmp_path / "ref"
    subprocess.run(_train_cmd(image_folder, ref), check=True, capture_output=True)
    run = tmp_path / "run"
    proc = subprocess.Popen(_train_cmd(image_folder, run), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "model.safetensors").exists(), "the run finished before it could be killed"
    step = torch.load(run / "checkpoint.pt", weights_only=True)["step"]
    assert 0 < step < 240
    r = subprocess.run(_train_cmd(image_folder, run, ["--resume"]), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    a, b = load_file(ref / "model.safetensors"), load_file(run / "model.safetensors")
    assert sorted(a) == sorted(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_checkpoint_loads_weights_only_and_resume_needs_checkpoint(tmp_path, image_folder):
    out = tmp_path / "r"
    r = subprocess.run(_train_cmd(image_folder, out, ["--max-steps", "4"]), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["step"] == 4 and "optimizer" in state and "rng" in state
    for name in ("metrics.jsonl", "run.json", "resolved_config.json", "config.json", "model.safetensors"):
        assert (out / name).exists()
    r = subprocess.run(_train_cmd(image_folder, out, ["--max-steps", "4"]), capture_output=True, text=True)
    assert r.returncode == 2 and "already holds a run" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(_train_cmd(image_folder, tmp_path / "new", ["--resume"]), capture_output=True, text=True)
    assert r.returncode == 2 and "holds no checkpoint" in r.stderr


def test_distillation_loss():
    teacher = tiny_model().eval()
    x = torch.randn(4, 1, 28, 28)
    y = torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        logits = teacher(x)
    base = ClassificationLoss(0.0)
    assert torch.equal(DistillationLoss(base, teacher, alpha=0.0)(logits, y, x), base(logits, y))
    kd_only = DistillationLoss(base, teacher, alpha=1.0)(logits, y, x)
    assert abs(float(kd_only)) < 1e-6  # student == teacher
    assert float(DistillationLoss(base, teacher, alpha=1.0)(logits + torch.randn(4, 10), y, x)) > 0.01


def test_mixup_targets_are_distributions():
    x, y = torch.randn(8, 1, 28, 28), torch.arange(8) % 10
    mx, t = mix_batch(x, y, 10, mixup=0.8, cutmix=1.0, smoothing=0.1)
    assert mx.shape == x.shape and t.shape == (8, 10)
    torch.testing.assert_close(t.sum(1), torch.ones(8))


def test_batch_larger_than_dataset_is_a_clear_error():
    with pytest.raises(ValueError, match="larger than the training set"):
        Trainer(tiny_model(), data(8), None, TrainConfig(batch_size=16, progress=False))
