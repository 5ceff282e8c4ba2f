"""``deepseek vision ...`` subcommands (added through the plugin's ``deepseek_cli`` hook)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser"]


def add_parser(parser: Any) -> None:
    """Declare ``deepseek vision convert ...`` on the CLI's command parser (the plugin's
    ``deepseek_cli`` hook hands it over)."""
    vision = parser.add_command(
        "vision",
        help="medical-imaging tools (deepseek-vision): convert NIfTI / DICOM to HDF5",
        description=(
            "deepseek vision convert INPUT [INPUT ...] -o OUTPUT_DIR [--labels LABEL ...]: "
            "write one .h5 file per input volume into OUTPUT_DIR: image (1, C, D, H, W) "
            "float32, spacing (1, 3), and label (1, 1, D, H, W) uint8 with --labels. An input "
            "is a .nii/.nii.gz file, a DICOM file, or a directory holding one DICOM series."
        ),
        func=_run,
    )
    vision.add_argument("command", choices=["convert"], help="what to do")
    vision.add_argument("inputs", nargs="+", help="NIfTI files, DICOM files or series directories")
    vision.add_argument("-o", "--output-dir", required=True, help="folder for the .h5 files")
    vision.add_argument("--labels", nargs="+", help="label volumes, one per input, same order")
    vision.add_argument("--overwrite", action="store_true", help="replace existing .h5 files")


def _run(args: argparse.Namespace) -> int:
    return _convert(args)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".dcm"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _convert(args: argparse.Namespace) -> int:
    from deepseek.vision.data.convert import convert_to_h5

    labels = args.labels or [None] * len(args.inputs)
    if len(labels) != len(args.inputs):
        print(
            f"deepseek vision convert: {len(args.inputs)} inputs but {len(labels)} labels; "
            "give one label per input",
            file=sys.stderr,
        )
        return 2
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for source, label in zip(args.inputs, labels):
        target = out_dir / f"{_stem(Path(source))}.h5"
        try:
            written = convert_to_h5(source, target, label, overwrite=args.overwrite)
        except (OSError, ValueError, ImportError) as e:
            print(f"deepseek vision convert: {e}", file=sys.stderr)
            return 1
        print(f"{source} -> {written}")
    return 0
