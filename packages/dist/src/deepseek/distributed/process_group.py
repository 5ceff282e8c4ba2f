"""Joining the default process group: from torchrun's environment, from SLURM's, or as a
world of one process when neither launched this one.

Everything here composes ``torch.distributed``; the additions are clear errors (missing
launch variables, ``nccl`` without CUDA, a peer that never joins), resolving
``backend="auto"`` (or a DeepSeek backend name) to the collective backend that suits the
device, a default timeout, and reading SLURM's variables the way Lightning does.
"""

from __future__ import annotations

import atexit
import datetime
import functools
import os
import re
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from deepseek.backends import Backend

# What torchrun exports for every process it starts.
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# What srun exports for every task; enough to join without torchrun.
SLURM_VARS = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_JOB_NODELIST")
# The default collective timeout (torch's own default for gloo); DEEPSEEK_DIST_TIMEOUT_S
# or init_process_group(timeout_s=...) changes it.
DEFAULT_TIMEOUT_S = 1800.0
TIMEOUT_ENV = "DEEPSEEK_DIST_TIMEOUT_S"


@dataclass(frozen=True)
class LaunchEnv:
    """This process's place in the job, as torchrun (or SLURM) described it."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int


def _int_var(environ: Mapping[str, str], name: str) -> int:
    value = environ[name]
    try:
        return int(value)
    except ValueError:
        raise ValueError(
            f"environment variable {name}={value!r} is not an integer; it is set by torchrun, "
            "so launch with `torchrun --nproc-per-node N` instead of setting it by hand"
        ) from None


def launch_env(environ: Mapping[str, str] | None = None) -> LaunchEnv:
    """Read and check torchrun's variables (``os.environ`` by default).

    >>> launch_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1",
    ...             "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}).rank
    1
    """
    environ = os.environ if environ is None else environ
    missing = [name for name in TORCHRUN_VARS if not environ.get(name)]
    if missing:
        raise RuntimeError(
            f"cannot join a process group: environment variable(s) {', '.join(missing)} "
            "not set. Launch the script with torchrun, e.g. "
            "`torchrun --nproc-per-node N train.py`, which sets "
            f"{', '.join(TORCHRUN_VARS)} for every process."
        )
    env = LaunchEnv(
        rank=_int_var(environ, "RANK"),
        world_size=_int_var(environ, "WORLD_SIZE"),
        local_rank=_int_var(environ, "LOCAL_RANK"),
        master_addr=environ["MASTER_ADDR"],
        master_port=_int_var(environ, "MASTER_PORT"),
    )
    if env.world_size < 1 or not 0 <= env.rank < env.world_size or env.local_rank < 0:
        raise ValueError(
            f"inconsistent launch variables RANK={env.rank}, WORLD_SIZE={env.world_size}, "
            f"LOCAL_RANK={env.local_rank}: need 0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0"
        )
    if not 0 < env.master_port < 65536:
        raise ValueError(f"MASTER_PORT={env.master_port} is not a TCP port (1-65535)")
    return env


# -- SLURM ---------------------------------------------------------------------------------


def first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM node list (``node[003-005,007],gpu01`` -> ``node003``).

    >>> first_slurm_host("node[003-005,007],gpu01")
    'node003'
    >>> first_slurm_host("gpu7")
    'gpu7'
    """
    nodelist = nodelist.strip()
    match = re.match(r"^([^,\[]+)(?:\[([^\]]+)\])?", nodelist)
    if not match or not nodelist:
        raise ValueError(f"SLURM_JOB_NODELIST={nodelist!r} is not a SLURM node list")
    prefix, ranges = match.group(1), match.group(2)
    if ranges is None:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def slurm_env(environ: Mapping[str, str] | None = None) -> LaunchEnv | None:
    """This task's place in a job started by ``srun`` (``None`` outside SLURM).

    As Lightning does: rank, world size and local rank from ``SLURM_PROCID``,
    ``SLURM_NTASKS``, ``SLURM_LOCALID``; the master is the first node of
    ``SLURM_JOB_NODELIST`` and the port ``MASTER_PORT`` or one derived from
    ``SLURM_JOB_ID`` (so every task of a job agrees on it without talking).

    >>> slurm_env({"SLURM_PROCID": "1", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1",
    ...            "SLURM_JOB_NODELIST": "gpu[01-02]", "SLURM_JOB_ID": "4242"})
    LaunchEnv(rank=1, world_size=4, local_rank=1, master_addr='gpu01', master_port=14242)
    """
    environ = os.environ if environ is None else environ
    if not all(environ.get(name) for name in SLURM_VARS):
        return None
    port = environ.get("MASTER_PORT") or str(10000 + int(environ.get("SLURM_JOB_ID", "0")) % 20000)
    return launch_env(
        {
            "RANK": environ["SLURM_PROCID"],
            "WORLD_SIZE": environ["SLURM_NTASKS"],
            "LOCAL_RANK": environ["SLURM_LOCALID"],
            "MASTER_ADDR": environ.get("MASTER_ADDR")
            or first_slurm_host(environ["SLURM_JOB_NODELIST"]),
            "MASTER_PORT": port,
        }
    )


