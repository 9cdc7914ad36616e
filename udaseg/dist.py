"""Tiny helpers around ``torch.distributed``; every one is a no-op without a process group, so
the same code runs under ``torchrun`` and in a plain process."""

from __future__ import annotations

import gc
import os
from datetime import timedelta

import torch
import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def init_from_env(device_type: str) -> bool:
    """Join the process group that ``torchrun`` describes in the environment (NCCL on GPUs,
    gloo on CPUs). Returns whether this process is part of a multi-process run."""
    if is_dist():
        return world_size() > 1
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return False
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=timedelta(minutes=30))
    return True


def destroy() -> None:
    """Leave the process group. DDP wrappers caught in reference cycles are collected first: one
    still holding the group while gloo shuts down can abort the process at exit."""
    if is_dist():
        gc.collect()  # no barrier: this also runs when a rank fails, and its peers must not wait
        dist.destroy_process_group()


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank (``obj`` itself without a process group)."""
    if not is_dist():
        return obj
    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if is_dist():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks, in place, and return it. NCCL only reduces GPU tensors, so a
    CPU tensor takes a round trip through the current CUDA device there."""
    if not is_dist():
        return tensor
    if dist.get_backend() == "nccl" and not tensor.is_cuda:
        on_gpu = tensor.cuda()
        dist.all_reduce(on_gpu, op=dist.ReduceOp.SUM)
        tensor.copy_(on_gpu.cpu())
    else:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(obj) -> list:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` without a process group."""
    if not is_dist():
        return [obj]
    out: list = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def shard_range(n: int, rank_: int | None = None, world: int | None = None) -> range:
    """The contiguous slice of ``range(n)`` that ``rank_`` of ``world`` processes handles: the
    first ``n % world`` ranks take one item more. No padding, so every index is handled exactly
    once (detectron2's ``InferenceSampler``; ``DistributedSampler`` would duplicate items)."""
    rank_ = rank() if rank_ is None else rank_
    world = world_size() if world is None else world
    base, extra = divmod(n, world)
    start = rank_ * base + min(rank_, extra)
    return range(start, start + base + (1 if rank_ < extra else 0))


class InferenceSampler(torch.utils.data.Sampler):
    """Yields this rank's :func:`shard_range` of a dataset of length ``n``, in order."""

    def __init__(self, n: int, rank_: int | None = None, world: int | None = None):
        self.indices = shard_range(n, rank_, world)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
