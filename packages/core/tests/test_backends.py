"""``ds.backends``: lookup, auto selection, precision knowledge, memory stats, seeding."""

from __future__ import annotations

import doctest
import random

import numpy as np
import pytest
import torch

import deepseek as ds
import deepseek.plugins as plugins
from deepseek.backends import Backend
from deepseek.backends.cpu import CPUBackend, cpu_flags, native_dtypes_from_flags
from deepseek.plugins import BackendSpec, UnknownNameError, hookimpl

pytestmark = pytest.mark.usefixtures("fresh_plugins")

ON_CUDA = torch.cuda.is_available()


def test_module_docstring_example_runs() -> None:
    result = doctest.testmod(ds.backends, report=False)
    assert result.attempted >= 3 and result.failed == 0


def test_cpu_is_available_with_one_device() -> None:
    cpu = ds.backends.get("cpu")
    assert isinstance(cpu, Backend) and cpu.is_available()
    assert cpu.unavailable_reason() is None
    assert cpu.device() == torch.device("cpu")
    assert cpu.device(0) == torch.device("cpu")
    assert cpu.device_count() == 1 and cpu.device_names() == ["cpu"]
    assert cpu.collective_backend == "gloo"
    with pytest.raises(ValueError, match="one device"):
        cpu.device(1)
    assert ds.backends.get(" CPU ") is cpu  # one instance per backend, names normalised


def test_every_registered_backend_is_listed() -> None:
    assert {"cpu", "cuda", "rocm"} <= set(ds.backends.names())
    available = ds.backends.available()
    assert all(b.is_available() for b in available)
    assert [b.priority for b in available] == sorted((b.priority for b in available), reverse=True)


@pytest.mark.skipif(ON_CUDA, reason="auto picks the GPU here")
def test_auto_is_cpu_on_this_machine() -> None:
    assert ds.backends.get("auto").name == "cpu"
    assert ds.backends.get().name == "cpu"


def test_a_backend_object_is_passed_through() -> None:
    cpu = CPUBackend()
    assert ds.backends.get(cpu) is cpu


@pytest.mark.parametrize(
    ("name", "build_attr"), [("cuda", "cuda"), ("rocm", "hip")], ids=["cuda", "rocm"]
)
def test_unavailable_gpu_backend_says_why(name: str, build_attr: str) -> None:
    if getattr(torch.version, build_attr, None) is not None:
        pytest.skip(f"this torch build has {name} support")
    with pytest.raises(RuntimeError) as info:
        ds.backends.get(name)
    message = str(info.value)
    assert f"backend {name!r} is not available" in message
    assert f"no {name.upper()} support" in message and f"install a {name.upper()} build" in message
    available_here = message.split("Available here:")[1].split(".")[0]
    assert "cpu" in available_here.replace(",", " ").split()


@pytest.mark.skipif(not ON_CUDA, reason="needs a CUDA GPU")
def test_cuda_backend_on_a_gpu() -> None:
    cuda = ds.backends.get("cuda")
    assert ds.backends.get("auto") is cuda
    assert cuda.device(0) == torch.device("cuda", 0)
    assert torch.float16 in cuda.native_autocast_dtypes()
    assert cuda.best_mixed_precision() in ("bf16-mixed", "fp16-mixed")
    before = cuda.memory_stats(cuda.device(0))["allocated"]
    block = torch.empty(1 << 20, device=cuda.device(0))
    cuda.synchronize()
    stats = cuda.memory_stats(cuda.device(0))
    assert stats["allocated"] >= before + block.numel() * 4
    assert stats["peak_allocated"] >= stats["allocated"]
    assert cuda.describe()["device_count"] == torch.cuda.device_count()


def test_unknown_backend_lists_the_known_ones() -> None:
    with pytest.raises(UnknownNameError) as info:
        ds.backends.get("tpu")
    message = str(info.value)
    assert "unknown backend 'tpu'" in message
    for name in ("cpu", "cuda", "rocm"):
        assert name in message


def test_non_string_backend_name_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="backend name must be a string"):
        ds.backends.get(0)  # type: ignore[arg-type]


