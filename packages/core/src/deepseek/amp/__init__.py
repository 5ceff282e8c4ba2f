"""``ds.amp``: automatic mixed precision (torch.amp underneath).

``ds.amp.autocast(device_type, dtype=None, enabled=True)`` is ``torch.amp.autocast``;
``GradScaler`` is ``torch.amp.GradScaler``.
"""

from torch.amp import GradScaler, autocast, custom_bwd, custom_fwd

__all__ = ["GradScaler", "autocast", "custom_bwd", "custom_fwd"]
