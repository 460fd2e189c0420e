"""Process-group set-up for the launch modes (one process, --multiprocessing-distributed's spawn, torchrun, SLURM's
srun) and the few collectives the engine needs.

What a launcher says about a process (rank, local rank, processes per node) is read by ``read_launch``, a pure
function of the configuration and the environment, so every launcher's mapping is testable without one; which GPU a
process takes is ``cuda_index``'s rule, also pure. ``init_distributed`` applies both and joins the group.
"""
from __future__ import annotations

import datetime
import gc
import ipaddress
import os
import re
import socket
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, List, Mapping, Optional, Sequence, TypeVar
from urllib.parse import urlparse

import torch
import torch.distributed as dist

from .devices import default_device, gpu_identity, resolve_device
from .errors import ConfigError, PromptIQAError, one_line

T = TypeVar("T")

# How long a rank waits in a collective for the others before the job fails. torch's default is 10 minutes for
# NCCL: too short for a first epoch that ends with rank 0 writing a multi-GB checkpoint to a network file system.
DEFAULT_DIST_TIMEOUT_S = 3600.0
DIST_TIMEOUT_ENV = "PROMPTIQA_DIST_TIMEOUT"   # seconds; --dist_timeout overrides it


class LaunchError(ConfigError):
    """The launcher's environment and the command line disagree (a rank layout this run cannot use)."""


