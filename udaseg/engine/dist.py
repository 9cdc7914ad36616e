"""Tiny helpers around ``torch.distributed``; every one is a no-op without a process group, so
the same code runs under ``torchrun`` and in a plain process."""

from __future__ import annotations

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
