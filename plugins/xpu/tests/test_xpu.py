"""deepseek-xpu's logic, run in-process against the installed distribution.

The only fake is :class:`FakeXPU`, swapped in for ``deepseek_xpu.device._torch_xpu`` (the
object through which the backend reads every device fact from torch). Everything above it
is the real code: the backend, the visible-devices parsing, the registry, check_env,
torch's autocast and, where deepseek-dist is installed, its collective checks. Tests
without the fake run against the real torch of this machine.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.metadata
import inspect
import os

import pytest
import torch

import deepseek as ds
from deepseek.plugins import registry

DISTRIBUTION = "deepseek-xpu"
try:
    importlib.metadata.version(DISTRIBUTION)
except importlib.metadata.PackageNotFoundError:
    pytest.skip(
        f"{DISTRIBUTION} is not installed: pip install -c constraints.txt -e plugins/xpu",
        allow_module_level=True,
    )

from deepseek_xpu import device  # noqa: E402 - needs the skip above
from deepseek_xpu.backend import XPUBackend  # noqa: E402
from deepseek_xpu.device import DeviceFacts, TorchXPU  # noqa: E402
from deepseek_xpu.visible import visibility  # noqa: E402

GiB = 2**30
MAX_1550 = DeviceFacts("Intel(R) Data Center GPU Max 1550", 64 * GiB)
ARC_A770 = DeviceFacts("Intel(R) Arc(TM) A770 Graphics", 16 * GiB)
NO_BF16 = DeviceFacts("Intel(R) UHD Graphics 770", 8 * GiB, has_bfloat16_conversions=False)
NO_LOW_PRECISION = DeviceFacts(
    "Intel(R) Test GPU", 4 * GiB, has_fp16=False, has_bfloat16_conversions=False
)

XPU_BUILD = getattr(torch.version, "xpu", None) is not None
cpu_torch_only = pytest.mark.skipif(XPU_BUILD, reason="this torch is an XPU build")


class FakeXPU:
    """A machine as torch would report it: the devices the driver exposes (after the
    visible-devices variables), the build, the collectives. Records what it is asked to do."""

    def __init__(
        self,
        devices: list[DeviceFacts] | tuple[DeviceFacts, ...] = (),
        *,
        build: str | None = "20250101",
        torch_version: str = "2.13.0+xpu",
        collectives: tuple[str, ...] = ("xccl",),
        current: int = 0,
    ) -> None:
        self.devices = list(devices)
        self.build = build
        self.version = torch_version
        self.collectives = collectives
        self.current = current
        self.calls: list[tuple[str, object]] = []

    def _check(self, index: int | None) -> int:
        index = self.current if index is None else index
        assert 0 <= index < len(self.devices), f"no xpu:{index} on this fake machine"
        return index

    def torch_version(self) -> str:
        return self.version

    def xpu_build(self) -> str | None:
        return self.build

    def device_count(self) -> int:
        return len(self.devices) if self.build else 0

    def properties(self, index: int) -> DeviceFacts:
        return self.devices[self._check(index)]

    def current_device(self) -> int:
        return self._check(self.current)

    def set_device(self, index: int) -> None:
        self.current = self._check(index)
        self.calls.append(("set_device", index))

    def synchronize(self, device: torch.device | int | None) -> None:
        self.calls.append(("synchronize", device))

    def memory(self, device: torch.device | int | None) -> dict[str, int]:
        index = self._check(device)  # the backend passes an index (or None: current)
        return {
            "allocated": 100 + index,
            "peak_allocated": 200,
            "reserved": 300,
            "peak_reserved": 400,
        }

    def reset_peak_memory_stats(self, device: torch.device | int | None) -> None:
        self.calls.append(("reset_peak_memory_stats", device))

    def manual_seed_all(self, seed: int) -> None:
        self.calls.append(("manual_seed_all", seed))

    def autocast_available(self) -> bool:
        return True

    def collective_available(self, name: str) -> bool:
        return name in self.collectives


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("DEEPSEEK_") or name in ("ZE_AFFINITY_MASK", "ONEAPI_DEVICE_SELECTOR"):
            monkeypatch.delenv(name)


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch):
    """``machine(devices, **facts)`` installs a FakeXPU at the device boundary."""

    def install(devices=(), **facts) -> FakeXPU:
        fake = FakeXPU(devices, **facts)
        monkeypatch.setattr(device, "_torch_xpu", fake)
        return fake

    return install


def xpu() -> XPUBackend:
    backend = registry("backend").create("xpu")
    assert isinstance(backend, XPUBackend)
    return backend


# -- the fake stays honest -------------------------------------------------------------------


def test_fake_has_exactly_the_seams_methods() -> None:
    def public(cls: type) -> dict[str, list[str]]:
        return {
            name: list(inspect.signature(fn).parameters)
            for name, fn in vars(cls).items()
            if callable(fn) and not name.startswith("_")
        }

    assert public(FakeXPU) == public(TorchXPU)


def test_the_real_seam_reports_this_torch() -> None:
    import torch.distributed as dist

    real = TorchXPU()
    assert real.torch_version() == torch.__version__
    assert real.xpu_build() == getattr(torch.version, "xpu", None)
    assert real.device_count() == torch.xpu.device_count()
    assert real.autocast_available() is torch.amp.is_autocast_available("xpu")
    assert real.collective_available("xccl") is dist.is_backend_available("xccl")
    assert real.collective_available("gloo") is True


@pytest.mark.parametrize("module", ["device", "visible", "backend"])
def test_docstring_examples_run(module: str) -> None:
    result = doctest.testmod(importlib.import_module(f"deepseek_xpu.{module}"))
    assert result.attempted > 0 and result.failed == 0


# -- registration and this machine -------------------------------------------------------


def test_registered_by_this_distribution() -> None:
    assert registry("backend").provider("xpu").distribution == DISTRIBUTION
    assert "Intel GPUs" in registry("backend").get("xpu").description
    assert "xpu" in ds.backends.names()


@cpu_torch_only
def test_here_it_is_unavailable_and_says_why() -> None:
    backend = xpu()
    assert not backend.is_available()
    reason = backend.unavailable_reason()
    assert reason.startswith(f"this torch build ({torch.__version__}) has no XPU support")
    assert "download.pytorch.org/whl/xpu" in reason
    assert backend.device_count() == 0 and backend.device_names() == []
    assert backend.native_autocast_dtypes() == () and backend.memory_stats() == {}
    assert not backend.supports_autocast(torch.bfloat16)
    with pytest.raises(RuntimeError, match="backend 'xpu' is not available: this torch build"):
        ds.backends.get("xpu")
    assert "xpu" not in [b.name for b in ds.backends.available()]
    info = backend.describe()
    assert (info["available"], info["reason"], info["device_count"]) == (False, reason, 0)
    assert info["collective_backend"] == "xccl" and info["collective_available"] is False


@cpu_torch_only
def test_a_trainer_asking_for_xpu_gets_one_clear_error(tmp_path) -> None:
    x = torch.randn(8, 4)
    data = torch.utils.data.TensorDataset(x, (x.sum(1) > 0).long())
    with pytest.raises(RuntimeError) as caught:
        ds.Trainer(
            torch.nn.Linear(4, 2),
            optimizer=torch.optim.SGD,
            optimizer_kwargs={"lr": 0.1},
            train_data=data,
            loss_fn=torch.nn.functional.cross_entropy,
            backend="xpu",
            enable_progress_bar=False,
            default_root_dir=str(tmp_path),
        )
    message = str(caught.value)
    assert message.startswith("backend 'xpu' is not available: this torch build")
    assert "Available here: cpu" in message


@cpu_torch_only
def test_check_env_lists_it_unavailable_and_fails_when_it_is_required() -> None:
    from deepseek.utils import check_env

    report = check_env.collect("xpu")
    (info,) = [b for b in report["backends"] if b["name"] == "xpu"]
    assert info["available"] is False and "no XPU support" in info["reason"]
    errors = [p["message"] for p in report["problems"] if p["severity"] == "error"]
    assert any("backend 'xpu' is not available" in m for m in errors)
    assert any(line.startswith("xpu 0.1.0: collectives xccl") for line in report["plugin_reports"])


# -- availability and its reasons ---------------------------------------------------------


def test_available_with_devices(machine) -> None:
    machine([MAX_1550, MAX_1550])
    backend = xpu()
    assert backend.is_available() and backend.unavailable_reason() is None
    assert backend.device_count() == 2
    assert ds.backends.get("xpu") is ds.backends.get("xpu")
    ranked = [b.name for b in ds.backends.available()]
    assert ranked.index("xpu") < ranked.index("cpu")  # auto prefers the GPU to the CPU
    assert backend.describe()["devices"] == [
        "xpu:0 Intel(R) Data Center GPU Max 1550 (64.0 GiB)",
        "xpu:1 Intel(R) Data Center GPU Max 1550 (64.0 GiB)",
    ]


def test_xpu_build_without_a_gpu_points_at_the_driver(machine) -> None:
    machine([])
    reason = xpu().unavailable_reason()
    assert reason.startswith("no Intel GPU was found by the Level Zero driver")
    assert "xpu-smi" in reason and "render" in reason


def test_a_build_without_xpu_wins_over_every_other_reason(machine, monkeypatch) -> None:
    machine([MAX_1550], build=None, torch_version="2.9.1+cu128")
    monkeypatch.setenv("ONEAPI_DEVICE_SELECTOR", "opencl:*")
    assert not xpu().is_available()
    assert xpu().unavailable_reason().startswith("this torch build (2.9.1+cu128) has no XPU")


@pytest.mark.parametrize(
    ("selector", "named"),
    [
        ("opencl:*", "ONEAPI_DEVICE_SELECTOR='opencl:*'"),
        ("level_zero:cpu", "ONEAPI_DEVICE_SELECTOR='level_zero:cpu'"),
        ("*:cpu;opencl:gpu", "ONEAPI_DEVICE_SELECTOR='*:cpu;opencl:gpu'"),
        ("!level_zero:gpu", "ONEAPI_DEVICE_SELECTOR='!level_zero:gpu'"),
    ],
)
def test_a_selector_that_hides_every_gpu_is_named(machine, monkeypatch, selector, named) -> None:
    machine([])  # the runtime applied the selector: torch counts nothing
    monkeypatch.setenv("ONEAPI_DEVICE_SELECTOR", selector)
    assert xpu().unavailable_reason() == (
        f"{named} hides every Intel GPU; unset it or select level_zero:gpu"
    )


def test_a_malformed_mask_is_the_reason_when_nothing_is_visible(machine, monkeypatch) -> None:
    machine([])
    monkeypatch.setenv("ZE_AFFINITY_MASK", "gpu0,gpu1")
    reason = xpu().unavailable_reason()
    assert reason.startswith("ZE_AFFINITY_MASK='gpu0,gpu1' has entries that are not device ids")
    assert "e.g. ZE_AFFINITY_MASK=0,1" in reason


def test_parsing_never_overrules_what_torch_counts(machine, monkeypatch) -> None:
    # A selector we read as hiding everything, but the runtime still shows a device
    # (e.g. it was set after torch initialised): torch's count decides.
    machine([ARC_A770])
    monkeypatch.setenv("ONEAPI_DEVICE_SELECTOR", "opencl:*")
    assert xpu().is_available() and xpu().device_count() == 1


# -- device counting under the visible-devices variables ------------------------------------


def test_the_mask_maps_each_index_to_its_physical_device(machine, monkeypatch) -> None:
    monkeypatch.setenv("ZE_AFFINITY_MASK", "1,3")
    machine([MAX_1550, ARC_A770])  # what the driver exposes under that mask
    backend = xpu()
    assert backend.device_count() == 2
    assert backend.physical_ids() == ["1", "3"]
    assert backend.device_names() == [
        "xpu:0 Intel(R) Data Center GPU Max 1550 (64.0 GiB) [physical 1]",
        "xpu:1 Intel(R) Arc(TM) A770 Graphics (16.0 GiB) [physical 3]",
    ]
    info = backend.describe()
    assert info["ZE_AFFINITY_MASK"] == "1,3" and info["ONEAPI_DEVICE_SELECTOR"] is None
    assert info["problems"] == []


def test_tiles_in_the_mask(machine, monkeypatch) -> None:
    monkeypatch.setenv("ZE_AFFINITY_MASK", "0.0,1.1")
    machine([MAX_1550, MAX_1550])
    assert xpu().physical_ids() == ["0.0", "1.1"]


def test_the_selector_numbers_what_the_mask_left(machine, monkeypatch) -> None:
    monkeypatch.setenv("ZE_AFFINITY_MASK", "0,2,3")
    monkeypatch.setenv("ONEAPI_DEVICE_SELECTOR", "level_zero:2")
    machine([MAX_1550])
    assert xpu().physical_ids() == ["3"]
    assert xpu().device_names()[0].endswith("[physical 3]")


def test_a_mask_naming_a_missing_device_is_a_warning(machine, monkeypatch) -> None:
    monkeypatch.setenv("ZE_AFFINITY_MASK", "0,7")
    machine([MAX_1550])  # device 7 does not exist: the driver shows one
    backend = xpu()
    assert backend.device_count() == 1
    assert backend.physical_ids() == [None]  # no guessing which one survived
    (problem,) = backend.problems()
    assert problem.startswith("ZE_AFFINITY_MASK='0,7' lists 2 device(s) but the driver exposes 1")


def test_without_variables_every_device_counts(machine) -> None:
    machine([ARC_A770] * 3)
    backend = xpu()
    assert backend.device_count() == 3 and backend.physical_ids() == [None] * 3
    assert backend.describe()["ZE_AFFINITY_MASK"] is None


@pytest.mark.parametrize(
    ("environ", "selected", "hidden", "problem"),
    [
        ({}, None, False, None),
        ({"ZE_AFFINITY_MASK": ""}, None, False, None),  # empty: the loader shows all
        ({"ZE_AFFINITY_MASK": " 2, 0 ,2"}, ("2", "0"), False, None),
        ({"ONEAPI_DEVICE_SELECTOR": "level_zero:gpu"}, None, False, None),
        ({"ONEAPI_DEVICE_SELECTOR": "LEVEL_ZERO:1,0"}, ("1", "0"), False, None),
        ({"ONEAPI_DEVICE_SELECTOR": "level_zero:0;opencl:gpu"}, ("0",), False, None),
        ({"ONEAPI_DEVICE_SELECTOR": "*:gpu"}, None, False, None),
        ({"ONEAPI_DEVICE_SELECTOR": "!level_zero:0"}, None, False, None),
        ({"ONEAPI_DEVICE_SELECTOR": "!*:*"}, None, True, None),
        ({"ONEAPI_DEVICE_SELECTOR": "level_zero"}, None, False, "is not BACKEND:DEVICES"),
        ({"ONEAPI_DEVICE_SELECTOR": "vulkan:gpu"}, None, False, "is not BACKEND:DEVICES"),
        ({"ONEAPI_DEVICE_SELECTOR": " "}, None, False, "is set but empty"),
        ({"ZE_AFFINITY_MASK": "0,1", "ONEAPI_DEVICE_SELECTOR": "level_zero:5"}, (), True, None),
    ],
)
def test_visibility_reading(environ, selected, hidden, problem) -> None:
    vis = visibility(environ)
    assert vis.selected == selected
    assert (vis.hidden_by is not None) is hidden
    if problem is None:
        assert vis.problems == ()
    else:
        (text,) = vis.problems
        assert problem in text


# -- devices -------------------------------------------------------------------------------


def test_device_indices_and_the_current_device(machine) -> None:
    fake = machine([MAX_1550, MAX_1550, MAX_1550], current=1)
    backend = xpu()
    assert backend.device(2) == torch.device("xpu", 2)
    assert backend.device() == torch.device("xpu", 1)  # what this process selected
    with pytest.raises(ValueError, match="xpu device index 3 is out of range: 3 device"):
        backend.device(3)
    backend.set_device(2)
    assert fake.calls == [("set_device", 2)] and backend.device() == torch.device("xpu", 2)
    backend.set_device(torch.device("xpu", 0))
    backend.set_device(torch.device("xpu"))  # the current device: nothing to change
    assert backend.device() == torch.device("xpu", 0)
    assert fake.calls == [("set_device", 2), ("set_device", 0)]
    with pytest.raises(ValueError, match="the xpu backend got a cpu device"):
        backend.set_device(torch.device("cpu"))


@cpu_torch_only
def test_device_without_gpus_is_plain_xpu() -> None:
    assert xpu().device() == torch.device("xpu")
    with pytest.raises(ValueError, match="0 device"):
        xpu().device(0)


# -- precision -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("facts", "native", "auto"),
    [
        (MAX_1550, (torch.bfloat16, torch.float16), "bf16-mixed"),
        (NO_BF16, (torch.float16,), "fp16-mixed"),
        (NO_LOW_PRECISION, (), "fp32"),
    ],
)
def test_autocast_dtypes_follow_the_device(machine, facts, native, auto) -> None:
    machine([facts])
    backend = xpu()
    assert backend.native_autocast_dtypes() == native
    assert backend.best_mixed_precision() == auto
    assert backend.describe()["native_autocast_dtypes"] == [
        str(d).removeprefix("torch.") for d in native
    ]
    assert (backend.precision_note(torch.bfloat16) is None) is (torch.bfloat16 in native)


def test_autocast_dtypes_are_those_of_the_current_device(machine) -> None:
    fake = machine([MAX_1550, NO_BF16], current=1)
    assert xpu().native_autocast_dtypes() == (torch.float16,)
    fake.current = 0
    assert xpu().native_autocast_dtypes() == (torch.bfloat16, torch.float16)


def test_autocast_accepts_what_torch_xpu_autocast_runs(machine) -> None:
    machine([NO_BF16])
    backend = xpu()
    assert backend.supports_autocast(torch.bfloat16)  # emulated, with a precision note
    assert backend.supports_autocast(torch.float16)
    assert not backend.supports_autocast(torch.float32)
    assert "no native torch.bfloat16" in backend.precision_note(torch.bfloat16)


def test_the_precision_autocasts_on_xpu_with_torch(machine) -> None:
    """The registry's bf16 precision, built for this backend, enters torch's real
    autocast for device type "xpu" (torch accepts it even on a build without XPU)."""
    machine([MAX_1550])
    precision = registry("precision").create("bf16-mixed", xpu())
    assert not torch.is_autocast_enabled("xpu")
    with precision.autocast():
        assert torch.is_autocast_enabled("xpu")
        assert torch.get_autocast_dtype("xpu") == torch.bfloat16
        assert not torch.is_autocast_enabled("cpu")
    assert not torch.is_autocast_enabled("xpu")


# -- collectives ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("collectives", "version", "name", "problem"),
    [
        (("xccl",), "2.13.0+xpu", "xccl", None),
        (("xccl", "ccl"), "2.13.0+xpu", "xccl", None),
        (("ccl",), "2.6.0+xpu", "ccl", None),
        ((), "2.6.0+xpu", "xccl", "torch 2.6.0+xpu predates the built-in xccl backend"),
        ((), "2.13.0+xpu", "xccl", "torch 2.13.0+xpu was built without xccl"),
    ],
)
def test_collective_backend_names(machine, collectives, version, name, problem) -> None:
    machine([MAX_1550], collectives=collectives, torch_version=version)
    backend = xpu()
    assert backend.collective_backend == name and backend.collective_library == "oneccl"
    found = backend.collective_problem()
    assert found == problem if problem is None else found.startswith(problem)
    info = backend.describe()
    assert info["collective_backend"] == name
    assert info["collective_available"] is (problem is None)


@cpu_torch_only
def test_deepseek_distributed_refuses_xccl_here_before_any_rendezvous() -> None:
    pg = pytest.importorskip("deepseek.distributed.process_group")
    backend = xpu()
    assert pg.collective_backend(backend) == "xccl"
    assert "not an XPU build" in backend.collective_problem()
    with pytest.raises(RuntimeError, match="torch.distributed backend 'xccl' is not available"):
        pg.check_collective_backend(backend.collective_backend)


# -- runtime -------------------------------------------------------------------------------


def test_synchronize_memory_and_seeding_reach_the_device(machine) -> None:
    fake = machine([MAX_1550, MAX_1550])
    backend = xpu()
    backend.synchronize(torch.device("xpu", 1))
    backend.synchronize()
    assert backend.memory_stats(1) == {
        "allocated": 101,
        "peak_allocated": 200,
        "reserved": 300,
        "peak_reserved": 400,
    }
    backend.reset_peak_memory_stats(torch.device("xpu", 0))
    backend.manual_seed(1234)
    assert torch.initial_seed() == 1234  # the host generators are seeded too
    assert fake.calls == [
        ("synchronize", 1),
        ("synchronize", None),
        ("reset_peak_memory_stats", 0),
        ("manual_seed_all", 1234),
    ]


def test_without_devices_nothing_reaches_the_device(machine) -> None:
    fake = machine([])
    backend = xpu()
    backend.manual_seed(7)
    backend.synchronize()
    backend.reset_peak_memory_stats()
    assert torch.initial_seed() == 7 and fake.calls == []
    assert backend.memory_stats() == {}


def test_env_report_lines_with_devices(machine, monkeypatch) -> None:
    from deepseek_xpu.plugin import deepseek_env_report

    monkeypatch.setenv("ZE_AFFINITY_MASK", "0,5")
    machine([ARC_A770], collectives=())
    lines = list(deepseek_env_report())
    assert lines[0] == "xpu 0.1.0: 1 Intel GPU(s): xpu:0 Intel(R) Arc(TM) A770 Graphics (16.0 GiB)"
    assert (
        lines[1] == "xpu 0.1.0: visible devices ZE_AFFINITY_MASK=0,5 ONEAPI_DEVICE_SELECTOR=(unset)"
    )
    assert lines[2].startswith("xpu 0.1.0: collectives xccl unavailable (torch 2.13.0+xpu was")
    assert lines[3].startswith("xpu 0.1.0: warning: ZE_AFFINITY_MASK='0,5' lists 2 device(s)")


@pytest.mark.skipif(not torch.xpu.is_available(), reason="needs an Intel GPU")
def test_on_a_real_intel_gpu() -> None:
    backend = ds.backends.get("xpu")
    assert backend.device_count() == torch.xpu.device_count()
    x = torch.randn(64, 64, device=backend.device(0))
    dtype = torch.bfloat16 if torch.bfloat16 in backend.native_autocast_dtypes() else torch.float16
    with (
        registry("precision")
        .create("bf16-mixed" if dtype == torch.bfloat16 else "fp16-mixed", backend)
        .autocast()
    ):
        assert (x @ x).dtype == dtype
    backend.synchronize()
    assert backend.memory_stats()["allocated"] > 0
