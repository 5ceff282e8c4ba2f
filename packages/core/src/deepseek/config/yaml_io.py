"""Reading YAML safely: ``yaml.safe_load`` semantics, YAML 1.2 exponent floats for plain
scalars only, and a bound on alias expansion checked before anything copies the data.

>>> from deepseek.config.yaml_io import loads
>>> loads('lr: 1e-3\\ntag: "1e5"')
{'lr': 0.001, 'tag': '1e5'}
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from deepseek.config.errors import ConfigError, ConfigFileNotFoundError

#: Most nodes a config may expand to once aliases are followed. A real job config has a
#: few hundred; a 430-byte "billion laughs" expands to ~10^9.
MAX_EXPANDED_NODES = 100_000

# YAML 1.1 (PyYAML) reads 1e-3 as a string because it has no dot; YAML 1.2 and every user
# read it as a float. An implicit resolver applies to plain (unquoted) scalars only, so
# ``tag: "1e5"`` stays the string "1e5".
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


class ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` plus YAML 1.2 exponent floats and bounded merge keys."""

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        super().flatten_mapping(node)
        # Repeated merge keys (``<<: [*a, *a]``) double a node list per level before any
        # object exists; stop at the same bound as alias expansion.
        if len(node.value) > MAX_EXPANDED_NODES:
            raise ConfigError(_too_large())


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789.")
)


def _too_large() -> str:
    return (
        f"the YAML expands to more than {MAX_EXPANDED_NODES:,} values once its aliases "
        "(*name) are followed (an alias bomb?); write the values out or use fewer aliases"
    )


def loads(text: str, *, where: str = "<string>") -> Any:
    """Parse YAML text; errors are ConfigErrors that name ``where``."""
    try:
        loader = ConfigLoader(text)  # a SafeLoader: plain data only, never Python objects
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {exc}") from None
    check_size(data, where)
    return data


def read_text(path: str | os.PathLike) -> str:
    """The config file's text, with one clear error for every way it can fail to be one."""
    path = Path(path)
    if not path.exists():
        raise ConfigFileNotFoundError(f"config file not found: {path}")
    if path.is_dir():
        raise ConfigError(f"{path} is a directory, not a config file; pass the YAML file in it")
    if not path.is_file():
        raise ConfigError(f"{path} is not a regular file (a device or pipe?); pass a YAML file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path} is not UTF-8 text (byte {exc.start}: {raw[exc.start : exc.start + 1]!r}); "
            "save the config as UTF-8"
        ) from None


def check_size(data: Any, where: str = "<config>", limit: int = MAX_EXPANDED_NODES) -> int:
    """Count the values ``data`` expands to (aliases counted every time they are used),
    without expanding anything; raise ConfigError past ``limit`` or on a cycle."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(value: Any) -> int:
        if not isinstance(value, (dict, list)):
            return 1
        key = id(value)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise ConfigError(f"{where}: the YAML refers to itself through an alias (a cycle)")
        active.add(key)
        children = value.values() if isinstance(value, dict) else value
        total = 1 + (len(value) if isinstance(value, dict) else 0)
        for child in children:
            total += size(child)
            if total > limit:
                raise ConfigError(f"{where}: {_too_large()}")
        active.discard(key)
        sizes[key] = total
        return total

    return size(data)
