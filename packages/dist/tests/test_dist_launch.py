"""``deepseek launch``, SLURM's variables, elastic restarts after a SIGKILL, the seed's
snippet, timeouts naming a rank, and the ``distributed:`` config section."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from deepseek.config import ConfigError, parse_config
from deepseek.distributed import SLURM_VARS, TORCHRUN_VARS
from deepseek.distributed.config import DistributedConfig
from deepseek.distributed.launcher import add_arguments, torchrun_args

HERE = Path(__file__).parent
CPU_ONLY = not torch.cuda.is_available()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (*TORCHRUN_VARS, *SLURM_VARS)}
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def deepseek(*args: str, cwd: Path | None = None, timeout: int = 240, **env: str):
    """``deepseek ARGS`` in a fresh process (see ``run_module``)."""
    return run_module("deepseek.cli", *args, cwd=cwd, timeout=timeout, **env)


def run_module(module: str, *args: str, cwd: Path | None = None, timeout: int = 240, **env: str):
    # Own process group: on a timeout the launcher's workers are killed too, instead of
    # lingering in a collective and disturbing the next launch.
    with subprocess.Popen(
        [sys.executable, "-m", module, *args], env=clean_env(**env), cwd=cwd,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    ) as proc:  # fmt: skip
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # SIGTERM first: torchrun's agent then stops its workers, which run in
            # sessions of their own that a SIGKILL of this group would leave behind.
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                out, err = proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                out, err = proc.communicate()
            # What the job printed before it hung is the only clue to where it hung.
            raise subprocess.TimeoutExpired(proc.args, timeout, output=out, stderr=err) from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


# --- the seed's snippet ------------------------------------------------------------------

SNIPPET = """\
import os
import deepseek as ds
os.environ['MASTER_ADDR'] = 'localhost'
os.environ['MASTER_PORT'] = '{port}'
ds.distributed.init_process_group(backend='{backend}')
# One write(2) per line: two ranks share the launcher's stdout.
os.write(1, f"joined {{ds.distributed.get_rank()}} {{ds.distributed.get_world_size()}}\\n".encode())
"""


@pytest.mark.skipif(not CPU_ONLY, reason="checks the error on a machine without CUDA")
def test_seed_snippet_with_nccl_names_nccl_the_reason_and_the_fix(tmp_path: Path) -> None:
    script = tmp_path / "snippet.py"
    script.write_text(SNIPPET.format(port=free_port(), backend="nccl"))
    proc = subprocess.run([sys.executable, str(script)], env=clean_env(), capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "backend='nccl' needs NVIDIA GPUs" in last
    assert "CPU-only build" in last or "no CUDA device" in last
    assert "backend='gloo'" in last and "'auto'" in last


def test_seed_snippet_runs_from_plain_python_as_a_world_of_one(tmp_path: Path) -> None:
    script = tmp_path / "snippet.py"
    script.write_text(SNIPPET.format(port=free_port(), backend="gloo"))
    proc = subprocess.run([sys.executable, str(script)], env=clean_env(), capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "joined 0 1" in proc.stdout


def test_seed_snippet_runs_under_deepseek_launch(tmp_path: Path) -> None:
    script = tmp_path / "snippet.py"
    script.write_text(SNIPPET.format(port=free_port(), backend="gloo"))
    proc = deepseek("launch", "--nproc-per-node", "2", str(script))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(line for line in proc.stdout.splitlines() if "joined" in line) == [
        "joined 0 2", "joined 1 2",
    ]  # fmt: skip


def test_a_peer_that_never_joins_gives_an_error_naming_the_rank(tmp_path: Path) -> None:
    script = tmp_path / "alone.py"
    script.write_text(
        "import deepseek.distributed as d\nd.init_process_group('gloo', timeout_s=3)\n"
    )
    env = clean_env(RANK="0", WORLD_SIZE="2", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                    MASTER_PORT=str(free_port()))  # fmt: skip
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert proc.returncode != 0
    assert "rank 0 of 2 could not join the process group" in proc.stderr
    assert "within 3 s" in proc.stderr


# --- SLURM ---------------------------------------------------------------------------------


def test_slurm_tasks_join_without_torchrun(tmp_path: Path) -> None:
    port = str(free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "slurm_worker.py"), str(tmp_path)],
            env=clean_env(
                SLURM_PROCID=str(rank),
                SLURM_NTASKS="2",
                SLURM_LOCALID=str(rank),
                SLURM_JOB_NODELIST="localhost",
                SLURM_JOB_ID="77",
                MASTER_PORT=port,
            ),  # fmt: skip
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for rank in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert (result["rank"], result["world"], result["backend"]) == (rank, 2, "gloo")
        assert result["sum"].item() == 3.0


# --- elastic restart after SIGKILL -------------------------------------------------------


def test_a_killed_worker_is_restarted_and_the_job_resumes_exactly(tmp_path: Path) -> None:
    runs = {}
    for mode in ("kill", "clean"):
        out = tmp_path / mode
        out.mkdir()
        proc = deepseek("launch", "--nproc-per-node", "2", "--max-restarts", "3",
                        str(HERE / "elastic_worker.py"), str(out), mode)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-4000:]
        runs[mode] = torch.load(out / "final.pt", weights_only=True)
    assert runs["kill"]["attempt"] >= 1  # the worker group was restarted
    assert runs["kill"]["steps"] == runs["clean"]["steps"] == 16
    for key, value in runs["clean"]["state"].items():
        assert torch.equal(runs["kill"]["state"][key], value), key


@pytest.mark.parametrize("launcher", ["deepseek.cli launch", "torch.distributed.run --standalone"])
def test_a_restarted_attempt_does_not_see_the_killed_attempts_store_keys(
    tmp_path: Path, launcher: str
) -> None:
    # torchrun's agent serves one store for the whole job; a restarted rank that read the
    # killed attempt's gloo addresses waited forever to connect (1 launch in ~5 hung).
    # `deepseek launch` gives every rendezvous round a fresh store; under plain torchrun,
    # deepseek's init_process_group gives every restart a key prefix of its own.
    module, *flags = launcher.split()
    proc = run_module(module, *flags, "--nproc-per-node", "2", "--max-restarts", "1",
                      str(HERE / "restart_store_worker.py"), str(tmp_path))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp_path / "result.txt").read_text() == "attempt=1 stale_key_seen=False sum=3"


# --- the launcher's command line ---------------------------------------------------------


def launch_args(*argv: str):
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_launcher_builds_torchruns_command_line(tmp_path: Path) -> None:
    args = launch_args("--nproc-per-node", "4", "--max-restarts", "2", "train.py", "--lr", "1")
    assert torchrun_args(args) == [
        "--nproc-per-node", "4", "--nnodes", "1", "--max-restarts", "2", "--standalone",
        "train.py", "--lr", "1",
    ]  # fmt: skip
    args = launch_args("--nnodes", "2", "--rdzv-endpoint", "node0:29500", "job.yaml",
                       "--set", "trainer.max_epochs=1")  # fmt: skip
    section = DistributedConfig(gpu_ids=[0, 1, 2])
    assert torchrun_args(args, section) == [
        "--nproc-per-node", "3", "--nnodes", "2", "--rdzv-endpoint", "node0:29500",
        "--rdzv-backend", "c10d", "-m", "deepseek.cli", "train", "job.yaml",
        "--set", "trainer.max_epochs=1",
    ]  # fmt: skip


JOB = """\
seed: 0
output_dir: {out}
model: {{name: "tiny:model"}}
data: {{train: {{name: "tiny:data"}}, batch_size: 8}}
optimizer: {{name: SGD, lr: 0.1}}
trainer: {{max_epochs: 1, loss: mse_loss, enable_progress_bar: false}}
distributed:
  backend: {backend}
  strategy: ddp
  reduce_strategy: gradient_sum
  gradient_compression: fp16
  nproc_per_node: 2
