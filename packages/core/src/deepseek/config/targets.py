"""``module:callable`` targets named in a job config, and where their modules come from.

A job config is code, like a Python script: a target such as ``mymodels:Net`` imports
``mymodels`` and calls ``Net``. The module is looked up, in order:

1. in the config file's own folder, loaded **by file location** (``<folder>/mymodels.py``
   or ``<folder>/mymodels/__init__.py``): the folder is never put first on ``sys.path``,
   so a stray ``matplotlib.py`` next to the YAML cannot shadow the installed package;
2. in the current working directory, the same way;
3. among the installed packages (``importlib.import_module``).

The config's folder is *appended* to ``sys.path`` so the user's module can import its
own siblings; installed packages keep precedence.

With ``safe=True`` (``deepseek train --safe``) only targets in ``torch``, ``deepseek``
or the config's own folder are allowed (registry names such as ``AdamW`` or
``model_checkpoint`` need no target): ``os:system`` is refused before anything runs.

>>> import_target("torch.nn:Linear", "model.name", safe=True).__name__
'Linear'
>>> import_target("os:system", "model.name", safe=True)
Traceback (most recent call last):
...
deepseek.config.errors.ConfigError: model.name: 'os:system' is refused in safe mode: ...
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from deepseek.config.errors import ConfigError

#: Top-level packages whose callables a config may name in safe mode.
SAFE_PACKAGES = ("torch", "deepseek")

_TARGET = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def is_target(name: Any) -> bool:
    """Whether ``name`` is written as ``module:callable`` (not a registry name)."""
    return isinstance(name, str) and ":" in name


def split_target(target: str, path: str) -> tuple[str, str]:
    if not _TARGET.fullmatch(target.strip()):
        raise ConfigError(
            f"{path}: {target!r} is not 'module:callable' (e.g. 'mymodels:Net', with the "
            "module next to the config or installed)"
        )
    module_name, _, attr = target.strip().partition(":")
    return module_name, attr


def search_folders(config_dir: str | os.PathLike | None) -> list[Path]:
    """Where a config's own modules are looked for: its folder, then the working dir."""
    folders = []
    if config_dir is not None:
        folders.append(Path(config_dir).resolve())
    cwd = Path.cwd().resolve()
    if cwd not in folders:
        folders.append(cwd)
    return folders


def check_safe(target: str, path: str, config_dir: str | os.PathLike | None) -> None:
    """Raise ConfigError unless safe mode allows ``target``."""
    module_name, _ = split_target(target, path)
    top = module_name.split(".")[0]
    if top in SAFE_PACKAGES:
        return
    if config_dir is not None and _local_location(top, Path(config_dir).resolve()) is not None:
        return
    folder = f", {Path(config_dir).resolve()}" if config_dir is not None else ""
    raise ConfigError(
        f"{path}: {target!r} is refused in safe mode: targets may only come from "
        f"{', '.join(SAFE_PACKAGES)}{folder} (the config's own folder) or be registry "
        "names; run without --safe/safe=True only if you trust this config like a script"
    )


def import_target(
    target: str,
    path: str,
    *,
    config_dir: str | os.PathLike | None = None,
    safe: bool = False,
) -> Any:
    """``"module:attr.sub"`` -> the object. Errors name the key ``path`` and, when the
    module is missing, every place that was searched."""
    module_name, attr = split_target(target, path)
    if safe:
        check_safe(target, path, config_dir)
    module = import_module(module_name, path, config_dir=config_dir, safe=safe)
    from deepseek.plugins.specs import load_target  # the one attribute walk (entry points too)

    try:  # by the name it was loaded under (a config-folder module may have a private one)
        return load_target(f"{module.__name__}:{attr}")
    except AttributeError:
        public = sorted(n for n in dir(module) if not n.startswith("_"))[:20]
        raise ConfigError(
            f"{path}: module {module_name!r} ({getattr(module, '__file__', '?')}) has no "
            f"attribute {attr!r}; it has: {', '.join(public) or '(nothing public)'}"
        ) from None


def import_module(
    module_name: str,
    path: str,
    *,
    config_dir: str | os.PathLike | None = None,
    safe: bool = False,
) -> ModuleType:
    top, _, rest = module_name.partition(".")
    folders = search_folders(config_dir)
    if safe:  # the working directory is not the config's folder
        folders = folders[:1] if config_dir is not None else []
    if config_dir is not None:
        _append_to_sys_path(Path(config_dir).resolve())
    for folder in folders:
        location = _local_location(top, folder)
        if location is None:
            continue
        package = _load_by_location(top, location, path)
        if not rest:
            return package
        return _import(f"{package.__name__}.{rest}", module_name, path)
    try:
        found = importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        searched = ", ".join(str(f) for f in folders)
        raise ConfigError(
            f"{path}: cannot find module {module_name!r}: looked for {top}.py or "
            f"{top}/__init__.py in {searched or '(no folders)'} and among the installed "
            "packages; put the file next to the config or install it"
        )
    return _import(module_name, module_name, path)


def _import(name: str, shown: str, path: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"{path}: cannot import {shown!r}: {exc}") from exc
    except Exception as exc:  # the user's module failed while it ran
        raise ConfigError(
            f"{path}: importing {shown!r} failed: {type(exc).__name__}: {exc}"
        ) from exc


def _local_location(top: str, folder: Path) -> Path | None:
    for candidate in (folder / f"{top}.py", folder / top / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _load_by_location(top: str, location: Path, path: str) -> ModuleType:
    location = location.resolve()
    existing = sys.modules.get(top)
    if existing is not None and _file_of(existing) == location:
        return existing
    name = top
    if existing is not None or _installed(top):
        # Never replace an installed or already imported module of the same name.
        digest = hashlib.sha1(str(location).encode()).hexdigest()[:8]
        name = f"_deepseek_config_{digest}_{top}"
        if name in sys.modules:
            return sys.modules[name]
    is_package = location.name == "__init__.py"
    spec = importlib.util.spec_from_file_location(
        name, location, submodule_search_locations=[str(location.parent)] if is_package else None
    )
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: cannot load {location} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(name, None)
        if isinstance(exc, Exception):
            raise ConfigError(
                f"{path}: importing {location} failed: {type(exc).__name__}: {exc}"
            ) from exc
        raise
    return module


def _file_of(module: ModuleType) -> Path | None:
    file = getattr(module, "__file__", None)
    return Path(file).resolve() if file else None


def _installed(top: str) -> bool:
    """Whether ``top`` is importable from sys.path (excluding folders we appended)."""
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return False
    if spec is None:
        return False
    origin = Path(str(spec.origin or ""))
    return not any(folder in origin.parents for folder in _APPENDED)


_APPENDED: set[Path] = set()


def _append_to_sys_path(folder: Path) -> None:
    if str(folder) not in sys.path:
        sys.path.append(str(folder))
    _APPENDED.add(folder)
