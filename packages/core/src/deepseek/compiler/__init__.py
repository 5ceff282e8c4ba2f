"""Static-graph mode: compile a model for speed, export it for deployment.

``compile`` wraps :func:`torch.compile` and falls back to eager, with one clear warning,
when the compiler cannot work on this machine. ``export`` traces a model with
:func:`torch.export.export` and writes a deployable ``.pt2`` archive (or ``.onnx`` when
the ``onnx`` package is installed); ``load_exported`` reads it back as a module::

    >>> import torch, deepseek as ds
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU())
    >>> path = ds.export(model, torch.randn(2, 4), "/tmp/mlp.pt2")
    >>> restored = ds.load_exported(path)
    >>> x = torch.randn(2, 4)
    >>> torch.testing.assert_close(restored(x), model(x))
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import itertools
import json
import os
import re
import shutil
import sys
import tempfile
import types
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

__all__ = ["MODES", "compile", "export", "load_exported"]

MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

_Compilable = TypeVar("_Compilable", bound=Callable[..., Any])
_warned: set[str] = set()


def compile(
    model: _Compilable,
    *,
    mode: str | None = None,
    fullgraph: bool = False,
    dynamic: bool | None = None,
    backend: str | Callable[..., Any] = "inductor",
    fallback: bool = True,
    **options: Any,
) -> _Compilable:
    """Compile ``model`` with :func:`torch.compile`, or run it eagerly if that cannot work.

    torch.compile only fails on the first call, deep inside its stack, when this machine
    lacks what the backend needs (a supported Python, a C++ compiler for inductor on CPU,
    Triton on GPU). This checks those up front: with ``fallback=True`` it warns once and
    returns ``model`` unchanged, with ``fallback=False`` it raises a RuntimeError.
    ``options`` are inductor options (``torch.compile(options=...)``), exclusive with ``mode``.

    The compiled module shares parameters with ``model``; save ``model.state_dict()``
    (the compiled wrapper prefixes its keys with ``_orig_mod.``).

    Example::

        >>> import torch, deepseek as ds
        >>> model = torch.nn.Linear(4, 2)
        >>> fast = ds.compile(model)  # compiles on the first call
        >>> fast(torch.randn(3, 4)).shape
        torch.Size([3, 2])
    """
    if not callable(model):
        raise TypeError(f"ds.compile expects an nn.Module or a function, got {type(model)}")
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not supported; use one of {MODES}")
    if mode is not None and options:
        raise ValueError(
            f"pass either mode={mode!r} or inductor options {sorted(options)}, not both "
            "(torch.compile accepts only one)"
        )
    if isinstance(backend, str) and backend not in torch.compiler.list_backends(exclude_tags=()):
        raise ValueError(
            f"unknown backend {backend!r}; available: {', '.join(torch.compiler.list_backends())}"
        )

    reason = _unavailable_reason(model, backend)
    if reason is not None:
        message = f"torch.compile cannot run here: {reason}."
        if not fallback:
            raise RuntimeError(f"{message} Fix that, or pass fallback=True to run eagerly.")
        _warn_once(f"{message} ds.compile returns the model uncompiled; it runs eagerly.")
        return model
    return torch.compile(
        model,
        mode=mode,
        fullgraph=fullgraph,
        dynamic=dynamic,
        backend=backend,
        options=options or None,
    )


def _unavailable_reason(model: Callable[..., Any], backend: Any) -> str | None:
    """Why torch.compile would fail on first call here, or None when it should work."""
    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        version = ".".join(map(str, sys.version_info[:2]))
        return f"TorchDynamo does not support Python {version} on {sys.platform}"
    if backend != "inductor":
        return None
    if _device_type(model) == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            return "the inductor backend needs Triton for GPU models (pip install triton)"
        return None
    # Inductor on CPU builds C++ kernels with the compiler named in its config ($CXX or g++).
    import torch._inductor.config as inductor_config

    candidates = [c for c in inductor_config.cpp.cxx if c]
    if not any(shutil.which(c) for c in candidates):
        return (
            f"the inductor backend needs a C++ compiler on CPU and {' / '.join(candidates)} "
            "was not found (install g++, or set CXX to a compiler)"
        )
    return None


def _device_type(model: Callable[..., Any]) -> str:
    if isinstance(model, nn.Module):
        for tensor in itertools.chain(model.parameters(), model.buffers()):
            return tensor.device.type
    return "cpu"


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, UserWarning, stacklevel=3)


def export(
    model: nn.Module,
    example_inputs: torch.Tensor | tuple[Any, ...] | list[Any],
    path: str | os.PathLike[str],
    *,
    dynamic_shapes: Any = None,
    dynamic_batch: bool = True,
    format: str | None = None,
    strict: bool = False,
    keep_example_inputs: bool = True,
) -> Path:
    """Trace ``model`` on ``example_inputs`` and write a deployable artifact to ``path``.

    The model is traced in eval mode (what deployment runs); each submodule's train/eval
    state is restored afterwards. The default format is a :func:`torch.export.save`
    archive (use a ``.pt2`` suffix); ``format="onnx"`` or a ``.onnx`` suffix writes ONNX
    instead (needs ``pip install onnx onnxscript``). The file is written to a temporary
    name and renamed, so a failure never leaves a half-written artifact.

    Batch size: by default (``dynamic_batch=True``, no ``dynamic_shapes``) the first
    dimension of every tensor input is dynamic wherever the model allows it, so the
    export runs any batch size. Where the model fixes it (a reshape to a constant batch,
    an example batch of 1) the export keeps the example's batch and warns; pass
    ``dynamic_batch=False`` for a static export without the warning.

    A ``.pt2`` archive stores the example inputs (torch's own format: tools re-run or
    compile the program with them); ``keep_example_inputs=False`` leaves them out, for
    deployment artifacts where a batch of 224x224 images would add megabytes.

    ``dynamic_shapes`` (overrides ``dynamic_batch``) is torch.export's spec, accepted in
    these forms (``batch = torch.export.Dim("batch")``):

    - ``{0: batch}``: dimension 0 of the model's only input (tensor or 1-tuple);
    - ``({0: batch}, {0: batch})`` or a list: one spec per positional input;
    - ``{0: {0: batch}, 1: None}``: specs by input position;
    - ``{"x": {0: batch}}``: specs by argument name (torch's own form).

    Example::

        >>> import torch, deepseek as ds
        >>> model = torch.nn.Linear(4, 2)
        >>> batch = torch.export.Dim("batch")
        >>> path = ds.export(model, (torch.randn(3, 4),), "/tmp/linear.pt2",
        ...                  dynamic_shapes={0: batch})
        >>> ds.load_exported(path)(torch.randn(7, 4)).shape
        torch.Size([7, 2])
        >>> path = ds.export(model, torch.randn(3, 4), "/tmp/linear_auto.pt2")  # default
        >>> ds.load_exported(path)(torch.randn(5, 4)).shape
        torch.Size([5, 2])
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"ds.export expects an nn.Module, got {type(model)}")
    inputs = _as_input_tuple(example_inputs)
    automatic = dynamic_shapes is None and dynamic_batch
    if automatic:
        dynamic_shapes = _batch_dynamic_shapes(inputs)
    elif dynamic_shapes is not None:
        dynamic_shapes = _normalize_dynamic_shapes(dynamic_shapes, inputs)
    path = Path(path)
    onnx = _is_onnx(path, format)
    if onnx:
        _require("onnx", "onnxscript", purpose="ONNX export")

    states = {module: module.training for module in model.modules()}
    model.eval()
    try:
        artifact = _trace(model, inputs, dynamic_shapes, strict, onnx)
    finally:
        for module, training in states.items():
            module.train(training)
    if automatic:
        _warn_if_batch_fixed(model, artifact, inputs, onnx)

    if onnx:
        _write_atomically(path, lambda tmp: artifact.save(str(tmp)))
    else:
        if not keep_example_inputs:
            artifact.example_inputs = None
        _write_atomically(path, lambda tmp: torch.export.save(artifact, tmp))
    return path


