"""``ds.cuda``: the CUDA-style aliases users know from torch (``ds.cuda.is_available()``,
``ds.cuda.amp.autocast``). Device management itself lives in ``ds.backends``."""

from torch.cuda import (
    current_device,
    device_count,
    empty_cache,
    is_available,
    is_bf16_supported,
    manual_seed,
    manual_seed_all,
    max_memory_allocated,
    memory_allocated,
    reset_peak_memory_stats,
    set_device,
    synchronize,
)

from deepseek.cuda import amp