def test_auto_without_any_backend_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # With core's plugin gone no backend is registered at all: "auto" must say so, not
    # fail with an IndexError from deep inside. (Core cannot be disabled through
    # DEEPSEEK_DISABLED_PLUGINS; a run-time unregister still removes it.)
    monkeypatch.setenv("DEEPSEEK_DISABLE_PLUGIN_AUTOLOAD", "1")  # no third-party backends
    for name in [r.name for r in plugins.plugins() if r.status == "loaded"]:
        plugins.unregister(name)
    assert ds.backends.names() == []
    with pytest.raises(RuntimeError, match="(?i)no .*backend"):
        ds.backends.get("auto")


def test_override_of_a_used_backend_takes_effect() -> None:
    first = ds.backends.get("cpu")

    class MyCPU(CPUBackend):
        pass

    class Overrider:
        @hookimpl
        def deepseek_backends(self):
            return [BackendSpec("cpu", MyCPU, "my cpu", override=True)]

    plugins.register(Overrider(), name="overrider")
    assert type(ds.backends.get("cpu")) is MyCPU
    plugins.unregister("overrider")
    assert type(ds.backends.get("cpu")) is CPUBackend
    assert type(first) is CPUBackend


def test_a_factory_that_builds_no_backend_is_a_type_error() -> None:
    class Wrong:
        @hookimpl
        def deepseek_backends(self):
            return [BackendSpec("notabackend", dict, "")]

    plugins.register(Wrong(), name="wrong-plugin")
    with pytest.raises(TypeError, match="'notabackend'.*built a dict, not a deepseek.backends"):
        ds.backends.get("notabackend")


# -- precision knowledge -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"sse4_2", "avx2", "avx512f"}, ()),
        ({"avx2", "avx512_bf16"}, (torch.bfloat16,)),
        ({"amx_bf16", "amx_tile"}, (torch.bfloat16,)),
        ({"bf16", "asimd"}, (torch.bfloat16,)),  # aarch64 FEAT_BF16
        ({"avx512_fp16"}, (torch.float16,)),
        ({"avx512_bf16", "amx_fp16"}, (torch.bfloat16, torch.float16)),
        (set(), ()),
    ],
)
def test_native_dtypes_from_flags(flags: set[str], expected: tuple[torch.dtype, ...]) -> None:
    assert native_dtypes_from_flags(frozenset(flags)) == expected


def cpu_with_flags(flags: set[str]) -> CPUBackend:
    """A CPU backend that sees ``flags`` instead of this machine's."""

    class FlaggedCPU(CPUBackend):
        def native_autocast_dtypes(self) -> tuple[torch.dtype, ...]:
            return native_dtypes_from_flags(frozenset(flags))

    return FlaggedCPU()


def test_precision_note_says_emulated_when_the_flags_are_missing() -> None:
    note = cpu_with_flags({"avx2"}).precision_note(torch.bfloat16)
    assert note is not None
    assert "emulated" in note and "bfloat16" in note and "avx512_bf16" in note
    assert cpu_with_flags({"avx512_bf16"}).precision_note(torch.bfloat16) is None
    assert "emulated" in cpu_with_flags({"avx512_bf16"}).precision_note(torch.float16)


def test_precision_note_on_this_cpu_matches_its_flags() -> None:
    cpu = ds.backends.get("cpu")
    native = torch.bfloat16 in native_dtypes_from_flags(cpu_flags())
    assert (cpu.precision_note(torch.bfloat16) is None) == native
    assert cpu.supports_autocast(torch.bfloat16)


class Accelerator(Backend):
    """A minimal always-available backend with the given native dtypes."""

    name = "accel"

    def __init__(self, native: tuple[torch.dtype, ...]) -> None:
        self.native = native

    def is_available(self) -> bool:
        return True

    def device_count(self) -> int:
        return 1

    def native_autocast_dtypes(self) -> tuple[torch.dtype, ...]:
        return self.native


