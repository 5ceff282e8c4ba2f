"""The one error type of job configs."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value is missing, unknown or of the wrong type. The message starts with
    the key path (``trainer.max_epochs: ...``) or the file, and says how to fix it."""


class ConfigFileNotFoundError(ConfigError, FileNotFoundError):
    """The config file does not exist (also a FileNotFoundError, as before)."""
