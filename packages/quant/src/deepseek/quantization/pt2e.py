"""Quantization-aware training and static PTQ on torchao's PT2E flow.

Why PT2E (``torch.export`` + ``torchao.quantization.pt2e``): it is where PyTorch's
quantization lives from torch 2.6 on (``torch.ao.quantization``'s eager and FX flows are
deprecated), it handles what eager fake-quant gets wrong by construction (residual adds
and concatenations share one scale, batch norm is folded into the convolution before
conversion), and the converted graph lowers to real int8 CPU kernels through
``torch.compile`` (inductor with freezing). The choice stays behind this package's API.

``quantize_model`` returns a :class:`QuantizedModel`: a trainable module that exports and
prepares the float model the first time it sees an input (so the quoted snippet needs no
example input), sharing the float model's parameters, so an optimizer built before the
first step trains the right tensors.
"""

from __future__ import annotations

import copy
import fnmatch
import logging
import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from deepseek.quantization.config import QuantConfig


def _torchao():
    """Import torchao's PT2E pieces quietly (it logs about CUDA kernels it cannot load)."""
    logger = logging.getLogger("torchao")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        import torchao.quantization.pt2e as pt2e
        import torchao.quantization.pt2e.quantize_pt2e as flow
        from torchao.quantization.pt2e.quantizer import QuantizationSpec
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86
    except ImportError as exc:  # pragma: no cover - declared dependency
        raise ImportError(
            "quantization-aware training and static PTQ need torchao: pip install torchao"
        ) from exc
    finally:
        logger.setLevel(level)
    return pt2e, flow, QuantizationSpec, x86


def _make_mode_switchable(graph: torch.fx.GraphModule) -> None:
    """Let ``graph.train()`` / ``graph.eval()`` switch an exported graph's dropout and
    batch-norm ops, which export otherwise freezes in one mode (torchao's hook for it)."""
    allow = _torchao()[0].allow_exported_model_train_eval
    allow(graph)


def _quantizer(config: QuantConfig, model: nn.Module, *, is_qat: bool):
    pt2e, _, QuantizationSpec, x86 = _torchao()
    extra: dict[str, Any] = {"eps": 2**-12}
    if is_qat:
        act_ctr = pt2e.FusedMovingAvgObsFakeQuantize.with_args(
            observer=pt2e.MovingAverageMinMaxObserver, **extra
        )
        weight_observer = (
            pt2e.MovingAveragePerChannelMinMaxObserver
            if config.per_channel
            else pt2e.MovingAverageMinMaxObserver
        )
        weight_ctr = pt2e.FusedMovingAvgObsFakeQuantize.with_args(observer=weight_observer, **extra)
    else:
        act_observer = {
            "histogram": pt2e.HistogramObserver,
            "minmax": pt2e.MinMaxObserver,
            "moving_average": pt2e.MovingAverageMinMaxObserver,
        }[config.observer]
        act_ctr = act_observer.with_args(**extra)
        weight_ctr = (
            pt2e.PerChannelMinMaxObserver if config.per_channel else pt2e.MinMaxObserver
        ).with_args(**extra)

    a_bits, w_bits = config.activation_bits, config.weight_bits
    if config.activation_scheme == "asymmetric":
        act = QuantizationSpec(
            dtype=torch.uint8,
            quant_min=0,
            quant_max=2**a_bits - 1,
            qscheme=torch.per_tensor_affine,
            observer_or_fake_quant_ctr=act_ctr,
        )
    else:
        act = QuantizationSpec(
            dtype=torch.int8,
            quant_min=-(2 ** (a_bits - 1)) + 1,
            quant_max=2 ** (a_bits - 1) - 1,
            qscheme=torch.per_tensor_symmetric,
            observer_or_fake_quant_ctr=act_ctr,
        )
    symmetric = config.quant_scheme == "symmetric"
    if config.per_channel:
        w_scheme = torch.per_channel_symmetric if symmetric else torch.per_channel_affine
    else:
        w_scheme = torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine
    weight = QuantizationSpec(
        dtype=torch.int8,
        quant_min=-(2 ** (w_bits - 1)) + (1 if symmetric else 0),
        quant_max=2 ** (w_bits - 1) - 1,
        qscheme=w_scheme,
        ch_axis=0 if config.per_channel else None,
        observer_or_fake_quant_ctr=weight_ctr,
    )
    quantizer = x86.X86InductorQuantizer()
    quantizer.set_global(x86.QuantizationConfig(act, act, weight, None, is_qat))
    for name in skipped_modules(model, config.skip):
        quantizer.set_module_name_qconfig(name, None)
    return quantizer


