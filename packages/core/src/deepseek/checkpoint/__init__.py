"""Checkpoints: atomic directories with safetensors weights and a trainer state that
loads with ``torch.load(weights_only=True)``, plus RNG capture for exact resume.

    >>> import tempfile, torch
    >>> from deepseek.checkpoint import load_checkpoint, save_checkpoint
    >>> model = torch.nn.Linear(2, 2)
    >>> path = save_checkpoint(tempfile.mkdtemp() + "/last", model.state_dict(),
    ...                        {"epoch": 1}, {"global_step": 100})
    >>> load_checkpoint(path).trainer_state
    {'epoch': 1}
"""

from deepseek.checkpoint.format import CheckpointError
from deepseek.checkpoint.io import Checkpoint, latest_checkpoint, load_checkpoint, save_checkpoint
from deepseek.checkpoint.model import CheckpointMixin, build_model, capture_hparams, load_model
from deepseek.checkpoint.rng import get_rng_state, set_rng_state
from deepseek.checkpoint.runs import describe_checkpoint, resolve_checkpoint_path
from deepseek.checkpoint.weights import load_weights

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "CheckpointMixin",
    "build_model",
    "capture_hparams",
    "describe_checkpoint",
    "get_rng_state",
    "latest_checkpoint",
    "load_checkpoint",
    "load_model",
    "load_weights",
    "resolve_checkpoint_path",
    "save_checkpoint",
    "set_rng_state",
]
