"""``ds.cuda.amp.autocast`` / ``GradScaler``: CUDA-style spellings of ``ds.amp``."""

from __future__ import annotations

from typing import Any

import torch


class autocast(torch.amp.autocast):
    """``torch.amp.autocast`` with ``device_type="cuda"`` fixed, like the old
    ``torch.cuda.amp.autocast`` (without its deprecation warning)."""

    def __init__(
        self, enabled: bool = True, dtype: torch.dtype = torch.float16, cache_enabled: bool = True
    ) -> None:
        super().__init__("cuda", dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)


def GradScaler(*args: Any, **kwargs: Any) -> torch.amp.GradScaler:
    """``torch.amp.GradScaler("cuda", ...)``."""
    return torch.amp.GradScaler("cuda", *args, **kwargs)