class DistributedError(PromptIQAError, RuntimeError):
    """Another rank refused or failed: this rank stops too."""


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1       # processes per node
    device: torch.device = torch.device("cpu")
    owns_group: bool = False        # this call created the process group, so its owner tears it down
    group: bool = False             # a process group exists for this run (world size > 1, or --ddp with one process)
    timeout_s: float = DEFAULT_DIST_TIMEOUT_S

    @property
    def distributed(self) -> bool:
        """True when the run has a process group: collectives and DDP are used (also with one process and --ddp)."""
        return self.world_size > 1 or self.group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def nodes(self) -> int:
        return max(1, self.world_size // self.local_world_size)


@dataclass
class Launch:
    """What the launcher says about this process: the mode, ranks, processes per node (None: not said; the ranks'
    host names decide after joining), and the process group's init method (None: no group)."""

    mode: str                       # single | spawn | torchrun | slurm
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: Optional[int] = 1
    init_method: Optional[str] = None


def slurm_tasks_per_node(value: str) -> List[int]:
    """SLURM's compressed task counts per node ('3(x2),2' -> [3, 3, 2]); ValueError when malformed."""
    counts: List[int] = []
    for part in value.split(","):
        m = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if not m:
            raise ValueError(f"not a SLURM task count list: {value!r}")
        counts += [int(m.group(1))] * int(m.group(2) or 1)
    return counts


def _per_node(counts: Sequence[int], source: str) -> int:
    if len(set(counts)) > 1:
        raise LaunchError(f"{source}: the nodes run different numbers of processes ({', '.join(map(str, counts))}); "
                          f"the batch semantics need the same number on every node (e.g. srun --ntasks-per-node N)")
    return counts[0]


def _slurm_local_world_size(environ: Mapping[str, str], world_size: int) -> Optional[int]:
    """Processes per node from the variables srun sets: the step's and the job's task layout (always set), else
    --ntasks-per-node's variable (set only with that option); None when none of them describes ``world_size``
    tasks (the hosts decide)."""
    for name in ("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"):
        value = environ.get(name)
        if value:
            try:
                counts = slurm_tasks_per_node(value)
            except ValueError:
                continue
            if sum(counts) == world_size:
                return _per_node(counts, f"{name}={value}")
    value = environ.get("SLURM_NTASKS_PER_NODE", "")
    if value:
        try:
            per_node = slurm_tasks_per_node(value)[0]
        except ValueError:
            return None
        if per_node > 0 and world_size % per_node == 0:
            return per_node
    return None


def read_launch(cfg, local_index: Optional[int] = None, environ: Optional[Mapping[str, str]] = None) -> Launch:
    """The launch mode and this process's place in it, from ``cfg`` and the environment (``os.environ``).

    ``local_index`` is set by --multiprocessing-distributed's spawn (the official mode: ranks are node_rank *
    procs_per_node + local_index); torchrun sets RANK/WORLD_SIZE/LOCAL_RANK/LOCAL_WORLD_SIZE; srun sets SLURM_PROCID,
    SLURM_NTASKS, SLURM_LOCALID and the task layout per node (SLURM_STEP_TASKS_PER_NODE / SLURM_TASKS_PER_NODE).
    """
    environ = os.environ if environ is None else environ
    if local_index is not None:
        per_node = cfg.nprocs or 1
        return Launch("spawn", cfg.rank * per_node + local_index, cfg.world_size * per_node, local_index, per_node,
                      cfg.dist_url)
    if int(environ.get("WORLD_SIZE", "1")) > 1 or (getattr(cfg, "ddp", False) and "RANK" in environ):
        world = int(environ["WORLD_SIZE"])
        return Launch("torchrun", int(environ["RANK"]), world, int(environ.get("LOCAL_RANK", 0)),
                      int(environ.get("LOCAL_WORLD_SIZE", world)), "env://")
    if "SLURM_PROCID" in environ:
        world = int(environ.get("SLURM_STEP_NUM_TASKS") or environ.get("SLURM_NTASKS") or 1)
        if world > 1:
            return Launch("slurm", int(environ["SLURM_PROCID"]), world, int(environ.get("SLURM_LOCALID", 0)),
                          _slurm_local_world_size(environ, world), cfg.dist_url)
    if getattr(cfg, "ddp", False):   # one process asked for a process group of its own (the NCCL/DDP path on 1 GPU)
        url = cfg.dist_url
        if url == "env://" and not ("MASTER_ADDR" in environ and "MASTER_PORT" in environ):
            url = f"tcp://127.0.0.1:{free_port()}"
        return Launch("single", init_method=url)
    return Launch("single")


def cuda_index(local_rank: int, local_world_size: int, count: int, gpu: Optional[int] = None,
               requested: Optional[int] = None) -> int:
    """The CUDA device a process takes among the ``count`` it sees: --device cuda:N or --gpu N as given; else its
    local rank when the node's GPUs are all visible, or cuda:0 when each process sees one GPU of its own (SLURM's
    --gpus-per-task=1, cgroup-bound GRES). Refuses what does not exist or would put two processes on one GPU."""
    if count < 1:
        raise LaunchError("CUDA is available but no GPU is visible (CUDA_VISIBLE_DEVICES empty?)")
    if requested is not None or gpu is not None:
        index, asked = (requested, f"--device cuda:{requested}") if requested is not None else (gpu, f"--gpu {gpu}")
        if local_world_size > 1:
            raise LaunchError(f"{asked} with {local_world_size} processes per node would put every process on one "
                              f"GPU; leave it out (each process takes its local rank's GPU) or set "
                              f"CUDA_VISIBLE_DEVICES to choose the GPUs")
        if index >= count:
            raise LaunchError(f"{asked}: this process sees {count} GPU(s), cuda:0..cuda:{count - 1}")
        return index
    if local_world_size <= count:
        return local_rank
    if count == 1:
        return 0   # one GPU of its own per process: every process's cuda:0 is a different GPU
    raise LaunchError(f"{local_world_size} processes per node but each process sees {count} GPUs: give each process "
                      f"one GPU (srun --gpus-per-task=1) or all of the node's GPUs, one per process")


def dist_timeout(cfg, environ: Optional[Mapping[str, str]] = None) -> float:
    """Seconds a collective waits: --dist_timeout, else $PROMPTIQA_DIST_TIMEOUT, else DEFAULT_DIST_TIMEOUT_S."""
    value = getattr(cfg, "dist_timeout", None)
    if value is not None:
        return float(value)
    environ = os.environ if environ is None else environ
    text = environ.get(DIST_TIMEOUT_ENV)
    if not text:
        return DEFAULT_DIST_TIMEOUT_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise ConfigError(f"{DIST_TIMEOUT_ENV}={text!r}: expected a positive number of seconds")
    return seconds


def free_port() -> int:
    """A TCP port free on this host now (for a process group whose processes all run here)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_loopback_url(url: str) -> bool:
    """True when a tcp:// init method points at this host's loopback address (unreachable from other nodes)."""
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_launch(cfg) -> None:
    """Refuse, before any process starts, a launch whose processes would collide: spawn across nodes with a loopback
    or missing --dist-url, and --gpu N with more than one process."""
    spawn = bool(getattr(cfg, "multiprocessing_distributed", False))
    if spawn and cfg.world_size > 1:
        if cfg.dist_url == "env://" and not os.environ.get("MASTER_ADDR"):
            raise LaunchError(f"--world-size {cfg.world_size} (nodes) needs the address of node 0: --dist-url "
                              f"tcp://NODE0_HOST:PORT, the same on every node")
        if is_loopback_url(cfg.dist_url if cfg.dist_url != "env://" else f"tcp://{os.environ['MASTER_ADDR']}:0"):
            raise LaunchError(f"--dist-url {cfg.dist_url}: a loopback address cannot be reached from the other "
                              f"{cfg.world_size - 1} node(s); use node 0's host name or address")
    if cfg.gpu is not None:
        procs = (cfg.nprocs or (torch.cuda.device_count() if default_device().type == "cuda" else 1)) if spawn \
            else int(os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("WORLD_SIZE") or 1)
        if procs > 1:
            raise LaunchError(f"--gpu {cfg.gpu} with {procs} processes would put every process on GPU {cfg.gpu}; "
                              f"leave --gpu out, or choose the GPUs with CUDA_VISIBLE_DEVICES")


def init_distributed(cfg, local_index: Optional[int] = None) -> DistEnv:
    """Join the process group the launch mode implies and pick this process's device (see ``read_launch`` and
    ``cuda_index``). The group waits ``dist_timeout(cfg)`` seconds in a collective; on CUDA it is bound to the
    process's GPU, and two ranks on one GPU are refused."""
    launch = read_launch(cfg, local_index)
    device = resolve_device(cfg.device)   # the index of a GPU is chosen once the node's layout is known
    timeout = dist_timeout(cfg)
    wanted = launch.world_size > 1 or bool(getattr(cfg, "ddp", False))
    env = DistEnv(rank=launch.rank, world_size=launch.world_size, local_rank=launch.local_rank,
                  local_world_size=launch.local_world_size or 1, device=device, timeout_s=timeout,
                  group=launch.init_method is not None and wanted)
    cuda = device.type == "cuda"

    def take_gpu() -> None:
        env.device = torch.device("cuda", cuda_index(env.local_rank, env.local_world_size, torch.cuda.device_count(),
                                                      cfg.gpu, device.index))
        torch.cuda.set_device(env.device)

    if not env.distributed:
        if cuda:
            take_gpu()
        return env
    joined = dist.is_initialized()   # a caller's group (the ten-splits protocol keeps one for all its phases)
    if not joined and launch.mode == "slurm" and launch.init_method == "env://" and not (
            os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT")):
        raise LaunchError("under srun, set MASTER_ADDR (the first node's host name) and MASTER_PORT, or give "
                          "--dist-url tcp://HOST:PORT")
    known_layout = launch.local_world_size is not None
    if cuda and known_layout:
        take_gpu()
    if not joined:
        backend = cfg.dist_backend or ("nccl" if cuda else "gloo")
        dist.init_process_group(backend=backend, init_method=launch.init_method, world_size=env.world_size,
                                rank=env.rank, timeout=datetime.timedelta(seconds=timeout),
                                device_id=env.device if cuda and known_layout and backend == "nccl" else None)
        env.owns_group = True
    try:
        if not known_layout:   # srun said nothing usable about the layout: the ranks' host names decide
            hosts = all_gather_objects(socket.gethostname(), env)
            env.local_world_size = _per_node([hosts.count(h) for h in dict.fromkeys(hosts)], "the ranks' hosts")
            if cuda:
                take_gpu()
        if cuda:
            check_distinct_gpus(all_gather_objects(gpu_identity(env.device), env))
    except BaseException:
        cleanup(env, failed=True)
        raise
    return env


def check_distinct_gpus(identities: Sequence[Optional[str]]) -> None:
    """Refuse two ranks on one GPU (NCCL would fail later with less to go on)."""
    seen = {}
    for rank, gpu in enumerate(identities):
        if gpu in seen:
            raise LaunchError(f"ranks {seen[gpu]} and {rank} both use GPU {gpu.split('/', 1)[1]} on "
                              f"{gpu.split('/', 1)[0]}: give each process its own GPU (CUDA_VISIBLE_DEVICES, "
                              f"srun --gpus-per-task=1, or as many processes per node as GPUs)")
        if gpu is not None:   # a process off CUDA shares nothing
            seen[gpu] = rank


def describe(env: DistEnv) -> str:
    """The process group in a few words, for the run's log."""
    if not env.distributed:
        return "no process group"
    return (f"process group {dist.get_backend()} of {env.world_size} (a collective waits {env.timeout_s:g} s for the "
            f"others), DDP")


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


def agreed(step: Callable[[], T], env: DistEnv, what: str = "refused to start") -> T:
    """Run ``step`` on every rank; if it raises a user-facing error (PromptIQAError, OSError) on any rank, every rank
    raises (none is left waiting in a collective that never comes). Each call is one collective on every rank."""
    error, result = None, None
    try:
        result = step()
    except (PromptIQAError, OSError) as err:
        error = err
    messages = all_gather_objects(None if error is None else one_line(error), env)
    if error is not None:
        raise error
    failed = [(rank, m) for rank, m in enumerate(messages) if m]
    if failed:
        rank, message = failed[0]
        raise DistributedError(f"rank {rank} {what}: {message}")
    return result


def local_main_first(step: Callable[[], T], env: DistEnv) -> T:
    """``step`` on each node's local rank 0 first, then on the node's other ranks (e.g. a download into a cache the
    others then read); a failure on any rank is raised on every rank (``agreed``)."""
    if not env.distributed or env.local_world_size == 1:
        return agreed(step, env)
    first = agreed(lambda: step() if env.local_rank == 0 else None, env)
    later = agreed(lambda: step() if env.local_rank != 0 else None, env)
    return first if env.local_rank == 0 else later


class StopVote:
    """Agrees across ranks whether to stop, without a blocking per-step synchronisation: each step posts this rank's
    flag in an asynchronous all-reduce on a CPU (gloo) group and reads the result posted one step earlier, which has
    long arrived. Every rank reads the same results in the same order, so all stop after the same step: one step
    after the request (at once without a process group)."""

    def __init__(self, env: DistEnv):
        self.env = env
        self.group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=env.timeout_s)) \
            if env.distributed else None
        self._pending = None

    def post(self, flag: bool) -> bool:
        """Post this step's flag; returns the agreed flag of the previous post (this one's without a group)."""
        if self.group is None:
            return bool(flag)
        agreed_before = self.collect()
        t = torch.tensor([1 if flag else 0], dtype=torch.int32)
        self._pending = (dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group, async_op=True), t)
        return agreed_before

    def collect(self) -> bool:
        """The agreed flag of the last post not yet read (False when none): waits for it; every rank must call it
        at the same point (the end of an epoch), so no post is left in flight."""
        if self._pending is None:
            return False
        work, t = self._pending
        self._pending = None
        work.wait()
        return bool(t.item())

    def close(self) -> None:
        if self.group is not None and dist.is_initialized():
            self._pending = None
            dist.destroy_process_group(self.group)
            self.group = None


