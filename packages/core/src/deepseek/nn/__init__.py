"""``ds.nn``: torch.nn plus DeepSeek's additions.

Everything in ``torch.nn`` is here under the same name (``ds.nn.Linear is torch.nn.Linear``).
Added: activation checkpointing (``checkpoint_wrapper``, ``apply_activation_checkpointing``)
and ``ds.nn.parallel``, which resolves strategy classes registered by plugins.
"""

from torch.nn import *
from torch.nn import functional, init, utils

import deepseek.nn.parallel as parallel  # ours, replacing torch.nn.parallel from the * import
from deepseek.nn.activation_checkpointing import (
    ActivationCheckpointPolicy,
    apply_activation_checkpointing,
    checkpoint_wrapper,
)
