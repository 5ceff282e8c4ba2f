"""Dynamic int8 post-training quantization (algorithm ``ptq``).

Weights are stored as int8; activations are quantized on the fly per batch, and the
matrix products run in torch's int8 CPU kernels (fbgemm/x86 on Intel and AMD, qnnpack
on ARM). Nothing to calibrate, no retraining: a good first step for Linear-heavy
models (MLPs, transformers, RNNs) served on CPU.

torch 2.13 marks ``torch.ao.quantization`` (which provides these kernels) as deprecated
in favour of the separate ``torchao`` package; it still ships and works, so it is used
here with its deprecation warnings silenced, and a torch without it gets a clear error.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

# What torch's dynamic quantization can replace with an int8 module.
SUPPORTED_MODULES: dict[str, type[nn.Module]] = {
    "linear": nn.Linear,
    "lstm": nn.LSTM,
    "gru": nn.GRU,
    "lstmcell": nn.LSTMCell,
    "grucell": nn.GRUCell,
    "rnncell": nn.RNNCell,
}


def _module_types(modules: Iterable[type[nn.Module] | str]) -> set[type[nn.Module]]:
    if isinstance(modules, (str, type)):
        modules = [modules]
    types = set()
    for item in modules:
        cls = SUPPORTED_MODULES.get(item.lower()) if isinstance(item, str) else item
        if cls not in SUPPORTED_MODULES.values():
            raise ValueError(
                f"cannot dynamically quantize {item!r}; supported module types: "
                f"{', '.join(c.__name__ for c in SUPPORTED_MODULES.values())} "
                f"(or their names: {', '.join(SUPPORTED_MODULES)})"
            )
        types.add(cls)
    if not types:
        raise ValueError("modules is empty: name at least one module type, e.g. (nn.Linear,)")
    return types


def quantize_dynamic_int8(
    model: nn.Module, modules: Iterable[type[nn.Module] | str] = (nn.Linear,)
) -> nn.Module:
    """An int8 copy of ``model`` for CPU inference; ``model`` itself is left unchanged.

    Every submodule whose type is in ``modules`` (exact type, e.g. ``nn.Linear``) is
    replaced by its dynamically quantized counterpart holding int8 weights. The copy is
    in eval mode and meant for inference only (no backward).

    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(),
    ...                             torch.nn.Linear(32, 4))
    >>> qmodel = quantize_dynamic_int8(model)
    >>> qmodel[0].weight().dtype
    torch.qint8
    >>> qmodel(torch.randn(2, 16)).shape
    torch.Size([2, 4])
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    types = _module_types(modules)
    targets = [(n, m) for n, m in model.named_modules() if type(m) in types]
    if not targets:
        wanted = ", ".join(sorted(t.__name__ for t in types))
        raise ValueError(f"{type(model).__name__} has no {wanted} submodule to quantize")
    for name, module in targets:
        for param in module.parameters():
            if param.device.type != "cpu":
                raise ValueError(
                    f"{name or 'the model'} is on {param.device}: int8 dynamic quantization "
                    "runs on the CPU; call model.cpu() first"
                )
            if param.dtype != torch.float32:
                raise TypeError(
                    f"{name or 'the model'} has {param.dtype} weights; dynamic int8 "
                    "quantization starts from float32: call model.float() first"
                )
    if torch.backends.quantized.engine == "none":
        raise RuntimeError(
            "this torch build has no quantized CPU engine (fbgemm, x86, onednn or qnnpack)"
        )
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError as exc:
        raise RuntimeError(
            f"torch {torch.__version__} no longer provides torch.ao.quantization.quantize_dynamic"
            "; use torchao's quantize_ API for int8 inference"
        ) from exc
    with warnings.catch_warnings():
        # torch's own deprecation notices for this API (see the module docstring).
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor.*deprecated")
        return quantize_dynamic(model, types, dtype=torch.qint8, inplace=False)