def current_launch(environ: Mapping[str, str] | None = None) -> LaunchEnv:
    """Where this process stands: torchrun's variables, else SLURM's, else a world of one.

    ``RANK`` and ``WORLD_SIZE`` both unset (and no SLURM job) means a plain ``python``
    process: rank 0 of a world of size 1, on ``MASTER_ADDR``/``MASTER_PORT`` when set.

    >>> current_launch({})
    LaunchEnv(rank=0, world_size=1, local_rank=0, master_addr='127.0.0.1', master_port=0)
    """
    environ = os.environ if environ is None else environ
    if environ.get("RANK") or environ.get("WORLD_SIZE"):
        return launch_env(environ)
    slurm = slurm_env(environ)
    if slurm is not None:
        return slurm
    port = environ.get("MASTER_PORT") or "0"
    return LaunchEnv(0, 1, 0, environ.get("MASTER_ADDR") or "127.0.0.1", int(port))


# -- backends ------------------------------------------------------------------------------


def collective_backend(backend: str | Backend = "auto") -> str:
    """The ``torch.distributed`` backend for ``backend``: a DeepSeek ``Backend``, a backend
    name (``"auto"``, ``"cpu"``, ``"cuda"``, ...) or a collective name (``"gloo"``, ``"nccl"``).

    >>> collective_backend("cpu")
    'gloo'
    """
    if isinstance(backend, Backend):
        return backend.collective_backend
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string or a Backend, got {type(backend).__name__}")
    name = backend.strip().lower()
    if name in dist.Backend.backend_list and name not in ("undefined", "fake"):
        return name
    from deepseek import backends

    return backends.get(name).collective_backend


def check_collective_backend(name: str) -> None:
    """Raise one clear error when collective backend ``name`` cannot run on this machine.

    ``nccl`` needs CUDA GPUs: on a CPU build of torch, or with no visible CUDA device, the
    error names nccl, the reason and the fix, before any rendezvous could block.
    """
    if name == "nccl" and not torch.cuda.is_available():
        if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
            reason = f"this torch ({torch.__version__}) is a CPU-only build without CUDA"
        else:
            reason = "no CUDA device is visible (torch.cuda.is_available() is False)"
        raise RuntimeError(
            f"backend='nccl' needs NVIDIA GPUs, but {reason}. Use backend='gloo' to run on "
            "the CPU, or backend='auto' to pick nccl where CUDA GPUs exist and gloo elsewhere"
        )
    if not dist.is_backend_available(name):
        raise RuntimeError(
            f"torch.distributed backend {name!r} is not available in this torch build "
            f"({', '.join(available_backends()) or 'none'} available); use backend='auto'"
        )


