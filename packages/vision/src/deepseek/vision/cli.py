"""``deepseek vision ...`` subcommands (added through the plugin's ``deepseek_cli`` hook)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    vision = subparsers.add_parser("vision", help="medical-imaging tools (deepseek-vision)")
    commands = vision.add_subparsers(dest="vision_command", metavar="COMMAND")
    convert = commands.add_parser(
        "convert",
        help="convert NIfTI files / DICOM series to the HDF5 layout H5Dataset reads",
        description=(
            "Write one .h5 file per input volume into OUTPUT_DIR: image (1, C, D, H, W) "
            "float32, spacing (1, 3), and label (1, 1, D, H, W) uint8 with --labels. An input "
            "is a .nii/.nii.gz file, a DICOM file, or a directory holding one DICOM series."
        ),
    )
    convert.add_argument("inputs", nargs="+", help="NIfTI files, DICOM files or series directories")
    convert.add_argument("-o", "--output-dir", required=True, help="folder for the .h5 files")
    convert.add_argument("--labels", nargs="+", help="label volumes, one per input, same order")
    convert.add_argument("--overwrite", action="store_true", help="replace existing .h5 files")
    convert.set_defaults(func=_convert)
    vision.set_defaults(func=lambda args: vision.print_help() or 2)


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
        raise SystemExit(
            f"deepseek vision convert: {len(args.inputs)} inputs but {len(labels)} labels; "
            "give one label per input"
        )
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for source, label in zip(args.inputs, labels):
        target = out_dir / f"{_stem(Path(source))}.h5"
        try:
            written = convert_to_h5(source, target, label, overwrite=args.overwrite)
        except (OSError, ValueError, ImportError) as e:
            raise SystemExit(f"deepseek vision convert: {e}") from None
        print(f"{source} -> {written}")
    return 0
