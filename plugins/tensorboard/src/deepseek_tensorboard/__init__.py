"""deepseek-tensorboard: a TensorBoard logger callback for DeepSeek, registered as
``tensorboard`` (``callbacks: [{name: tensorboard, log_dir: runs/tb}]``)."""

from deepseek_tensorboard.callback import TensorBoardLogger

__all__ = ["TensorBoardLogger"]
__version__ = "0.1.0"