def skipped_modules(model: nn.Module, patterns: Iterable[str]) -> list[str]:
    """Names of the submodules matched by ``patterns`` (names, globs or type names); a
    pattern that matches nothing is an error that lists close names."""
    names = [n for n, _ in model.named_modules() if n]
    types = {n: type(m).__name__ for n, m in model.named_modules() if n}
    matched: list[str] = []
    for pattern in patterns:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern) or types[n] == pattern]
        if not hits:
            import difflib

            close = difflib.get_close_matches(pattern, names + sorted(set(types.values())), n=3)
            hint = f" Close names: {', '.join(close)}." if close else ""
            raise ValueError(f"skip pattern {pattern!r} matches no submodule of the model.{hint}")
        matched += [n for n in hits if n not in matched]
    return matched


def _example_for(args: tuple[Any, ...]) -> tuple[tuple[Any, ...], Any]:
    """Example inputs and dynamic shapes with a free batch dimension (batch 2 at least, so
    export does not specialise the batch to 1)."""
    examples = []
    shapes = []
    batch = torch.export.Dim("batch")
    for arg in args:
        if isinstance(arg, torch.Tensor) and arg.dim() > 0:
            if arg.shape[0] < 2:
                arg = arg.expand(2, *arg.shape[1:]).clone()
            examples.append(arg.detach())
            shapes.append({0: batch})
        else:
            examples.append(arg)
            shapes.append(None)
    return tuple(examples), tuple(shapes)


class QuantizedModel(nn.Module):
    """A fake-quantized model: trains like the float model, with int8 rounding simulated.

    Built by :func:`quantize_model` (``mode="qat"``) or :func:`calibrate` (static PTQ).
    The float model stays available as ``float_model`` and shares its parameters with
    the prepared graph ``quantized`` (created from the first input's shapes).
    """

    def __init__(self, model: nn.Module, config: QuantConfig, *, is_qat: bool = True) -> None:
        super().__init__()
        self.float_model = model
        self.config = config
        self.is_qat = is_qat
        self.quantized: nn.Module | None = None
        # Shape of the example the graph was prepared from (restores it on load).
        self.register_buffer("example_shape", torch.zeros(0, dtype=torch.int64))
        self.register_buffer("steps_seen", torch.zeros((), dtype=torch.int64))
        self.register_buffer("observers_frozen", torch.zeros((), dtype=torch.bool))
        self._register_load_state_dict_pre_hook(self._prepare_before_load)
        self.register_load_state_dict_post_hook(lambda module, keys: module._sync_observers())

    @property
    def prepared(self) -> bool:
        return self.quantized is not None

    def prepare(self, *example_inputs: Any) -> QuantizedModel:
        """Export the float model with these inputs' shapes and insert fake quantization."""
        if self.quantized is not None:
            return self
        _, flow, _, _ = _torchao()
        examples, shapes = _example_for(example_inputs)
        training = self.float_model.training
        try:
            exported = torch.export.export(
                self.float_model.eval() if not self.is_qat else self.float_model,
                examples,
                dynamic_shapes=shapes,
            ).module()
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RuntimeError(
                f"{type(self.float_model).__name__} cannot be captured by torch.export for "
                f"quantization ({first}). Skip the offending modules with QuantConfig(skip=...) "
                "or make the forward free of data-dependent Python control flow."
            ) from exc
        finally:
            self.float_model.train(training)
        quantizer = _quantizer(self.config, self.float_model, is_qat=self.is_qat)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            try:
                graph = (flow.prepare_qat_pt2e if self.is_qat else flow.prepare_pt2e)(
                    exported, quantizer
                )
            except ValueError as exc:
                raise RuntimeError(
                    f"the quantizer could not annotate {type(self.float_model).__name__}: "
                    f"{exc}. A common cause is one module object called at two places (such "
                    "as a single nn.ReLU reused in a block): give each call its own module, "
                    "or skip that part with QuantConfig(skip=...)"
                ) from exc
        _make_mode_switchable(graph)
        graph.train(self.training) if self.is_qat else graph.eval()
        self.quantized = graph
        first = next(a for a in examples if isinstance(a, torch.Tensor))
        self.example_shape = torch.tensor(first.shape, dtype=torch.int64)
        self._sync_observers()
        return self

    def forward(self, *args: Any) -> Any:
        if self.quantized is None:
            self.prepare(*args)
        if self.training:
            self.steps_seen += 1
        return self.quantized(*args)

    def train(self, mode: bool = True) -> QuantizedModel:
        super().train(mode)
        self._sync_observers()
        return self

    def _sync_observers(self) -> None:
        # Observers learn ranges only while training: in eval mode (validation, inference)
        # a moving scale would make the same input give different outputs.
        if self.quantized is not None and self.is_qat:
            pt2e = _torchao()[0]
            learning = self.training and not bool(self.observers_frozen)
            self.quantized.apply(pt2e.enable_observer if learning else pt2e.disable_observer)

    def freeze_observers(self) -> None:
        """Stop updating scales and zero points for good (fake quantization stays on)."""
        self.observers_frozen.fill_(True)
        self._sync_observers()

    def _prepare_before_load(self, state: dict, prefix: str, *args: Any) -> None:
        shape = state.get(prefix + "example_shape")
        if self.quantized is None and shape is not None and shape.numel():
            self.prepare(torch.zeros(*shape.tolist()))

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"weight_bits={c.weight_bits}, activation_bits={c.activation_bits}, "
            f"scheme={c.quant_scheme}, prepared={self.prepared}"
        )