"""

TINY = """\
import torch
def model():
    torch.manual_seed(0)
    return torch.nn.Linear(4, 2)
def data():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 4, generator=g), torch.randn(32, 2, generator=g)
    return torch.utils.data.TensorDataset(x, y)
"""


def test_launch_runs_a_configs_job_with_its_distributed_section(tmp_path: Path) -> None:
    (tmp_path / "tiny.py").write_text(TINY)
    config = tmp_path / "job.yaml"
    config.write_text(JOB.format(out=tmp_path / "run", backend="gloo"))
    proc = deepseek("launch", str(config), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp_path / "run" / "metrics.csv").is_file() or list((tmp_path / "run").iterdir())


@pytest.mark.skipif(not CPU_ONLY, reason="checks the error on a machine without CUDA")
def test_launch_with_backend_nccl_fails_before_starting_workers(tmp_path: Path) -> None:
    (tmp_path / "tiny.py").write_text(TINY)
    config = tmp_path / "job.yaml"
    config.write_text(JOB.format(out=tmp_path / "run", backend="nccl"))
    proc = deepseek("launch", str(config), cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert "backend='nccl' needs NVIDIA GPUs" in proc.stderr
    assert not (tmp_path / "run").exists()  # no worker ran


# --- the distributed: section --------------------------------------------------------------

DESIGN_BLOCK = textwrap.dedent("""\
    distributed:
      backend: nccl
      init_method: env://
      gpu_ids: [0,1,2,3,4,5,6,7]
      reduce_strategy: gradient_average