def _as_input_tuple(example_inputs: Any) -> tuple[Any, ...]:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs)
    raise TypeError(
        "example_inputs must be a tensor or a tuple of the model's positional inputs, "
        f"got {type(example_inputs).__name__}"
    )


def _batch_dynamic_shapes(inputs: tuple[Any, ...]) -> tuple[Any, ...]:
    """Dimension 0 of every tensor (at any nesting) marked ``Dim.AUTO``: dynamic where the
    model allows it, static (never an error) where it does not."""
    from torch.utils._pytree import tree_map

    def spec(leaf: Any) -> Any:
        if isinstance(leaf, torch.Tensor) and leaf.dim() >= 1:
            return {0: torch.export.Dim.AUTO}
        return None

    return tuple(tree_map(spec, x) for x in inputs)


def _is_dim_value(value: Any) -> bool:
    return not isinstance(value, dict | list | tuple)


def _normalize_dynamic_shapes(spec: Any, inputs: tuple[Any, ...]) -> Any:
    """The forms the docstring lists, as torch.export's tuple (or name-keyed dict)."""
    n = len(inputs)
    if isinstance(spec, list):
        spec = tuple(spec)
    if isinstance(spec, dict) and spec and all(isinstance(k, int) for k in spec):
        if all(_is_dim_value(v) for v in spec.values()):
            if n != 1:
                raise ValueError(
                    f"dynamic_shapes={spec!r} is the spec of one tensor's dimensions, but the "
                    f"model takes {n} inputs: pass one spec per input, e.g. "
                    f"({', '.join(['{0: batch}'] * n)}), or by position {{0: {{0: batch}}, ...}}"
                )
            return (spec,)
        bad = [k for k in spec if not 0 <= k < n]
        if bad:
            raise ValueError(
                f"dynamic_shapes gives specs for input positions {bad}, but example_inputs "
                f"has {n} input(s) (positions 0..{n - 1})"
            )
        return tuple(spec.get(i) for i in range(n))
    if isinstance(spec, tuple) and len(spec) != n:
        raise ValueError(
            f"dynamic_shapes has {len(spec)} entries but example_inputs has {n} input(s): "
            "pass one spec (or None) per positional input"
        )
    return spec


