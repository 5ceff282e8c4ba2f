"""Fail when a wheel other than deepseek-core's ships deepseek/__init__.py (it would
shadow the shared namespace) or when a first-party wheel is missing."""

from __future__ import annotations

import runpy
import sys
import zipfile
from pathlib import Path

# The one table of first-party distributions, read from core's source (no install needed).
_TABLE = runpy.run_path(
    str(Path(__file__).resolve().parents[1] / "packages/core/src/deepseek/_first_party.py")
)
EXPECTED = {
    name.removeprefix("deepseek-")
    for name in (*(d.distribution for d in _TABLE["FIRST_PARTY"]), _TABLE["META_DISTRIBUTION"])
}


def main(folder: str) -> int:
    wheels = sorted(Path(folder).glob("deepseek_*.whl"))
    found = {w.name.split("-")[0].removeprefix("deepseek_") for w in wheels}
    problems = [f"missing wheel: deepseek-{name}" for name in sorted(EXPECTED - found)]
    for wheel in wheels:
        names = zipfile.ZipFile(wheel).namelist()
        ships_init = "deepseek/__init__.py" in names
        if ships_init and not wheel.name.startswith("deepseek_core-"):
            problems.append(f"{wheel.name} ships deepseek/__init__.py; only deepseek-core may")
        if not ships_init and wheel.name.startswith("deepseek_core-"):
            problems.append(f"{wheel.name} lacks deepseek/__init__.py")
    for line in problems:
        print("check_wheels:", line)
    print(f"check_wheels: {len(wheels)} wheels checked, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
