"""``ds.autograd``: torch's autograd plus activation-checkpointing helpers."""

from torch.autograd import *
from torch.autograd import Function, backward, grad

from deepseek.nn.activation_checkpointing import checkpoint, checkpoint_sequential
