"""Real text that ships with Python, for the MoE language model: the standard library's
own source files. Nothing is downloaded."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from deepseek.moe.models.tokenizer import build_tokenizer


def stdlib_source(max_bytes: int = 1_000_000) -> str:
    """The standard library's top-level ``.py`` files in name order, joined, cut at
    ``max_bytes`` (the same text on every machine with the same Python version)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    parts, size = [], 0
    for path in sorted(root.glob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        parts.append(f"# file: {path.name}\n{text}\n")
        size += len(parts[-1])
        if size >= max_bytes:
            break
    if not parts:
        raise FileNotFoundError(f"no standard-library sources found under {root}")
    return "".join(parts)[:max_bytes]


def stdlib_text(
    split: str = "train",
    seq_len: int = 128,
    max_bytes: int = 1_000_000,
    val_fraction: float = 0.05,
    tokenizer: str = "byte",
    tokenizer_path: str | None = None,
    max_windows: int | None = None,
) -> TensorDataset:
    """Windows of ``seq_len + 1`` tokens of the standard library's source (the model
    predicts tokens 1..seq_len from 0..seq_len-1). The last ``val_fraction`` of the text
    is the validation split; ``max_windows`` caps the number of windows.

    >>> data = stdlib_text("val", seq_len=32, max_bytes=20_000)
    >>> data[0][0].shape
    torch.Size([33])
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    ids = torch.tensor(build_tokenizer(tokenizer, tokenizer_path).encode(stdlib_source(max_bytes)))
    cut = int(len(ids) * (1 - val_fraction))
    ids = ids[:cut] if split == "train" else ids[cut:]
    windows = (len(ids) - 1) // seq_len
    if windows < 1:
        raise ValueError(f"the {split} split has fewer than seq_len + 1 = {seq_len + 1} tokens")
    ids = ids[: windows * seq_len + 1]
    starts = torch.arange(windows) * seq_len
    data = torch.stack([ids[s : s + seq_len + 1] for s in starts.tolist()])
    if max_windows is not None:
        data = data[:max_windows]
    return TensorDataset(data)
