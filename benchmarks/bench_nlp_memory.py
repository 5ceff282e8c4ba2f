"""Gradient checkpointing in deepseek.nlp's BERT: peak memory and step time, on vs off.

bert-base (BertForSequenceClassification), seq 256, batch 8, fp32, AdamW. Each setting
runs in a fresh subprocess; after a warm-up step the process's peak RSS is reset
(/proc/self/clear_refs) and one more step is measured, so "step peak" is the extra memory
a training step needs on top of weights and optimizer state (the activations), read from
the kernel's high-water mark (VmHWM). Linux only.

    python benchmarks/bench_nlp_memory.py           # 3 timed steps per setting
    python benchmarks/bench_nlp_memory.py --quick   # 1 timed step per setting
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(checkpointing: bool, steps: int) -> None:
    import torch

    from deepseek.nlp import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(
        BertConfig(vocab_size=21128, num_labels=3, gradient_checkpointing=checkpointing)
    ).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ids = torch.randint(1, 21128, (8, 256))
    labels = torch.randint(0, 3, (8,))

    def step() -> None:
        model(ids, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up: optimizer state, allocator caches
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS to the current RSS
    before = _status("VmRSS")
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - start) / steps
    print(json.dumps({"peak": _status("VmHWM"), "before": before, "seconds": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", choices=["on", "off"])
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args()
    steps = args.steps or (1 if args.quick else 3)
    if args.child:
        child(args.child == "on", steps)
        return
    results = {}
    for setting in ("off", "on"):
        out = subprocess.run(
            [sys.executable, __file__, "--child", setting, "--steps", str(steps)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        results[setting] = json.loads(out.strip().splitlines()[-1])
    off, on = results["off"], results["on"]
    mib = 2**20
    print(f"\nbert-base, seq 256, batch 8, fp32, AdamW, {steps} timed step(s)\n")
    print("| gradient_checkpointing | step peak (MiB) | process peak (MiB) | s/step |")
    print("|---|---|---|---|")
    for name, r in (("False", off), ("True", on)):
        print(f"| {name} | {(r['peak'] - r['before']) / mib:.0f} | {r['peak'] / mib:.0f} "
              f"| {r['seconds']:.2f} |")  # fmt: skip
    ratio_mem = (on["peak"] - on["before"]) / (off["peak"] - off["before"])
    print(f"| ratio on/off | {ratio_mem:.2f}x | {on['peak'] / off['peak']:.2f}x "
          f"| {on['seconds'] / off['seconds']:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