def _warn_if_batch_fixed(
    model: nn.Module, artifact: Any, inputs: tuple[Any, ...], onnx: bool
) -> None:
    """Say so when the default dynamic batch could not be kept."""
    from torch.fx.experimental.symbolic_shapes import is_concrete_int
    from torch.utils._pytree import tree_leaves

    tensors = [t for t in tree_leaves(inputs) if isinstance(t, torch.Tensor) and t.dim() >= 1]
    if not tensors:
        return
    if onnx:
        shapes = [list(getattr(i, "shape", []) or []) for i in artifact.model.graph.inputs]
        fixed = [s for s in shapes if s and isinstance(s[0], int)]
    else:
        names = set(artifact.graph_signature.user_inputs)
        shapes = [
            node.meta["val"].shape
            for node in artifact.graph.nodes
            if node.op == "placeholder"
            and node.name in names
            and "val" in node.meta
            and isinstance(node.meta["val"], torch.Tensor)
            and node.meta["val"].dim() >= 1
        ]
        fixed = [s for s in shapes if is_concrete_int(s[0])]
    if not fixed:
        return
    batch = tensors[0].shape[0]
    why = (
        "the example batch has size 1, which torch always treats as fixed: export with a "
        "batch of 2 or more"
        if batch == 1
        else f"{type(model).__name__} depends on the batch size (e.g. a reshape to a constant "
        "batch); make that code use the input's shape"
    )
    warnings.warn(
        f"ds.export: the exported {type(model).__name__} accepts only batch size {batch}, "
        f"not any batch: {why}. Pass dynamic_batch=False to export a fixed batch on purpose.",
        UserWarning,
        stacklevel=3,
    )


def _is_onnx(path: Path, format: str | None) -> bool:
    if format not in (None, "pt2", "onnx"):
        raise ValueError(f"format={format!r} is not supported; use 'pt2', 'onnx' or None")
    suffix_is_onnx = path.suffix.lower() == ".onnx"
    if format is not None and (format == "onnx") != suffix_is_onnx:
        # load_exported picks the reader by suffix, so the two must agree.
        raise ValueError(
            f"format={format!r} does not match the file name {path.name!r}: "
            "ONNX files must end in .onnx, torch.export archives must not (use .pt2)"
        )
    return suffix_is_onnx


