"""Process-group set-up for the three launch modes (one process, --multiprocessing-distributed, torchrun/SLURM)
and the few collectives the engine needs."""
from __future__ import annotations

import os
import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional

import torch
import torch.distributed as dist

from .devices import default_device
from .errors import ConfigError


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1       # processes per node
    device: torch.device = torch.device("cpu")
    owns_group: bool = False        # this call created the process group, so its owner tears it down

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _pick_device(requested: Optional[str], local_rank: int, gpu: Optional[int]) -> torch.device:
    """This process's device: --device (cpu, cuda, cuda:N, mps), default CUDA when present; refuses a device that
    does not exist here."""
    if requested in (None, "auto"):
        requested = default_device().type
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError):
        raise ConfigError(f"--device {requested}: not a device; expected cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {requested}: CUDA is not available on this machine; use --device cpu")
        index = gpu if gpu is not None else local_rank
        device = torch.device("cuda", index if device.index is None else device.index)
        count = torch.cuda.device_count()
        if device.index >= count:
            if torch.device(requested).index is not None:
                asked = f"--device {requested}"
            else:
                asked = f"--gpu {gpu}" if gpu is not None else f"local rank {local_rank} (one GPU per process)"
            raise ConfigError(f"{asked}: this machine has {count} GPU(s), cuda:0..cuda:{count - 1}")
        torch.cuda.set_device(device)
    elif device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"--device {requested}: MPS is not available on this machine; use --device cpu")
    elif device.type not in ("cpu", "mps"):
        raise ConfigError(f"--device {requested}: not supported; expected cpu, cuda, cuda:N or mps")
    return device


def init_distributed(cfg, local_index: Optional[int] = None) -> DistEnv:
    """Join the process group the launch mode implies and pick this process's device.

    ``local_index`` is set by --multiprocessing-distributed's spawn (the official mode: ranks are
    node_rank * procs_per_node + local_index); torchrun/SLURM provide RANK/WORLD_SIZE/LOCAL_RANK.
    """
    if local_index is not None:
        per_node = cfg.nprocs
        env = DistEnv(rank=cfg.rank * per_node + local_index, world_size=cfg.world_size * per_node,
                      local_rank=local_index, local_world_size=per_node)
        init_method = cfg.dist_url
    elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
        env = DistEnv(rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]),
                      local_rank=int(os.environ.get("LOCAL_RANK", 0)),
                      local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"])))
        init_method = "env://"
    elif int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ:
        env = DistEnv(rank=int(os.environ["SLURM_PROCID"]), world_size=int(os.environ["SLURM_NTASKS"]),
                      local_rank=int(os.environ.get("SLURM_LOCALID", 0)),
                      local_world_size=int(os.environ.get("SLURM_NTASKS_PER_NODE", "1").split("(")[0]))
        init_method = cfg.dist_url
    else:
        env = DistEnv()
        init_method = None
    env.device = _pick_device(cfg.device, env.local_rank, cfg.gpu)
    if env.distributed and not dist.is_initialized():
        backend = cfg.dist_backend or ("nccl" if env.device.type == "cuda" else "gloo")
        dist.init_process_group(backend=backend, init_method=init_method, world_size=env.world_size, rank=env.rank)
        env.owns_group = True
    return env


def all_gather_objects(obj: Any, env: DistEnv) -> List[Any]:
    """Every rank's ``obj``, in rank order (just ``[obj]`` without a process group)."""
    if not env.distributed:
        return [obj]
    out: List[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def any_rank(flag: bool, env: DistEnv) -> bool:
    """True when ``flag`` is true on any rank (a stop request, a non-finite loss)."""
    if not env.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=env.device if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


# What gloo and NCCL say when another process of the job died or stopped answering (they raise plain RuntimeErrors)
_LOST_PEER = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "Socket Timeout",
              "Timed out", "timed out", "NCCL communicator was aborted", "NCCL error", "connection refused")


def lost_peer(err: BaseException, env: DistEnv) -> Optional[str]:
    """The reason, when ``err`` says a collective failed because another process of the job is gone (a killed
    node); None for any other error."""
    if not env.distributed or not isinstance(err, RuntimeError):
        return None
    if not (isinstance(err, getattr(dist, "DistError", ())) or any(text in str(err) for text in _LOST_PEER)):
        return None
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return re.sub(r"^\[[^\]]*\]\s*", "", first).split(". ")[0]   # without gloo's source location and advice


def cleanup(env: DistEnv) -> None:
    """Destroy the process group if ``env``'s set-up created it (a caller that shares one group keeps it)."""
    if env.owns_group and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def quiet_unless_main(env: DistEnv) -> Iterator[None]:
    """Within: warnings are silenced on every rank but the main one (each would repeat rank 0's); the process's
    warning filters are restored on the way out."""
    with warnings.catch_warnings():
        if not env.is_main:
            warnings.simplefilter("ignore")
        yield
