"""Loading the weights of a pruned model into a fresh, unpruned instance of its class.

A physically pruned model has smaller tensors than its class builds, so its weights do
not load into ``Net()``. :func:`shrink_to_state` removes channels from the fresh model
until every tensor has the saved shape (through the same dependency graph as
:func:`deepseek.pruning.prune`, so BatchNorms and the next layers follow); which
channels go does not matter, since the saved weights then replace them all.
:func:`load_into` reads a checkpoint (safetensors only), shrinks the model when needed and
loads it: the way a later stage or a resumed run starts from a pruned checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deepseek.pruning.physical import PRUNABLE_ROOTS, _as_tuple, _torch_pruning


def _out_channels_fn(module: nn.Module) -> Any:
    tp = _torch_pruning()
    if isinstance(module, nn.Linear):
        return tp.prune_linear_out_channels
    return tp.prune_conv_out_channels


def shrink_to_state(
    model: nn.Module, state: Mapping[str, torch.Tensor], example_inputs: Any
) -> list[str]:
    """Remove output channels of ``model``'s Conv/Linear layers (in place) until each has
    the size its ``<name>.weight`` has in ``state``; returns the names of the layers cut.

    >>> import torch
    >>> from deepseek.pruning import prune
    >>> from deepseek.pruning.resize import shrink_to_state
    >>> def net():
    ...     return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(),
    ...                                torch.nn.Linear(16, 2))
    >>> small = prune(net(), 0.5, torch.randn(1, 4))
    >>> fresh = net()
    >>> shrink_to_state(fresh, small.state_dict(), torch.randn(1, 4))
    ['0']
    >>> fresh.load_state_dict(small.state_dict())
    <All keys matched successfully>
    """
    inputs = _as_tuple(example_inputs)
    targets = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, PRUNABLE_ROOTS)
        and f"{name}.weight" in state
        and state[f"{name}.weight"].shape[0] < module.weight.shape[0]
    }
    if not targets:
        return []
    tp = _torch_pruning()
    was_training = model.training
    model.eval()
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=inputs)
    cut = []
    for name, module in targets.items():
        want, have = state[f"{name}.weight"].shape[0], module.weight.shape[0]
        if want >= have:  # already cut as part of an earlier layer's group
            continue
        group = graph.get_pruning_group(module, _out_channels_fn(module), list(range(want, have)))
        group.prune()
        cut.append(name)
    model.train(was_training)
    current = model.state_dict()
    wrong = [
        f"{k}: saved {tuple(v.shape)}, model {tuple(current[k].shape)}"
        for k, v in state.items()
        if k in current and tuple(current[k].shape) != tuple(v.shape)
    ]
    if wrong:
        raise ValueError(
            "the model cannot be shrunk to the saved shapes (was it pruned from another "
            f"architecture?): {'; '.join(wrong[:5])}"
        )
    return cut


def resolve_weights_path(path: str | os.PathLike) -> Path:
    """``path`` itself, or for ``<folder>/best`` / ``<folder>/last`` that do not exist on
    disk, the checkpoint of ``<folder>`` they name (best by the run's recorded monitor)."""
    from deepseek.checkpoint import resolve_checkpoint_path

    path = Path(path).expanduser()
    if not path.exists() and path.name in ("best", "last") and path.parent.is_dir():
        return Path(resolve_checkpoint_path(path.parent, path.name))
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: give a checkpoint directory (such as "
            "runs/<job>/checkpoints/best) or a .safetensors file"
        )
    return path


def read_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The weights of a checkpoint directory (its recorded checksums verified) or of a
    ``.safetensors`` file; nothing is unpickled."""
    from deepseek.checkpoint import load_checkpoint

    path = resolve_weights_path(path)
    if path.is_file():
        if path.suffix != ".safetensors":
            raise ValueError(
                f"{path}: weights are read from checkpoint directories and .safetensors "
                "files only (no pickled formats)"
            )
        from safetensors.torch import load_file

        return load_file(str(path))
    return dict(load_checkpoint(path).model_state)


def load_into(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    prefix: str | None = None,
    example_inputs: Any = None,
) -> nn.Module:
    """Load the weights at ``path`` into ``model`` (in place), shrinking it first when the
    checkpoint holds a pruned version of it.

    ``prefix`` selects the keys under it (``"student."`` for the student of a
    distillation run's checkpoint); by default it is ``"student."`` when every key of
    the model is found there and not at the top level. ``example_inputs`` are needed
    only to shrink.

    >>> import tempfile, torch
    >>> from deepseek.checkpoint import save_checkpoint
    >>> from deepseek.pruning.resize import load_into
    >>> saved = torch.nn.Linear(3, 2)
    >>> path = save_checkpoint(tempfile.mkdtemp() + "/c", saved.state_dict())
    >>> fresh = load_into(torch.nn.Linear(3, 2), path)
    >>> torch.equal(fresh.weight, saved.weight)
    True
    """
    state = read_state(path)
    keys = set(model.state_dict())
    if prefix is None and not keys <= set(state):
        student = {k[len("student.") :]: v for k, v in state.items() if k.startswith("student.")}
        if student and keys <= set(student):
            state = student
    elif prefix:
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if not state:
            raise ValueError(f"{path} has no weights under the prefix {prefix!r}")
    missing = sorted(keys - set(state))
    if missing:
        more = f", ... ({len(missing)} in all)" if len(missing) > 5 else ""
        raise ValueError(
            f"the weights in {path} do not fit {type(model).__name__}: missing "
            f"{', '.join(missing[:5])}{more}"
        )
    current = model.state_dict()
    larger = [
        f"{k}: saved {tuple(state[k].shape)}, model {tuple(v.shape)}"
        for k, v in current.items()
        if state[k].dim() != v.dim() or any(a > b for a, b in zip(state[k].shape, v.shape))
    ]
    if larger:
        raise ValueError(
            f"the weights in {path} do not fit {type(model).__name__} (built with other "
            f"options?): {'; '.join(larger[:5])}"
        )
    shrink = any(
        state[k].dim() > 0 and state[k].shape[0] < v.shape[0]
        for k, v in model.state_dict().items()
        if k in state
    )
    if shrink:
        if example_inputs is None:
            raise ValueError(
                f"{path} holds a pruned {type(model).__name__}: pass example_inputs (or "
                "example_shape in a config) so the model can be shrunk to its shapes"
            )
        shrink_to_state(model, state, example_inputs)
    model.load_state_dict({k: v for k, v in state.items() if k in keys})
    return model