@pytest.mark.parametrize(
    ("native", "expected"),
    [
        ((), "fp32"),
        ((torch.float16,), "fp16-mixed"),
        ((torch.bfloat16,), "bf16-mixed"),
        ((torch.float16, torch.bfloat16), "bf16-mixed"),
    ],
)
def test_best_mixed_precision(native: tuple[torch.dtype, ...], expected: str) -> None:
    assert Accelerator(native).best_mixed_precision() == expected
    assert expected in plugins.registry("precision")  # a name the Trainer can resolve
    assert Accelerator(native).describe()["auto_precision"] == expected


@pytest.mark.parametrize("flags", [{"avx2"}, {"avx512_bf16", "amx_bf16"}])
def test_cpu_auto_precision_stays_fp32(flags: set[str]) -> None:
    # Even with native bf16, CPU autocast changes numerics for little gain.
    assert cpu_with_flags(flags).best_mixed_precision() == "fp32"


def test_unavailable_gpu_has_no_native_dtypes_and_fp32_precision() -> None:
    cuda = ds.backends._instance("cuda")
    if cuda.is_available():
        pytest.skip("CUDA is available here")
    assert cuda.native_autocast_dtypes() == ()
    assert cuda.best_mixed_precision() == "fp32"
    assert cuda.device_count() == 0


# -- runtime -------------------------------------------------------------------------------


def test_cpu_memory_stats_are_positive_ints() -> None:
    cpu = ds.backends.get("cpu")
    keep = torch.ones(1 << 20)  # 4 MiB that is really touched
    stats = cpu.memory_stats()
    assert set(stats) >= {"allocated", "peak_allocated"}
    for key in ("allocated", "peak_allocated"):
        assert isinstance(stats[key], int) and stats[key] > keep.numel() * 4
    cpu.reset_peak_memory_stats()  # a no-op on the CPU, but callable
    cpu.synchronize()


def draws() -> tuple[float, float, list[float]]:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_manual_seed_makes_python_numpy_and_torch_reproducible() -> None:
    cpu = ds.backends.get("cpu")
    cpu.manual_seed(1234)
    first = draws()
    cpu.manual_seed(1234)
    assert draws() == first
    cpu.manual_seed(1235)
    other = draws()
    assert other[0] != first[0] and other[1] != first[1] and other[2] != first[2]
    cpu.manual_seed(2**40 + 7)  # larger than NumPy's 32-bit seed range still works
    assert len(draws()[2]) == 3


def test_torch_backends_fall_through() -> None:
    assert ds.backends.cudnn is torch.backends.cudnn
    assert ds.backends.mkldnn is torch.backends.mkldnn
    with pytest.raises(AttributeError, match="'deepseek.backends' has no attribute 'nope'"):
        ds.backends.nope  # noqa: B018


def test_describe_works_for_every_backend_available_or_not() -> None:
    for name in ds.backends.names():
        backend = ds.backends._instance(name)
        info = backend.describe()
        assert info["name"] == name
        assert info["available"] == backend.is_available()
        # A plugin's backend (deepseek-xpu: xccl) may be installed beside core's.
        assert info["collective_backend"] in torch.distributed.Backend.backend_list
        if info["available"]:
            assert info["reason"] is None and info["device_count"] >= 1
            assert info["auto_precision"] in ("fp32", "fp16-mixed", "bf16-mixed")
        else:
            assert isinstance(info["reason"], str) and info["reason"]
            assert info["device_count"] == 0 and info["devices"] == []
    cpu = ds.backends.get("cpu").describe()
    assert cpu["threads"] == torch.get_num_threads()
    assert cpu["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_set_device_goes_to_torchs_module_for_the_device_family(monkeypatch) -> None:
    """Distributed ranks select their device through the backend (not a hard-coded
    torch.cuda), so plugin backends (xpu, ...) get their own rank placement too."""
    from deepseek.backends.base import Backend

    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", calls.append)  # the device boundary
    cuda_like = type("CudaLike", (Backend,), {"device_type": "cuda"})()
    cuda_like.set_device(torch.device("cuda", 1))
    assert calls == [torch.device("cuda", 1)]
    ds.backends.get("cpu").set_device(torch.device("cpu"))  # the CPU: nothing to select
    assert calls == [torch.device("cuda", 1)]
