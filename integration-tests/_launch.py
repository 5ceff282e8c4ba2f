"""Running real multi-process jobs from the integration tests, robustly.

Multi-process tests were the main source of flaky CI, so every launch here:

- runs in its own session, and on a timeout (or when a test kills it on purpose) the
  whole job dies: the launcher *and* its workers. torchrun starts each worker in a new
  session of its own, so killing the launcher's process group is not enough; the tree is
  frozen (SIGSTOP, so the agent cannot start replacements) and every descendant gets
  SIGKILL.
- is retried as a whole (fresh output folder, fresh rendezvous port) when it timed out or
  failed with one of the transient rendezvous / gloo connection errors of a loaded
  machine; any other failure is reported at once.
- gets a clean environment: no inherited torchrun/SLURM variables, one thread per
  process, and ``plugins/*/src`` on ``PYTHONPATH`` for the plugins that are not
  installed (the integration session may install only the first-party packages).

Results travel through files each rank writes, never through interleaved stdout.

    >>> result = run([sys.executable, "-c", "print('hi')"], timeout=60)
    >>> result.returncode, result.stdout.strip()
    (0, 'hi')
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The third-party-style plugins of this repository: distribution -> source folder.
PLUGIN_SOURCES = {
    "deepseek-lora": ROOT / "plugins" / "lora" / "src",
    "deepseek-tensorboard": ROOT / "plugins" / "tensorboard" / "src",
}
LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
               "MASTER_PORT", "GROUP_RANK", "TORCHELASTIC_RESTART_COUNT")  # fmt: skip
SLURM_VARS = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_JOB_NODELIST")
#: Failures worth a second launch: the machine was too busy for a rendezvous or a
#: gloo connection, not a bug in the job.
TRANSIENT = re.compile(
    r"RendezvousTimeoutError|RendezvousConnectionError|Address already in use|EADDRINUSE"
    r"|Connection reset by peer|Connection refused|Socket Timeout|could not join the process group"
)


def installed(distribution: str) -> bool:
    """Whether ``distribution`` is installed (its metadata and entry points are visible)."""
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def plugin_paths() -> list[str]:
    """Source folders of this repository's plugins that are not installed."""
    return [str(src) for dist, src in PLUGIN_SOURCES.items() if not installed(dist)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(pythonpath: Sequence[str | os.PathLike] = (), **extra: str) -> dict[str, str]:
    """This process's environment without launcher variables, one thread per process,
    ``pythonpath`` and the uninstalled plugins' sources appended to ``PYTHONPATH``."""
    env = {k: v for k, v in os.environ.items() if k not in (*LAUNCH_VARS, *SLURM_VARS)}
    env["OMP_NUM_THREADS"] = "1"
    paths = [env["PYTHONPATH"]] if env.get("PYTHONPATH") else []
    env["PYTHONPATH"] = os.pathsep.join([*paths, *map(str, pythonpath), *plugin_paths()])
    env.update(extra)
    return env


def deepseek_cli(*args: str | os.PathLike) -> list[str]:
    """The ``deepseek`` command line, run by this interpreter."""
    return [sys.executable, "-m", "deepseek.cli", *map(str, args)]


def launch_cli(target: str | os.PathLike, *args: str | os.PathLike, nproc: int = 2) -> list[str]:
    """``deepseek launch --nproc-per-node NPROC TARGET ARGS...`` (torchrun's agent,
    standalone rendezvous on a free port)."""
    return deepseek_cli("launch", "--nproc-per-node", str(nproc), target, *args)


def start(
    cmd: Sequence[str | os.PathLike],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
) -> subprocess.Popen:
    """Start ``cmd`` in a session of its own; stop it with :func:`kill_job`."""
    return subprocess.Popen(
        [str(c) for c in cmd], env=dict(env) if env is not None else clean_env(), cwd=cwd,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip


def _parents() -> dict[int, int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:  # exited meanwhile
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        parents[int(entry)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    return parents


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux ``/proc``), parents before children."""
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_job(proc: subprocess.Popen) -> tuple[str, str]:
    """SIGKILL ``proc`` and all its descendants (workers in sessions of their own
    included); returns what it had written to stdout and stderr."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGSTOP)  # no new workers while the tree is listed
    for pid in [proc.pid, *descendants(proc.pid)]:
        for kill in (os.killpg, os.kill):  # a worker's own session, then the process
            with contextlib.suppress(ProcessLookupError, PermissionError):
                kill(pid, signal.SIGKILL)
    out, err = proc.communicate()
    return out or "", err or ""


def wait_for(
    condition: Callable[[], bool], proc: subprocess.Popen, timeout: float, poll: float = 0.2
) -> bool:
    """Wait until ``condition()`` holds (True), ``proc`` exits or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return condition()
        time.sleep(poll)
    return False


def run(
    cmd: Sequence[str | os.PathLike],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    timeout: float = 300,
    attempts: int = 2,
    before_attempt: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess:
    """Run ``cmd`` to completion; a launch that times out or fails with a transient
    rendezvous/connection error is killed (whole tree) and tried again, up to
    ``attempts`` times. ``before_attempt`` resets the job's output before each try.
    Returns the last attempt (a timed-out one has return code -9 and a note in stderr)."""
    result = None
    for _ in range(attempts):
        if before_attempt is not None:
            before_attempt()
        proc = start(cmd, env=env, cwd=cwd)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            out, err = kill_job(proc)
            err += f"\n[_launch] killed after the {timeout:.0f} s timeout\n"
            result = subprocess.CompletedProcess(proc.args, -9, out, err)
            continue
        finally:
            if proc.poll() is None:  # an exception in this process: leave nothing behind
                kill_job(proc)
        result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        if proc.returncode == 0 or not TRANSIENT.search(out + err):
            return result
    assert result is not None
    return result


def failure(result: subprocess.CompletedProcess, chars: int = 4000) -> str:
    """The tail of a failed run's output, for an assertion message."""
    return (
        f"exit {result.returncode}\n--- stdout ---\n{result.stdout[-chars:]}"
        f"\n--- stderr ---\n{result.stderr[-chars:]}"
    )
