"""Trainer callbacks. Each is also registered by name (``"model_checkpoint"``, ...) so
configs can list them: ``callbacks: [{name: early_stopping, patience: 3}]``."""

from deepseek.callbacks.base import Callback
from deepseek.callbacks.csv_logger import CSVLogger
from deepseek.callbacks.early_stopping import EarlyStopping
from deepseek.callbacks.lr_monitor import LearningRateMonitor
from deepseek.callbacks.model_checkpoint import ModelCheckpoint
from deepseek.callbacks.profiler import Profiler
from deepseek.callbacks.progress import ProgressBar

__all__ = [
    "CSVLogger",
    "Callback",
    "EarlyStopping",
    "LearningRateMonitor",
    "ModelCheckpoint",
    "Profiler",
    "ProgressBar",
]
