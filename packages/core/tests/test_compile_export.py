"""Static-graph mode: ds.compile (with its eager fallback), ds.export and ds.load_exported."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

import deepseek as ds
from deepseek.compiler import MODES, _write_atomically

HAS_ONNX = all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript"))
HAS_ORT = importlib.util.find_spec("onnxruntime") is not None


def make_mlp() -> nn.Module:
    torch.manual_seed(0)
    # BatchNorm and Dropout behave differently in train and eval: export must use eval.
    return nn.Sequential(
        nn.Linear(6, 16), nn.BatchNorm1d(16), nn.GELU(), nn.Dropout(0.5), nn.Linear(16, 3)
    )


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.proj(x).softmax(-1) + bias


class DataDependent(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if x.sum() > 0 else x  # branch on a tensor value: not traceable


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    model = make_mlp()
    return ds.export(model, torch.randn(4, 6), tmp_path / "mlp.pt2")


# --- export / load_exported -------------------------------------------------------------


def test_exported_program_matches_eager_model(tmp_path: Path) -> None:
    model = make_mlp()
    with torch.no_grad():  # give BatchNorm non-trivial running statistics
        model(torch.randn(32, 6) * 3 + 1)
    model[3].eval()  # a submodule in another mode than its parent must keep it
    example = torch.randn(4, 6)

    path = ds.export(model, example, tmp_path / "mlp.pt2")

    assert path == tmp_path / "mlp.pt2" and path.is_file()
    assert model.training and model[1].training and not model[3].training
    loaded = ds.load_exported(path)
    model.eval()
    for x in (example, torch.randn(4, 6), torch.randn(4, 6) * 10):
        torch.testing.assert_close(loaded(x), model(x))


BATCH = torch.export.Dim("batch")
# Every form of dynamic_shapes the docstring shows: (model, example inputs, spec).
SPEC_FORMS = {
    "dim_spec_single_tensor": ("mlp", "tensor", {0: BATCH}),
    "dim_spec_one_tuple": ("mlp", "tuple", {0: BATCH}),  # the README's (x,) form
    "tuple_per_input": ("two", "tuple", ({0: BATCH}, {0: BATCH})),
    "list_per_input": ("two", "tuple", [{0: BATCH}, {0: BATCH}]),
    "dict_by_position": ("two", "tuple", {0: {0: BATCH}, 1: {0: BATCH}}),
    "dict_by_name": ("two", "tuple", {"x": {0: BATCH}, "bias": {0: BATCH}}),
    "default_dynamic_batch": ("two", "tuple", None),
    "default_dynamic_batch_single": ("mlp", "tensor", None),
}


def _inputs(kind: str, n: int, as_tuple: bool) -> tuple[torch.Tensor, ...] | torch.Tensor:
    if kind == "two":
        return (torch.randn(n, 6), torch.randn(n, 4))
    return (torch.randn(n, 6),) if as_tuple else torch.randn(n, 6)


@pytest.mark.parametrize("form", sorted(SPEC_FORMS))
def test_dynamic_batch_in_every_documented_form(tmp_path: Path, form: str) -> None:
    kind, container, spec = SPEC_FORMS[form]
    model: nn.Module = TwoInputs() if kind == "two" else make_mlp().eval()
    example = _inputs(kind, 3, container == "tuple")

    loaded = ds.load_exported(ds.export(model, example, tmp_path / "m.pt2", dynamic_shapes=spec))

    for n in (2, 5, 17):
        inputs = _inputs(kind, n, True)
        torch.testing.assert_close(loaded(*inputs), model(*inputs))


def test_dim_spec_with_several_inputs_says_how_to_fix(tmp_path: Path) -> None:
    example = _inputs("two", 3, True)
    with pytest.raises(ValueError, match=r"one tensor's dimensions.*2 inputs.*\{0: batch\}"):
        ds.export(TwoInputs(), example, tmp_path / "m.pt2", dynamic_shapes={0: BATCH})
    with pytest.raises(ValueError, match="3 entries but example_inputs has 2"):
        ds.export(TwoInputs(), example, tmp_path / "m.pt2", dynamic_shapes=(None, None, None))
    with pytest.raises(ValueError, match=r"positions \[5\]"):
        ds.export(TwoInputs(), example, tmp_path / "m.pt2", dynamic_shapes={5: {0: BATCH}})


class FixedBatch(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(4, -1).sum(-1)  # hard-codes the batch size


def test_model_that_fixes_the_batch_warns_and_exports_static(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="accepts only batch size 4.*depends on the batch"):
        path = ds.export(FixedBatch(), torch.randn(4, 3), tmp_path / "f.pt2")
    loaded = ds.load_exported(path)
    torch.testing.assert_close(loaded(torch.ones(4, 3)), torch.full((4,), 3.0))
    with pytest.warns(UserWarning, match="batch has size 1"):
        ds.export(make_mlp(), torch.randn(1, 6), tmp_path / "one.pt2")


def test_static_export_on_request_rejects_another_batch_size(tmp_path: Path) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a static export on purpose warns about nothing
        path = ds.export(make_mlp(), torch.randn(4, 6), tmp_path / "s.pt2", dynamic_batch=False)
    loaded = ds.load_exported(path)
    loaded(torch.randn(4, 6))
    with pytest.raises(AssertionError, match="size"):
        loaded(torch.randn(5, 6))


def test_export_writes_atomically_and_creates_parent_dirs(tmp_path: Path) -> None:
    target = tmp_path / "nested" / "dir" / "model.pt2"
    ds.export(make_mlp(), torch.randn(4, 6), target)
    ds.export(TwoInputs(), (torch.randn(2, 6), torch.randn(2, 4)), target)  # overwrite

    assert os.listdir(target.parent) == ["model.pt2"]
    restored = ds.load_exported(target)
    x, b = torch.randn(2, 6), torch.randn(2, 4)
    assert restored(x, b).shape == (2, 4)


def test_failed_write_keeps_previous_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "model.pt2"
    target.write_bytes(b"previous")

    def write_half_then_fail(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        _write_atomically(target, write_half_then_fail)
    assert target.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["model.pt2"]


def test_untraceable_model_gives_one_runtime_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="could not trace DataDependent") as info:
        ds.export(DataDependent(), torch.randn(3), tmp_path / "bad.pt2")
    assert "dynamic_shapes" in str(info.value)
    assert info.value.__cause__ is not None
    assert os.listdir(tmp_path) == []


def test_mismatched_dynamic_shapes_gives_one_runtime_error(tmp_path: Path) -> None:
    batch = torch.export.Dim("batch")
    with pytest.raises(RuntimeError, match="could not trace Linear"):
        ds.export(nn.Linear(6, 2), (torch.randn(3, 6),), tmp_path / "m.pt2",
                  dynamic_shapes=({0: batch, 1: batch},))  # fmt: skip
    with pytest.raises(ValueError, match="2 entries but example_inputs has 1"):
        ds.export(nn.Linear(6, 2), (torch.randn(3, 6),), tmp_path / "m.pt2",
                  dynamic_shapes=({0: batch}, {0: batch}))  # fmt: skip


@pytest.mark.parametrize("bad", ["x", 3, None, {"x": 1}])
def test_export_rejects_bad_example_inputs(tmp_path: Path, bad: object) -> None:
    with pytest.raises(TypeError, match="example_inputs must be a tensor or a tuple"):
        ds.export(make_mlp(), bad, tmp_path / "m.pt2")  # type: ignore[arg-type]


def test_export_rejects_bad_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="format='tflite' is not supported"):
        ds.export(make_mlp(), torch.randn(2, 6), tmp_path / "m.pt2", format="tflite")
    with pytest.raises(ValueError, match="must end in .onnx"):
        ds.export(make_mlp(), torch.randn(2, 6), tmp_path / "m.pt2", format="onnx")
    with pytest.raises(TypeError, match="expects an nn.Module"):
        ds.export(lambda x: x, torch.randn(2, 6), tmp_path / "m.pt2")  # type: ignore[arg-type]


def test_load_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pt2"
    with pytest.raises(FileNotFoundError, match="nope.pt2"):
        ds.load_exported(missing)
    with pytest.raises(IsADirectoryError):
        ds.load_exported(tmp_path)


def test_load_garbage_truncated_and_foreign_files(tmp_path: Path, archive: Path) -> None:
    garbage = tmp_path / "garbage.pt2"
    garbage.write_bytes(os.urandom(4096))
    truncated = tmp_path / "truncated.pt2"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    state_dict = tmp_path / "weights.pt2"  # a zip too, but no exported program
    torch.save(make_mlp().state_dict(), state_dict)

    for path in (garbage, truncated):
        with pytest.raises(ValueError, match="not a zip archive, or it is truncated"):
            ds.load_exported(path)
    with pytest.raises(ValueError, match="without an exported program"):
        ds.load_exported(state_dict)


class _Canary:
    """Unpickling this creates a directory: stands in for arbitrary code in a file."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (self.target,)