def quantize_model(
    model: nn.Module,
    config: QuantConfig | None = None,
    example_inputs: Any = None,
    *,
    inplace: bool = False,
) -> nn.Module:
    """Make a trainable fake-quant model (``mode="qat"``), or a dynamic int8 one.

    The user's model is not modified unless ``inplace=True`` (the returned model then
    trains the same parameter tensors). Pass ``example_inputs`` to prepare the graph now;
    otherwise it is prepared from the first batch.

    >>> import torch
    >>> import deepseek as ds
    >>> from deepseek.quantization import QuantConfig
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
    ...                             torch.nn.Linear(16, 4))
    >>> config = QuantConfig(weight_bits=8, activation_bits=8, quant_scheme='symmetric')
    >>> quant_model = ds.quantization.quantize_model(model, config)
    >>> quant_model(torch.randn(5, 8)).shape
    torch.Size([5, 4])
    """
    config = config or QuantConfig()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if config.mode == "dynamic":
        from deepseek.quantization.dynamic import quantize_dynamic_int8

        return quantize_dynamic_int8(model)
    if config.mode == "static":
        raise ValueError(
            "mode='static' quantizes after training: use "
            "ds.quantization.calibrate(model, data, config), then convert()"
        )
    skipped_modules(model, config.skip)  # fail early on a bad pattern
    target = model if inplace else copy.deepcopy(model)
    qmodel = QuantizedModel(target, config, is_qat=True)
    qmodel.train(model.training)
    if example_inputs is not None:
        inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
        qmodel.prepare(*inputs)
    return qmodel


def calibrate(
    model: nn.Module,
    data: Iterable[Any],
    config: QuantConfig | None = None,
    *,
    num_batches: int | None = None,
) -> QuantizedModel:
    """Static post-training quantization: observe activation ranges on ``data``.

    ``data`` yields input tensors or ``(inputs, target)`` pairs (a DataLoader works);
    ``num_batches`` limits how many are used. Returns a :class:`QuantizedModel` ready for
    :func:`convert`; ``model`` itself is unchanged.

    >>> import torch
    >>> from deepseek.quantization import QuantConfig, calibrate, convert
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU())
    >>> batches = [torch.randn(4, 8) for _ in range(3)]
    >>> calibrated = calibrate(model, batches, QuantConfig(mode="static"))
    >>> int(calibrated.steps_seen)
    3
    """
    config = config or QuantConfig(mode="static")
    if num_batches is not None and (isinstance(num_batches, bool) or num_batches < 1):
        raise ValueError(f"num_batches must be a positive number of batches, got {num_batches!r}")
    qmodel = QuantizedModel(copy.deepcopy(model).eval(), config, is_qat=False)
    seen = 0
    with torch.no_grad():
        for batch in data:
            inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
            qmodel.quantized(inputs) if qmodel.prepared else qmodel.prepare(inputs).quantized(
                inputs
            )
            seen += 1
            if num_batches is not None and seen >= num_batches:
                break
    if seen == 0:
        raise ValueError("calibration data is empty: pass at least one batch")
    qmodel.steps_seen.fill_(seen)
    qmodel.eval()
    return qmodel


