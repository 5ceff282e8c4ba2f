"""What ``import deepseek`` adds to ``import torch`` (and what the first registry use costs).

Each measurement is a fresh interpreter; the best of ``--repeats`` runs counts.

    python benchmarks/bench_import_time.py [--quick]
"""

from __future__ import annotations

import argparse
import subprocess
import sys

SNIPPETS = {
    "import torch": "import torch",
    "import deepseek": "import deepseek",
    "import deepseek + plugin discovery": (
        "import deepseek; from deepseek.plugins import registry; registry('backend').names()"
    ),
    "import deepseek.training": "import deepseek.training",
}

TIMER = """
import time
t = time.perf_counter()
{code}
print(time.perf_counter() - t)
"""


def measure(code: str, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", TIMER.format(code=code)],
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(float(out.stdout.strip().splitlines()[-1]))
    return min(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    repeats = 3 if args.quick else args.repeats
    results = {name: measure(code, repeats) for name, code in SNIPPETS.items()}
    base = results["import torch"]
    print(f"\nImport time, fresh interpreter, best of {repeats}\n")
    print("| statement | seconds | ratio vs import torch | added to import torch (ms) |")
    print("|---|---|---|---|")
    for name, seconds in results.items():
        print(
            f"| `{name}` | {seconds:.3f} | {seconds / base:.3f} | {1000 * (seconds - base):+.0f} |"
        )


if __name__ == "__main__":
    main()