def test_archive_with_pickled_payload_is_refused(tmp_path: Path, archive: Path) -> None:
    canary = tmp_path / "code_ran"
    payload = io.BytesIO()
    torch.save(_Canary(str(canary)), payload)
    tampered = tmp_path / "tampered.pt2"
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(tampered, "w") as dst:
        for name in src.namelist():
            is_inputs = name.endswith(".pt") and "sample_inputs" in name
            dst.writestr(name, payload.getvalue() if is_inputs else src.read(name))

    with pytest.raises(ValueError, match="pickled objects.*trusted=True"):
        ds.load_exported(tampered)
    assert not canary.exists()


def test_archive_with_pickled_weight_is_refused(tmp_path: Path, archive: Path) -> None:
    tampered = tmp_path / "tampered.pt2"
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(tampered, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name.endswith("weights_config.json"):
                config = json.loads(data)
                next(iter(config["config"].values()))["use_pickle"] = True
                data = json.dumps(config).encode()
            dst.writestr(name, data)
    with pytest.raises(ValueError, match="pickled objects"):
        ds.load_exported(tampered)


@pytest.mark.skipif(HAS_ONNX, reason="onnx is installed")
def test_onnx_export_without_onnx_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(ImportError, match="pip install onnx onnxscript"):
        ds.export(make_mlp(), torch.randn(2, 6), tmp_path / "m.onnx")
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(not (HAS_ONNX and HAS_ORT), reason="needs onnx, onnxscript, onnxruntime")
def test_onnx_round_trip_matches_eager(tmp_path: Path) -> None:
    model = make_mlp().eval()
    path = ds.export(model, torch.randn(3, 6), tmp_path / "m.onnx",
                     dynamic_shapes={0: torch.export.Dim("batch")})  # fmt: skip
    loaded = ds.load_exported(path)
    assert os.listdir(tmp_path) == ["m.onnx"]
    for n in (3, 8):
        x = torch.randn(n, 6)
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-5, atol=1e-5)


