"""Capture and restore every random number generator a training run draws from.

The state holds only tensors and plain Python data, so it survives
``torch.save`` + ``torch.load(weights_only=True)`` (numpy arrays would not).
"""

from __future__ import annotations

import random
import warnings
from typing import Any

import numpy as np
import torch


def get_rng_state() -> dict[str, Any]:
    """The states of Python's ``random``, numpy's global RNG, torch's CPU RNG and,
    when CUDA is available, every CUDA device's RNG.

    Example:
        >>> state = get_rng_state()
        >>> a = torch.rand(2)
        >>> set_rng_state(state)
        >>> torch.equal(a, torch.rand(2))
        True
    """
    version, internal, gauss_next = random.getstate()
    algorithm, key, pos, has_gauss, cached_gaussian = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
        "numpy": {
            "algorithm": str(algorithm),
            "key": torch.from_numpy(key.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators from a ``get_rng_state()`` result (parts it lacks are left
    alone). CUDA states are applied to the devices present; a warning says when the
    device count differs or CUDA is unavailable."""
    if not isinstance(state, dict) or not {"python", "numpy", "torch"} & state.keys():
        raise ValueError("set_rng_state expects the dict returned by get_rng_state()")
    try:
        if "python" in state:
            py = state["python"]
            random.setstate(
                (int(py["version"]), tuple(int(x) for x in py["state"]), py["gauss_next"])
            )
        if "numpy" in state:
            npy = state["numpy"]
            key = np.asarray(npy["key"].cpu().numpy(), dtype=np.uint32)
            np.random.set_state(
                (
                    npy["algorithm"],
                    key,
                    int(npy["pos"]),
                    int(npy["has_gauss"]),
                    float(npy["cached_gaussian"]),
                )
            )
        if "torch" in state:
            torch.set_rng_state(state["torch"].cpu())
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(
            f"set_rng_state got a malformed RNG state ({exc!r}); "
            "pass the dict returned by get_rng_state()"
        ) from None
    if "cuda" in state:
        _set_cuda_states(list(state["cuda"]))


def _set_cuda_states(states: list[torch.Tensor]) -> None:
    if not torch.cuda.is_available():
        warnings.warn(
            "the RNG state holds CUDA generator states but CUDA is not available; they are ignored",
            stacklevel=3,
        )
        return
    count = torch.cuda.device_count()
    if len(states) != count:
        warnings.warn(
            f"the RNG state holds {len(states)} CUDA generator states but "
            f"{count} devices are visible; restoring the first "
            f"{min(count, len(states))}",
            stacklevel=3,
        )
    for device, device_state in enumerate(states[:count]):
        torch.cuda.set_rng_state(device_state.cpu(), device)
