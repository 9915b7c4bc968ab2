"""torch.distributed plumbing for meta-training: process group, rank, device and collectives.

Meta-training spreads the tasks of one outer step over the ranks of a process group (gloo on CPU,
NCCL on GPUs) started by ``torchrun`` (or SLURM ``srun`` + ``torchrun``); see ``docs/distributed.md``.
Everything here goes through :class:`Comm`: with one process (``Comm.serial()``) every collective
is the identity, so the serial loop and a K-rank run execute the same code.

Exactness: :meth:`Comm.sum_` adds the ranks' tensors with ``all_reduce(SUM)``. The training loop
gives every task its own row of a buffer (zeros in the rows of other ranks' tasks); adding zeros
is exact, so after the all-reduce every rank holds every task's row bit for bit and the rows are
then summed in task order, the same additions as a serial run.
"""

from __future__ import annotations

import atexit
import datetime
import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..core.device import get_device

__all__ = ["Comm", "setup", "shutdown", "env_world_size", "launched_by_torchrun", "rank_device", "cpu_threads"]

# how long a collective may wait for a slow or dead rank before every rank fails (instead of hanging)
DEFAULT_TIMEOUT_S = 1800.0


def env_world_size() -> int:
    """``$WORLD_SIZE`` (set by torchrun/SLURM launchers), 1 when absent."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def launched_by_torchrun() -> bool:
    """True when the variables a process group is initialised from (``env://``) are all set."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def _local() -> tuple[int, int]:
    """(local rank, ranks on this machine) from torchrun's ``LOCAL_RANK``/``LOCAL_WORLD_SIZE``."""
    world = dist.get_world_size() if dist.is_initialized() else env_world_size()
    return int(os.environ.get("LOCAL_RANK", "0")), int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))


def cpu_threads(local_world_size: int) -> int:
    """Intra-op threads per rank so that the ranks on one machine share its cores without
    oversubscribing them: ``max(1, usable cores // local_world_size)``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, int(local_world_size)))


def share_cores(threads: int | None = None) -> int:
    """Set this process's intra-op threads to ``threads`` (default :func:`cpu_threads` of the
    ranks on this machine) so that co-located ranks do not oversubscribe the cores; returns it."""
    n = int(threads) if threads is not None else cpu_threads(_local()[1])
    torch.set_num_threads(n)
    return n


def rank_device(device=None) -> torch.device:
    """The device of this rank: ``cuda:{LOCAL_RANK}`` when ``device`` is None or ``"cuda"`` (no
    index) and GPUs exist, the given device otherwise (CPU when there are no GPUs)."""
    local_rank, _ = _local()
    if device is None or str(device) == "cuda":
        if torch.cuda.is_available():
            if local_rank >= torch.cuda.device_count():
                raise RuntimeError(f"local rank {local_rank} but only {torch.cuda.device_count()} GPU(s) here; "
                                   "start one rank per GPU (torchrun --nproc_per_node=<GPUs>)")
            return torch.device(f"cuda:{local_rank}")
        if device is not None:
            raise RuntimeError("device 'cuda' requested but CUDA is not available here")
        return torch.device("cpu")
    return get_device(device)


_OWNED = False          # this module initialised the process group (and destroys it at exit)
_THREADS_SET = False


def setup(device=None, threads: int | None = None, backend: str | None = None,
          timeout_s: float = DEFAULT_TIMEOUT_S) -> "Comm":
    """Join (or reuse) the process group and return this rank's :class:`Comm`.

    Initialises from the environment (``env://``: ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
    ``MASTER_PORT``, as torchrun sets them) unless a group is already initialised. Backend: NCCL
    when this rank's device is a GPU, else gloo. On CPU the intra-op threads are set once per
    process to ``threads`` (default :func:`cpu_threads` of the ranks on this machine)."""
    global _OWNED, _THREADS_SET
    dev = rank_device(device)
    if not dist.is_initialized():
        if not launched_by_torchrun():
            missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
            raise RuntimeError("distributed training needs an initialised torch.distributed process group or the "
                               f"variables torchrun sets (missing: {', '.join(missing)}); launch with "
                               "'torchrun --nproc_per_node=K ...' or pass distributed=False")
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
        kwargs = {"device_id": dev} if backend == "nccl" else {}
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s), **kwargs)
        _OWNED = True
        atexit.register(shutdown)
    elif dev.type == "cuda":
        torch.cuda.set_device(dev)
    if dev.type == "cpu" and (threads is not None or not _THREADS_SET):
        share_cores(threads)
        _THREADS_SET = True
    return Comm(dist.get_rank(), dist.get_world_size(), dev, True)


def shutdown() -> None:
    """Destroy the process group if this module created it (safe to call twice)."""
    global _OWNED
    if _OWNED and dist.is_initialized():
        dist.destroy_process_group()
    _OWNED = False


@dataclass(frozen=True)
class Comm:
    """This process's place in a training run: ``rank`` of ``world`` ranks, its ``device``.

    Collectives act in place on tensors of ``device`` (NCCL needs them on the GPU); with
    ``active=False`` (one process) they are no-ops."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    active: bool = False

    @classmethod
    def serial(cls, device: torch.device | None = None) -> "Comm":
        return cls(0, 1, device or torch.device("cpu"), False)

    @property
    def is_main(self) -> bool:
        """Rank 0: the only rank that writes files, logs and progress bars."""
        return self.rank == 0

    def mine(self, count: int) -> list[int]:
        """The task indices ``0..count-1`` this rank runs: ``t`` with ``t % world == rank``."""
        return list(range(self.rank, count, self.world))

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """All-reduce SUM in place (every rank ends with the sum over ranks)."""
        if self.active and self.world > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def min_int(self, value: int) -> int:
        """The smallest ``value`` over ranks (e.g. the first task index that diverged)."""
        if not (self.active and self.world > 1):
            return int(value)
        t = torch.tensor([int(value)], dtype=torch.int64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return int(t.item())

    def broadcast_float(self, value: float | None, src: int = 0) -> float:
        """``value`` of rank ``src`` on every rank (float64)."""
        if not (self.active and self.world > 1):
            return float(value)
        t = torch.tensor([float("nan") if value is None else float(value)], dtype=torch.float64, device=self.device)
        dist.broadcast(t, src)
        return float(t.item())

    def verify_same(self, text: str, what: str) -> None:
        """Raise RuntimeError on every rank unless all ranks hold the same ``text`` (compared by a
        64-bit hash gathered from every rank): catches ranks that read other data, settings or
        checkpoints (e.g. a stale file on one node)."""
        if not (self.active and self.world > 1):
            return
        h = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little", signed=True)
        mine = torch.tensor([h], dtype=torch.int64, device=self.device)
        every = [torch.zeros_like(mine) for _ in range(self.world)]
        dist.all_gather(every, mine)
        differ = [r for r, t in enumerate(every) if int(t.item()) != int(every[0].item())]
        if differ:
            raise RuntimeError(f"ranks disagree on {what}: ranks {differ} differ from rank 0 (same code, data, "
                               "settings and checkpoint files must reach every rank)")

    def barrier(self) -> None:
        if self.active and self.world > 1:
            dist.barrier()