# --- compile ----------------------------------------------------------------------------


def test_compile_rejects_bad_mode_listing_allowed_values() -> None:
    with pytest.raises(ValueError, match="mode='fastest'.*reduce-overhead.*max-autotune"):
        ds.compile(make_mlp(), mode="fastest")
    assert "default" in MODES and None in MODES


def test_compile_rejects_other_bad_arguments() -> None:
    with pytest.raises(ValueError, match="either mode='default' or inductor options"):
        ds.compile(make_mlp(), mode="default", epilogue_fusion=False)
    with pytest.raises(ValueError, match="unknown backend 'nope'.*inductor"):
        ds.compile(make_mlp(), backend="nope")
    with pytest.raises(TypeError, match="nn.Module or a function"):
        ds.compile(42)  # type: ignore[type-var]


_FALLBACK_SCRIPT = textwrap.dedent(
    """
    import json, warnings
    import torch
    import deepseek.compiler  # the subpackage must not shadow the ds.compile function
    import deepseek as ds

    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    x = torch.randn(3, 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = ds.compile(model)
        second = ds.compile(model, mode="max-autotune")
    try:
        ds.compile(model, fallback=False)
        error = None
    except RuntimeError as exc:
        error = str(exc)
    print(json.dumps({
        "warnings": [str(w.message) for w in caught],
        "returned_eager": first is model and second is model,
        "runs": torch.equal(first(x), model(x)),
        "error": error,
    }))
    """
)


def test_compile_falls_back_to_eager_without_a_cxx_compiler() -> None:
    env = {**os.environ, "CXX": "/nonexistent/bin/c++"}  # what inductor's config reads
    proc = subprocess.run(
        [sys.executable, "-c", _FALLBACK_SCRIPT], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])

    assert len(result["warnings"]) == 1, result["warnings"]  # warned once, not per call
    message = result["warnings"][0]
    assert "C++ compiler" in message and "/nonexistent/bin/c++" in message
    assert "runs eagerly" in message
    assert result["returned_eager"] and result["runs"]
    assert result["error"] is not None and "C++ compiler" in result["error"]
    assert "fallback=True" in result["error"]


@pytest.mark.skipif(
    shutil.which(os.environ.get("CXX", "g++")) is None, reason="inductor needs a C++ compiler"
)
def test_compile_with_inductor_matches_eager() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    compiled = ds.compile(model, backend="inductor")

    assert compiled is not model
    with torch.no_grad():
        for n in (5, 5, 9):
            x = torch.randn(n, 8)
            torch.testing.assert_close(compiled(x), model(x))
    # The wrapper shares the eager model's parameters.
    assert next(compiled.parameters()) is next(model.parameters())


def test_export_without_example_inputs_is_smaller_and_loads_safely(tmp_path):
    """keep_example_inputs=False drops the stored inputs (a megabyte for a 224x224 batch)
    and the archive still passes the safe-load check and runs any batch."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    x = torch.randn(2, 3, 96, 96)
    full = ds.export(model, x, tmp_path / "full.pt2")
    lean = ds.export(model, x, tmp_path / "lean.pt2", keep_example_inputs=False)
    assert lean.stat().st_size < full.stat().st_size - x.numel() * 4 // 2
    with zipfile.ZipFile(lean) as archive:
        samples = [n for n in archive.namelist() if "sample_inputs" in n]
        assert all(archive.read(n) == b"" for n in samples)
    y = torch.randn(5, 3, 96, 96)
    torch.testing.assert_close(ds.load_exported(lean)(y), model(y))