class PostTrainingQuantization:
    """The ``ptq`` algorithm: ``apply(model)`` returns an int8 copy (dynamic quantization).

    >>> import torch
    >>> from deepseek.plugins import registry
    >>> ptq = registry("algorithm").create("ptq", modules=["linear"])
    >>> qmodel = ptq.apply(torch.nn.Sequential(torch.nn.Linear(8, 8)))
    >>> type(qmodel[0]).__name__
    'Linear'
    """

    def __init__(
        self, modules: Iterable[type[nn.Module] | str] = (nn.Linear,), mode: str = "dynamic"
    ) -> None:
        if mode == "static":
            raise ValueError(
                "static PTQ calibrates on data, which an algorithm applied to the built model "
                "does not see: add the int8_export callback instead ({name: int8_export, "
                "path: model_int8.pt2, calibration_batches: 16, skip_training: true}); it "
                "calibrates on data.train, converts to int8 and saves"
            )
        if mode != "dynamic":
            raise ValueError(f"mode must be 'dynamic' or 'static', got {mode!r}")
        self.modules = tuple(_module_types(modules))

    def apply(self, model: nn.Module) -> nn.Module:
        return quantize_dynamic_int8(model, self.modules)

    def __repr__(self) -> str:
        names = ", ".join(sorted(m.__name__ for m in self.modules))
        return f"PostTrainingQuantization(modules=({names}))"


def _dynamic_linears(model: nn.Module) -> dict[str, nn.Module]:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return {name: m for name, m in model.named_modules() if isinstance(m, DynamicLinear)}


def save_dynamic_int8(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Write a dynamically quantized model's weights to a safetensors file (int8 values,
    scales, zero points, biases, and the float layers' tensors): no pickling, so the file
    is safe to load. Rebuild with :func:`load_dynamic_int8` and the float architecture.

    >>> import torch
    >>> from deepseek.quantization import load_dynamic_int8, save_dynamic_int8
    >>> from deepseek.quantization import quantize_dynamic_int8
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
    ...                             torch.nn.Linear(16, 4))
    >>> path = save_dynamic_int8(quantize_dynamic_int8(model), "/tmp/dyn_int8.safetensors")
    >>> restored = load_dynamic_int8(path, torch.nn.Sequential(
    ...     torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)))
    >>> restored(torch.randn(2, 8)).shape
    torch.Size([2, 4])
    """
    from safetensors.torch import save_file

    linears = _dynamic_linears(model)
    if not linears:
        raise ValueError("this model has no dynamically quantized layer: quantize it first")
    tensors: dict[str, torch.Tensor] = {}
    for name, module in linears.items():
        weight, bias = module._weight_bias()
        if weight.qscheme() != torch.per_tensor_affine:
            raise ValueError(
                f"{name}: only per-tensor int8 weights can be saved, got {weight.qscheme()}"
            )
        tensors[f"{name}.weight.int8"] = weight.int_repr().contiguous()
        tensors[f"{name}.weight.scale"] = torch.tensor(weight.q_scale(), dtype=torch.float64)
        tensors[f"{name}.weight.zero_point"] = torch.tensor(weight.q_zero_point())
        if bias is not None:
            tensors[f"{name}.bias"] = bias.detach().contiguous()
    for key, value in model.state_dict().items():
        if isinstance(value, torch.Tensor) and not any(key.startswith(f"{n}.") for n in linears):
            tensors[key] = value.detach().contiguous()
    from deepseek.checkpoint.atomic import write_atomically

    metadata = {"format": "deepseek-dynamic-int8"}
    write_atomically(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    return Path(path)


def load_dynamic_int8(path: str | os.PathLike[str], model: nn.Module) -> nn.Module:
    """Rebuild a dynamic int8 model saved by :func:`save_dynamic_int8` on ``model``, a
    float instance of the same architecture (its weights are replaced)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        if (f.metadata() or {}).get("format") != "deepseek-dynamic-int8":
            raise ValueError(f"{path} was not written by save_dynamic_int8")
        tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 - safe_open is no dict
    quantized_names = {k[: -len(".weight.int8")] for k in tensors if k.endswith(".weight.int8")}
    float_state = {
        k: v for k, v in tensors.items() if not any(k.startswith(f"{n}.") for n in quantized_names)
    }
    missing = quantized_names - {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    if missing:
        raise ValueError(
            f"the model has no Linear layer named {sorted(missing)}: wrong architecture"
        )
    model.load_state_dict(float_state, strict=False)
    qmodel = quantize_dynamic_int8(model)
    linears = _dynamic_linears(qmodel)
    if set(linears) != quantized_names:
        raise ValueError(
            f"{path} holds int8 layers {sorted(quantized_names)} but the model quantizes "
            f"{sorted(linears)}"
        )
    for name, module in linears.items():
        qweight = torch._make_per_tensor_quantized_tensor(
            tensors[f"{name}.weight.int8"],
            float(tensors[f"{name}.weight.scale"]),
            int(tensors[f"{name}.weight.zero_point"]),
        )
        module.set_weight_bias(qweight, tensors.get(f"{name}.bias"))
    return qmodel