def resolve_timeout(timeout_s: float | None = None) -> datetime.timedelta:
    """``timeout_s``, else ``$DEEPSEEK_DIST_TIMEOUT_S``, else 1800 s (torch's default).

    >>> resolve_timeout(30).total_seconds()
    30.0
    """
    if timeout_s is None:
        raw = os.environ.get(TIMEOUT_ENV)
        try:
            timeout_s = float(raw) if raw else DEFAULT_TIMEOUT_S
        except ValueError:
            raise ValueError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or timeout_s <= 0:
        raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
    return datetime.timedelta(seconds=float(timeout_s))


def init_process_group(
    backend: str | Backend = "auto", *, timeout_s: float | None = None, **kwargs: Any
) -> str:
    """Join the default process group; returns the collective backend used (e.g. ``"gloo"``).

    ``backend`` is resolved by :func:`collective_backend` and checked first: ``"nccl"`` on
    a machine without CUDA raises one clear error before anything can block. ``kwargs`` go
    to ``torch.distributed.init_process_group``. Without ``init_method`` or ``store`` the
    group is joined from the environment:

    - under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
      ``MASTER_PORT`` set), as torch's ``env://`` does;
    - under SLURM's ``srun`` (``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``,
      ``SLURM_JOB_NODELIST``), see :func:`slurm_env`;
    - from a plain ``python`` process (``RANK`` and ``WORLD_SIZE`` unset): this process
      alone, rank 0 of a world of size 1, so the same script runs with and without
      torchrun.

    Collectives time out after ``timeout_s`` (default ``$DEEPSEEK_DIST_TIMEOUT_S`` or
    1800 s), and a peer that never joins gives an error naming this rank and the world
    size instead of a hang. Run under ``torchrun --nproc-per-node 2 script.py``::

        import deepseek.distributed as ddist
        ddist.init_process_group()          # gloo on CPU, nccl on NVIDIA GPUs
        print(ddist.get_rank(), ddist.get_world_size())
        ddist.destroy_process_group()
    """
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed support")
    name = collective_backend(backend)
    check_collective_backend(name)
    if dist.is_initialized():
        raise RuntimeError(
            f"the default process group is already initialized (backend "
            f"{dist.get_backend()!r}); check deepseek.distributed.is_initialized() first, "
            "or call destroy_process_group() before joining again"
        )
    if "timeout" not in kwargs:
        kwargs["timeout"] = resolve_timeout(timeout_s)
    _register_exit_hook()
    if "init_method" in kwargs or "store" in kwargs:
        dist.init_process_group(name, **kwargs)
        return name
    env = current_launch()
    if env.world_size == 1:
        # A world of one needs no rendezvous: an in-memory store, no port to collide on.
        kwargs.update(store=dist.HashStore(), rank=0, world_size=1)
        dist.init_process_group(name, **kwargs)
        return name
    try:
        if not (os.environ.get("RANK") or os.environ.get("WORLD_SIZE")):  # SLURM, no torchrun
            kwargs.update(init_method=f"tcp://{env.master_addr}:{env.master_port}")
            kwargs.update(rank=env.rank, world_size=env.world_size)
        elif os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
            kwargs.update(store=_attempt_store(env, kwargs["timeout"]))
            kwargs.update(rank=env.rank, world_size=env.world_size)
        dist.init_process_group(name, **kwargs)
    except (RuntimeError, dist.DistError) as exc:
        raise RuntimeError(
            f"rank {env.rank} of {env.world_size} could not join the process group at "
            f"{env.master_addr}:{env.master_port} within {kwargs['timeout'].total_seconds():g}"
            f" s: the other ranks did not all join (a peer died, was never started, or uses "
            f"another MASTER_ADDR/MASTER_PORT). Cause: {exc}"
        ) from exc
    return name


