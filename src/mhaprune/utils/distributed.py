"""torch.distributed helpers (torchrun sets RANK/WORLD_SIZE/LOCAL_RANK)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_distributed(device: str) -> tuple[int, int, int]:
    """Initialise the process group when launched by torchrun; returns ``(rank, world_size, local_rank)``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
        if restart > 0 and "MASTER_ADDR" in os.environ:
            # a torchrun restart: the agent's store still holds the last attempt's addresses; a prefix per attempt
            # keeps the new group from connecting to the dead workers
            from datetime import timedelta

            base = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=False,
                                 timeout=timedelta(seconds=300))  # fmt: skip
            store = dist.PrefixStore(f"mhaprune/attempt_{restart}", base)
            dist.init_process_group(backend=backend, store=store, rank=int(os.environ["RANK"]), world_size=world)
        else:
            dist.init_process_group(backend=backend)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        torch.cuda.set_device(local)
    return dist.get_rank(), dist.get_world_size(), local


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def shutdown(*, wait: bool = True) -> None:
    """Tear the process group down before the interpreter does: with ``wait`` every rank first meets at a barrier
    (so no rank closes its connections while another still talks), then the objects that hold the group (a DDP
    wrapper in a reference cycle) are collected and the group is destroyed. Without it, gloo's worker threads can be
    destroyed during interpreter finalization and abort the process (SIGABRT) after the work is done."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    import gc

    if wait and dist.get_world_size() > 1:
        dist.barrier()
    gc.collect()
    dist.destroy_process_group()
