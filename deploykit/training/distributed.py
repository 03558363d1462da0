"""One process or many: the process group (``torchrun`` sets the environment), the device, and the
few collective operations training needs. Without ``torchrun`` everything degrades to one process."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor, nn

from deploykit.errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    """This process's rank among ``world`` processes and its device. Rank 0 alone writes files."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def log(self, message: str) -> None:
        """One line on stderr, from rank 0 only."""
        if self.is_main:
            print(message, file=sys.stderr, flush=True)


def is_main_process() -> bool:
    """Whether this process is rank 0 of a torchrun job, or runs alone: the one that reports."""
    return int(os.environ.get("RANK", "0")) == 0


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` → the local CUDA device if there is one, else the CPU. One GPU per process: a local
    rank without a GPU of its own is a ConfigError (sharing one would fail inside NCCL)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but torch sees no CUDA device here")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise ConfigError(f"local rank {local_rank} has no GPU of its own: this machine has {count} "
                              f"CUDA device{'s' if count != 1 else ''}; start at most {count} processes per "
                              "node (torchrun --nproc_per_node)")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


@contextmanager
def distributed(device: str = "auto") -> Iterator[DistContext]:
    """Join the process group ``torchrun`` describes (gloo on CPU, nccl on CUDA), or run alone.

    A group that is already initialized (by the caller) is used as is and left open.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    target = pick_device(device, local_rank)
    if world <= 1:
        yield DistContext(device=target)
        return
    created = not dist.is_initialized()
    backend = "nccl" if target.type == "cuda" else "gloo"
    if created:
        if target.type == "cuda":
            torch.cuda.set_device(target)
        # device_id binds the group to this rank's GPU (NCCL then connects eagerly, on the right device)
        dist.init_process_group(backend=backend, **({"device_id": target} if target.type == "cuda" else {}))
    try:
        yield DistContext(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank,
                          device=target, backend=dist.get_backend())
        if created:
            _leave_together()
    finally:
        if created:
            dist.destroy_process_group()


def _leave_together() -> None:
    """End a stage that succeeded on every rank: free what still holds the group (DDP's reducer in a
    reference cycle), then wait for every rank. A rank that tears its group down while a peer is still
    working (rank 0 writing the result) can abort at exit in gloo ("terminate called without an active
    exception"), failing a run whose work is done. Not after an error: the other ranks may never come."""
    gc.collect()
    dist.barrier()


def all_reduce_sum(values: Tensor, ctx: DistContext) -> Tensor:
    """Sum over ranks (in place, returned for convenience); a no-op for one process."""
    if ctx.distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def broadcast_buffers(module: nn.Module, ctx: DistContext) -> None:
    """Give every rank rank 0's buffers (BatchNorm statistics drift apart by one local update)."""
    if ctx.distributed:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def check_agree(value: int, ctx: DistContext, what: str) -> None:
    """Fail loudly if ranks hold different values of something that must be shared (a sampled gate set)."""
    if not ctx.distributed:
        return
    both = torch.tensor([value, -value], dtype=torch.int64, device=ctx.device)
    dist.all_reduce(both, op=dist.ReduceOp.MAX)
    if both[0].item() != -both[1].item():
        raise RuntimeError(f"ranks disagree on {what}; distributed training would diverge")


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def amp_dtype(ctx: DistContext, enabled: bool) -> torch.dtype | None:
    """Mixed precision on CUDA only: bfloat16 where the GPU has it, else float16 (with a grad scaler)."""
    if not enabled or ctx.device.type != "cuda":
        return None
    # including_emulation=False: the default counts bf16 that is emulated (True on T4 and V100)
    return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16


def autocast(ctx: DistContext, dtype: torch.dtype | None):
    """``torch.autocast`` for the run's device, disabled when ``dtype`` is None."""
    return torch.autocast(device_type=ctx.device.type, dtype=dtype, enabled=dtype is not None)
