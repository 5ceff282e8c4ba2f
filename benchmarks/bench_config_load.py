"""How long does loading a job config take, and how fast is an alias bomb refused?

Question: ``deepseek.config.load_config`` adds YAML 1.2 floats, an alias-expansion bound and
typed validation on top of ``yaml.safe_load``. What does that cost on a real config (the
quickstart), and how long does it take to refuse the 430-byte "billion laughs" config that
used to take 17 s and 1.1 GB (issue 12 item 7)? Reference: ``yaml.safe_load`` of the same
text, measured in the same run (it returns the bomb with shared references, unexpanded).

Run: ``python benchmarks/bench_config_load.py [--quick]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from deepseek.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]

BOMB = "".join(
    f"{chr(97 + i)}: &{chr(97 + i)} [" + ",".join([f"*{chr(96 + i)}"] * 9) + "]\n"
    if i
    else 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for i in range(9)
)


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def refuse(path):
    try:
        load_config(path)
    except ConfigError:
        return
    raise AssertionError("the bomb was accepted")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    repeats = 5 if parser.parse_args().quick else 20
    quickstart = ROOT / "examples" / "quickstart.yaml"
    with tempfile.TemporaryDirectory() as tmp:
        bomb = Path(tmp) / "bomb.yaml"
        bomb.write_text(BOMB + "model: m:f\ndata: {train: d:f}\n")
        load_config(quickstart)  # warm: the trainer section is derived once per process
        rows = [
            ("quickstart.yaml (load + validate)", quickstart, lambda: load_config(quickstart)),
            (f"alias bomb, {len(BOMB)} bytes (refused)", bomb, lambda: refuse(bomb)),
        ]
        print(f"median of {repeats} runs")
        print()
        print("| config | yaml.safe_load (ms) | load_config (ms) | ratio |")
        print("|---|---|---|---|")
        for name, path, fn in rows:
            text = path.read_text()
            ref = timed(lambda text=text: yaml.safe_load(text), repeats)
            ours = timed(fn, repeats)
            print(f"| {name} | {ref * 1e3:.2f} | {ours * 1e3:.2f} | {ours / ref:.2f}x |")


if __name__ == "__main__":
    main()