""")


def test_the_design_documents_block_loads_as_a_dataclass(tmp_path: Path) -> None:
    import yaml

    from deepseek.config import load_config

    path = tmp_path / "job.yaml"
    path.write_text('model: {name: "m:f"}\ndata: {train: "d:f"}\n' + DESIGN_BLOCK)
    section = load_config(path).distributed
    assert isinstance(section, DistributedConfig)
    assert section.backend == "nccl" and section.init_method == "env://"
    assert section.gpu_ids == list(range(8)) and section.processes_per_node() == 8
    assert section.reduce_strategy == "gradient_average"
    assert yaml.safe_load(DESIGN_BLOCK)["distributed"]["gpu_ids"] == section.gpu_ids


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"reduce_strategy": "mean"}, "distributed.reduce_strategy"),
        ({"nproc_per_nod": 2}, "Did you mean 'nproc_per_node'"),
        (
            {"gradient_compression": "zip"},
            "distributed.gradient_compression: unknown gradient compression 'zip'",
        ),
        ({"nnodes": 2}, "distributed.rdzv_endpoint: required when nnodes > 1"),
        ({"gpu_ids": [0, 0]}, "distributed.gpu_ids"),
        ({"backend": "tcp"}, "distributed.backend"),
    ],
)
def test_bad_sections_name_the_key_path(section: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        parse_config({"model": "m:f", "data": {"train": "d:f"}, "distributed": section})


@pytest.mark.skipif(not CPU_ONLY, reason="needs a machine without CUDA devices")
def test_gpu_ids_naming_absent_devices_is_one_clear_error() -> None:
    section = DistributedConfig(backend="gloo", gpu_ids=[0, 1])
    with pytest.raises(ConfigError, match=r"gpu_ids: device\(s\) \[0, 1\] do not exist"):
        section.check_devices()


def test_section_options_reach_the_strategy() -> None:
    section = DistributedConfig(backend="gloo", reduce_strategy="gradient_sum",
                                gradient_compression={"name": "powersgd", "rank": 2},
                                timeout_s=30)  # fmt: skip
    strategy = section.resolve_strategy("ddp")
    assert strategy.reduce_strategy == "gradient_sum"
    assert strategy.compression.name == "powersgd" and strategy.compression.options["rank"] == 2
    assert strategy.timeout_s == 30
    fsdp = DistributedConfig(strategy={"name": "fsdp", "cpu_offload": True}).resolve_strategy("ddp")
    assert fsdp.name == "fsdp" and fsdp.cpu_offload is True
    with pytest.raises(ConfigError, match="distributed.gradient_compression: the 'fsdp'"):
        DistributedConfig(gradient_compression="fp16").resolve_strategy("fsdp")


def test_a_group_left_open_is_destroyed_before_the_interpreter_exits(tmp_path: Path) -> None:
    # A gloo thread that takes the GIL to release a tensor once finalization has begun
    # aborts the process ("terminate called without an active exception", ~1 run in 20 of
    # a 2-rank job): deepseek's atexit hook destroys the group and lets those threads
    # finish first. atexit runs its hooks last-registered first, so a hook registered
    # before the group is joined sees what deepseek's hook left.
    script = tmp_path / "left_open.py"
    script.write_text(
        "import atexit\nimport torch.distributed as dist\n"
        "atexit.register(lambda: print('initialized at exit:', dist.is_initialized()))\n"
        "import deepseek.distributed as d\nd.init_process_group('gloo')\n"
        "print('joined:', dist.is_initialized())\n"
    )
    proc = subprocess.run([sys.executable, str(script)], env=clean_env(), capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split("\n")[:2] == ["joined: True", "initialized at exit: False"]