def _trace(
    model: nn.Module, inputs: tuple[Any, ...], dynamic_shapes: Any, strict: bool, onnx: bool
) -> Any:
    try:
        if onnx:
            return torch.onnx.export(
                model, inputs, dynamo=True, dynamic_shapes=dynamic_shapes, verbose=False
            )
        return torch.export.export(model, inputs, dynamic_shapes=dynamic_shapes, strict=strict)
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise RuntimeError(
            f"ds.export could not trace {type(model).__name__} "
            f"({type(exc).__name__}: {first_line}). If the error is about shapes or "
            "constraints, check dynamic_shapes against example_inputs (or relax it with "
            "torch.export.Dim.AUTO); Python branches on tensor values must become "
            "torch.cond; strict=True/False switches tracers. Torch's full error is above."
        ) from exc


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Write into a private temp dir next to ``path``, then rename into place.

    A directory rather than a temp file because ONNX may write side files
    (external weights) named after the destination, which must keep their final names.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        write(tmp_dir / path.name)
        # The main file last: once it appears, its side files are already in place.
        for written in sorted(tmp_dir.iterdir(), key=lambda p: p.name == path.name):
            os.replace(written, path.parent / written.name)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def load_exported(
    path: str | os.PathLike[str], *, trusted: bool = False, verify: bool = True
) -> nn.Module:
    """Load what :func:`export` wrote: a callable module with the model's forward.

    ``.pt2`` archives come back as torch.export's module. torch.export.load unpickles
    some payloads (legacy layouts, tensor subclasses, custom objects, inputs that plain
    tensor loading rejects) and can load native code (AOTInductor), which can run
    arbitrary code, so archives holding any such member are refused unless
    ``trusted=True``. With ``verify=True`` every member's CRC-32 (stored by the zip
    format) is checked first, so a flipped bit is an error naming the member rather than
    wrong weights. ``.onnx`` files run with onnxruntime (``pip install onnxruntime``).

    Example::

        >>> import torch, deepseek as ds
        >>> path = ds.export(torch.nn.Linear(4, 2), torch.randn(3, 4), "/tmp/lin.pt2")
        >>> ds.load_exported(path)(torch.randn(3, 4)).shape
        torch.Size([3, 2])
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no exported model at {path}")
    if not path.is_file():
        raise IsADirectoryError(f"{path} is a directory; pass the exported .pt2 or .onnx file")
    if path.suffix.lower() == ".onnx":
        return _OnnxRuntimeModule(path)

    _check_archive(path, trusted, verify)
    try:
        if trusted:
            return torch.export.load(path).module()
        with _weights_only_loads():
            return torch.export.load(path).module()
    except Exception as exc:
        raise ValueError(
            f"{path} could not be loaded as a torch.export archive "
            f"({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}); "
            f"it may come from another torch version than {torch.__version__}: "
            "re-export it with ds.export"
        ) from exc


# What torch.export.save (torch >= 2.8) writes, relative to the archive's root folder.
# Every other member is refused from an untrusted file: torch reaches them through code
# paths that unpickle (legacy weight/constant blobs, pickled or custom objects) or load
# native code (AOTInductor, ExecuTorch, MTIA payloads).
_SAFE_MEMBERS = re.compile(
    r"(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|models/[\w.-]+\.json"
    r"|data/weights/[\w.-]+_weights_config\.json|data/weights/weight_\d+"
    r"|data/constants/[\w.-]+_constants_config\.json|data/constants/tensor_\d+"
    r"|data/sample_inputs/[\w.-]+\.pt"
    r"|extra/[\w./-]+)"
)
_LEGACY_MEMBERS = ("version", "serialized_exported_program.json")
_PAYLOAD_NAME = {"weights": re.compile(r"weight_\d+"), "constants": re.compile(r"tensor_\d+")}


@contextlib.contextmanager
def _weights_only_loads() -> Any:
    """Second line of defence: every torch.load inside forced to ``weights_only=True``,
    including torch's own retry with ``weights_only=False`` on old archives."""
    previous = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = previous