@functools.cache  # one hook per process, however often a group is joined
def _register_exit_hook() -> None:
    """Let gloo finish with Python before the interpreter is finalized.

    After a collective's ``wait()`` returns, gloo's worker thread still drops its own
    reference to the collective's tensors, and dropping the last one takes the GIL. A
    thread that asks for the GIL once finalization has begun is made to exit in the
    middle of C++ code: the process aborts ("terminate called without an active
    exception", exit -6) although the job had finished (backtrace: ``ProcessGroupGloo::
    runLoop`` -> ``decref_pyobject`` -> ``PyEval_AcquireThread`` -> ``pthread_exit``). It
    hit about 1 run in 20 of a 2-rank job, with or without ``destroy_process_group()``.
    This ``atexit`` hook destroys a group the script left open and then hands the GIL
    over for a moment, so those releases happen while Python still runs.
    """
    atexit.register(_let_gloo_finish)


def _let_gloo_finish() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
    time.sleep(0.1)  # releases the GIL to any worker thread waiting for it


def _attempt_store(env: LaunchEnv, timeout: datetime.timedelta) -> dist.Store:
    """The store of this restart attempt under torchrun's elastic agent.

    The agent keeps one TCPStore server for the whole job and hands the same port to every
    restart, so the keys of a killed attempt (gloo's peer addresses among them) are still
    there: a new rank that reads its peer's stale address waits forever to connect to a
    dead process. On one node a prefix per attempt (``TORCHELASTIC_RESTART_COUNT``) keeps
    each attempt to its own keys. Across nodes the agents count restarts apart (one that
    restarts for a peer's failure does not count it), so a prefix would split the ranks:
    there ``deepseek launch`` avoids the shared store instead (a fresh one per rendezvous).

    A script that sets ``MASTER_PORT`` itself (the seed's snippet does) points where no
    agent listens: then rank 0 hosts the store there, as without torchrun, instead of
    waiting forever.
    """
    host = env.rank == 0 and not _listening(env.master_addr, env.master_port)
    store = dist.TCPStore(
        env.master_addr,
        env.master_port,
        env.world_size,
        is_master=host,
        timeout=timeout,
        multi_tenant=host,
    )
    if os.environ.get("GROUP_WORLD_SIZE", "1") != "1":
        return store
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"deepseek/attempt_{attempt}/", store)


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def available_backends() -> list[str]:
    """The collective backends this torch build can use, of gloo, nccl and mpi."""
    if not dist.is_available():
        return []
    return [name for name in ("gloo", "nccl", "mpi") if dist.is_backend_available(name)]


def monitored_barrier(timeout_s: float | None = None) -> None:
    """A barrier that names the ranks that did not arrive within ``timeout_s``.

    On gloo it is ``torch.distributed.monitored_barrier`` (rank 0 reports every missing
    rank); elsewhere a plain barrier. A collective that fails because a peer died is
    re-raised with this rank's number and the likely cause.
    """
    if not dist.is_initialized():
        return
    timeout = resolve_timeout(timeout_s) if timeout_s is not None else None
    try:
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=timeout, wait_all_ranks=True)
        else:
            dist.barrier()
    except (RuntimeError, dist.DistError) as exc:
        raise peer_error(exc, "barrier") from exc


def peer_error(exc: BaseException, what: str) -> RuntimeError:
    """``exc`` from a collective, re-worded: which rank saw it, and what it usually means."""
    rank, world = dist.get_rank(), dist.get_world_size()
    text = str(exc)
    named = re.findall(r"[Rr]ank (\d+)", text)
    who = f"rank(s) {', '.join(sorted(set(named)))}" if named else "a peer rank"
    return RuntimeError(
        f"rank {rank} of {world}: {what} failed because {who} did not respond (the process "
        f"died, hangs, or is slower than the timeout; raise it with timeout_s / "
        f"{TIMEOUT_ENV}). Check that rank's log. Cause: {text.splitlines()[0] if text else exc!r}"
    )