class Int8Model(nn.Module):
    """A converted int8 model. ``graph`` holds int8 weights with quantize/dequantize ops;
    calling the model runs it through ``torch.compile`` (inductor with freezing), which
    fuses those ops into int8 CPU kernels. ``compiled=False`` runs the reference graph."""

    def __init__(self, graph: nn.Module, *, compiled: bool = True) -> None:
        super().__init__()
        self.graph = graph
        self.compiled = compiled
        self._compiled_fn = None

    def forward(self, *args: Any) -> Any:
        if not self.compiled:
            return self.graph(*args)
        if self._compiled_fn is None:
            import torch._inductor.config as inductor_config

            inductor_config.freezing = True  # int8 weights become constants for the kernels
            # Static shapes: the int8 conv lowering has a layout bug with a symbolic batch
            # (recompiles once per batch size instead).
            self._compiled_fn = torch.compile(self.graph, dynamic=False)
        with torch.no_grad():
            return self._compiled_fn(*args)


def _drop_unused_tensors(graph_module: torch.fx.GraphModule) -> None:
    """Remove the float weights the int8 graph no longer reads (the prepared graph shared
    them with the float model), so the int8 model's state and size are its own."""
    used = {node.target for node in graph_module.graph.nodes if node.op == "get_attr"}
    tensors = [*graph_module.named_parameters(), *graph_module.named_buffers()]
    for name, _ in tensors:
        if name in used:
            continue
        owner_name, _, attr = name.rpartition(".")
        owner = graph_module.get_submodule(owner_name) if owner_name else graph_module
        delattr(owner, attr)


def convert(quant_model: nn.Module, *, compiled: bool = True) -> Int8Model:
    """Turn a trained or calibrated :class:`QuantizedModel` into a real int8 model.

    >>> import torch
    >>> from deepseek.quantization import QuantConfig, calibrate, convert
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU())
    >>> int8 = convert(calibrate(model, [torch.randn(4, 8)]), compiled=False)
    >>> int8(torch.randn(3, 8)).shape
    torch.Size([3, 16])
    """
    if not isinstance(quant_model, QuantizedModel):
        raise TypeError(
            f"convert takes the model returned by quantize_model or calibrate, got "
            f"{type(quant_model).__name__}"
        )
    if not quant_model.prepared or int(quant_model.steps_seen) == 0:
        raise ValueError(
            "this model was never trained or calibrated, so its scales are unset: train the "
            "quantize_model(...) result for some steps, or use calibrate(model, data, config)"
        )
    if not quant_model.config.exportable:
        c = quant_model.config
        raise ValueError(
            f"the real int8 export needs 8-bit weights and activations; this model uses "
            f"weight_bits={c.weight_bits}, activation_bits={c.activation_bits} (fake quant only)"
        )
    _, flow, _, _ = _torchao()
    graph = copy.deepcopy(quant_model.quantized)
    graph.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        converted = flow.convert_pt2e(graph, fold_quantize=True)
    _make_mode_switchable(converted)  # export() and the Trainer switch modes
    _drop_unused_tensors(converted)
    return Int8Model(converted, compiled=compiled)


def save(model: Int8Model, path: Any, example_inputs: Any) -> Any:
    """Write a converted int8 model as a ``.pt2`` archive (tensors and graph, no pickled
    code), atomically; ``example_inputs`` fixes everything but the batch dimension.

    >>> import torch
    >>> from deepseek.quantization import calibrate, convert, load, save
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU())
    >>> int8 = convert(calibrate(model, [torch.randn(4, 8)]), compiled=False)
    >>> path = save(int8, "/tmp/int8_linear.pt2", torch.randn(4, 8))
    >>> load(path, compiled=False)(torch.randn(6, 8)).shape
    torch.Size([6, 16])
    """
    import deepseek as ds

    if not isinstance(model, Int8Model):
        raise TypeError(f"save takes the Int8Model returned by convert, got {type(model).__name__}")
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    # No example batch in the archive: for ResNet-18 at 224 px it would add 0.6 MB per image.
    return ds.export(model.graph, inputs, path, keep_example_inputs=False)


def load(path: Any, *, compiled: bool = True) -> Int8Model:
    """Load an int8 model written by :func:`save` (safe loading: no unpickling)."""
    import deepseek as ds

    # The archive's graph calls torchao's quantized_decomposed ops, which exist only once
    # torchao registered them: a fresh process that only loads would not find them.
    _torchao()
    return Int8Model(ds.load_exported(path), compiled=compiled)
