"""deepseek-lora: LoRA adapters for DeepSeek, registered as the algorithm ``lora``.

>>> from deepseek_lora import Lora, merge
>>> Lora(rank=4, alpha=8, target_modules=["*.query"]).rank
4
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Lora", "LoraError", "LoraLinear", "lora_state_dict", "match_modules", "merge"]


def __getattr__(name: str) -> Any:  # torch is imported on first use, not at discovery
    if name in __all__:
        from deepseek_lora import algorithm

        return getattr(algorithm, name)
    raise AttributeError(f"module 'deepseek_lora' has no attribute {name!r}")