def _check_archive(path: Path, trusted: bool, verify: bool = True) -> None:
    """Refuse files that are not torch.export archives, corrupted ones (``verify``) and,
    unless ``trusted``, any archive holding a member that loading could unpickle or run."""
    not_archive = f"{path} is not a torch.export archive (.pt2 written by ds.export)"
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if not any(
                n.endswith(("/archive_format", "serialized_exported_program.json")) for n in names
            ):
                raise ValueError(f"{not_archive}: it is a zip file without an exported program")
            if verify and (bad := archive.testzip()) is not None:
                raise ValueError(
                    f"{path} is corrupted: member {bad} does not match its CRC-32 checksum "
                    "(the file was damaged after it was written). Export the model again or "
                    "restore the file; verify=False skips this check"
                )
            if trusted:
                return
            unsafe = _unsafe_members(path, archive, names)
    except zipfile.BadZipFile:
        raise ValueError(f"{not_archive}: it is not a zip archive, or it is truncated") from None
    if unsafe:
        raise ValueError(
            f"{path} holds pickled objects or native code ({', '.join(unsafe[:3])}"
            f"{', ...' if len(unsafe) > 3 else ''}) that loading would unpickle or run, "
            "which can execute arbitrary code. Re-export the model with ds.export, or pass "
            "trusted=True only if you trust where the file comes from."
        )


def _unsafe_members(path: Path, archive: zipfile.ZipFile, names: list[str]) -> list[str]:
    roots = {n.split("/", 1)[0] for n in names}
    relative = [n.split("/", 1)[1] if "/" in n else n for n in names]
    if len(roots) != 1 or any("/" not in n for n in names):
        if any(n in _LEGACY_MEMBERS for n in names):
            raise ValueError(
                f"{path} is a legacy torch.export archive (torch < 2.8 layout, with "
                "serialized_state_dict / serialized_constants blobs that torch unpickles "
                "with weights_only=False), which can execute arbitrary code. Re-export the "
                "model with ds.export, or pass trusted=True only if you trust its source."
            )
        raise ValueError(
            f"{path} is not a torch.export archive written by ds.export: its members do "
            "not share one root folder. Pass trusted=True only if you trust its source."
        )
    unsafe = [n for n, rel in zip(names, relative) if not _SAFE_MEMBERS.fullmatch(rel)]
    for name, rel in zip(names, relative):
        if rel.endswith("_config.json"):
            unsafe += _pickled_payloads(archive, name, rel.split("/")[1])
        elif rel.endswith(".pt") and _SAFE_MEMBERS.fullmatch(rel):
            # Sample inputs: torch retries with weights_only=False when the safe load fails.
            # Empty when exported with keep_example_inputs=False: nothing to load.
            payload = archive.read(name)
            if not payload:
                continue
            try:
                torch.load(io.BytesIO(payload), weights_only=True)
            except Exception:  # noqa: BLE001 (any failure means "not plainly safe")
                unsafe.append(name)
    return unsafe


def _pickled_payloads(archive: zipfile.ZipFile, name: str, kind: str) -> list[str]:
    """Entries of a weights/constants index that torch would unpickle."""
    try:
        config = json.loads(archive.read(name)).get("config", {})
        entries = list(config.items())
    except (ValueError, AttributeError):
        return [name]
    pattern = _PAYLOAD_NAME[kind]
    return [
        f"{name}:{fqn}"
        for fqn, meta in entries
        if not isinstance(meta, dict)
        or meta.get("use_pickle") is not False
        or not pattern.fullmatch(str(meta.get("path_name", "")))
    ]


def _require(*modules: str, purpose: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"{purpose} needs {', '.join(missing)}: pip install {' '.join(modules)}")


class _OnnxRuntimeModule(nn.Module):
    """An ONNX file run by onnxruntime on CPU, called with and returning torch tensors."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        _require("onnxruntime", purpose="loading an ONNX model")
        import onnxruntime

        try:
            self.session = onnxruntime.InferenceSession(
                str(path), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ValueError(f"{path} is not a valid ONNX model: {exc}") from exc
        self.input_names = [i.name for i in self.session.get_inputs()]

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if len(inputs) != len(self.input_names):
            raise TypeError(
                f"the ONNX model takes {len(self.input_names)} inputs "
                f"({', '.join(self.input_names)}), got {len(inputs)}"
            )
        feeds = {n: t.detach().cpu().numpy() for n, t in zip(self.input_names, inputs)}
        outputs = [torch.from_numpy(o) for o in self.session.run(None, feeds)]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


class _CallableModule(types.ModuleType):
    """Importing ``deepseek.compile`` binds this module to the name ``ds.compile``, hiding the
    function of the same name; making the module callable keeps ``ds.compile(model)`` working."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return compile(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