# What gloo and NCCL say when another process of the job died or stopped answering (they raise plain RuntimeErrors)
_LOST_PEER = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "Socket Timeout",
              "Timed out", "timed out", "NCCL communicator was aborted", "NCCL error", "connection refused")


def lost_peer(err: BaseException, env: DistEnv) -> Optional[str]:
    """The reason, when ``err`` says a collective failed because another process of the job is gone (a killed
    node); None for any other error."""
    if not env.distributed or not isinstance(err, RuntimeError) or isinstance(err, PromptIQAError):
        return None
    if not (isinstance(err, getattr(dist, "DistError", ())) or any(text in str(err) for text in _LOST_PEER)):
        return None
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return re.sub(r"^\[[^\]]*\]\s*", "", first).split(". ")[0]   # without gloo's source location and advice


_EXIT_HARD = False   # set once this process has torn down a group of several processes


def cleanup(env: DistEnv, failed: bool = False) -> None:
    """Tear down the process group if ``env``'s set-up created it (a caller that shares one group keeps it). After a
    failure an NCCL group is aborted rather than destroyed: destroying waits for collectives that will never end.

    A process that was one of several then ends through ``end_process``, without the interpreter's shutdown."""
    global _EXIT_HARD
    if not (env.owns_group and dist.is_initialized()):
        return
    _EXIT_HARD = _EXIT_HARD or env.world_size > 1
    # Whatever still holds the group (a DDP wrapper in a reference cycle) is freed first, while the interpreter is
    # whole: a gloo group that outlives it is torn down at shutdown, when its worker threads can no longer take the
    # GIL for the tensors they hold, and the process aborts ("terminate called without an active exception").
    gc.collect()
    abort = getattr(dist.distributed_c10d, "_abort_process_group", None)
    if failed and abort is not None and dist.get_backend() == "nccl":
        abort()
    else:
        dist.destroy_process_group()
    env.owns_group = False


@contextmanager
def quiet_unless_main(env: DistEnv):
    """Within: warnings are silenced on every rank but the main one (each would repeat rank 0's); the process's
    warning filters are restored on the way out."""
    with warnings.catch_warnings():
        if not env.is_main:
            warnings.simplefilter("ignore")
        yield


def end_process(code: int) -> int:
    """``code`` for a process that did not take part in a group of several; one that did is ended here, with
    ``os._exit(code)`` once its output is flushed. After ``destroy_process_group`` gloo's worker threads live on, and
    one releasing a collective's tensors once the interpreter's shutdown has begun aborts the process in libstdc++
    ("terminate called without an active exception", SIGABRT): a rank that did all its work then fails its launcher.
    Every file the run writes is complete before this (atomic writes, the log appended line by line)."""
    if not _EXIT_HARD:
        return code
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
