"""Gradient checkpointing in deepseek.nlp's BERT: what it saves, and what it costs.

bert-base (BertForSequenceClassification, vocab 21128), seq 256, batch 8, fp32, AdamW,
dropout on (training mode). Each setting runs in fresh subprocesses, the settings
alternating (off, on, off, on, ...) so machine load hits both alike.

Memory is the process's resident set (Linux ``/proc/self/status``), read with the C
allocator told to hand every block of 128 KiB or more straight back to the kernel when
freed (``MALLOC_MMAP_THRESHOLD_``), so the resident set follows the live tensors instead
of glibc's caches. After a warm-up step (weights and AdamW state allocated, gradients
freed) the process holds the **baseline**: parameters + optimizer state. Then, with the
peak (``VmHWM``) reset before each phase:

- **saved activations**: what the forward keeps for backward (resident set after the
  forward, minus the baseline): what checkpointing is meant to shrink;
- **forward+backward peak**: the highest point of forward, backward and the optimizer
  step above the baseline: saved activations, the recomputed layer, temporaries, and the
  parameter gradients (one per parameter: the same in both settings).

    python benchmarks/bench_nlp_memory.py           # 2 processes x 2 timed steps per setting
    python benchmarks/bench_nlp_memory.py --quick   # 1 process x 1 timed step per setting
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

MIB = 2**20


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak resident set (VmHWM) becomes the current one


def child(checkpointing: bool, steps: int, length: int, batch: int) -> None:
    import torch

    from deepseek.nlp import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(
        BertConfig(vocab_size=21128, num_labels=3, gradient_checkpointing=checkpointing)
    ).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ids = torch.randint(1, 21128, (batch, length))
    labels = torch.randint(0, 3, (batch,))
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())

    def step() -> tuple[int, int, int]:
        _reset_peak()
        loss = model(ids, labels=labels).loss
        after_forward, forward_peak = _status("VmRSS"), _status("VmHWM")
        _reset_peak()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return after_forward, forward_peak, _status("VmHWM")

    step()  # warm-up: optimizer state, allocator, kernel selection
    baseline = _status("VmRSS")
    samples = []
    start = time.perf_counter()
    for _ in range(steps):
        samples.append(step())
    seconds = (time.perf_counter() - start) / steps
    saved = max(s[0] for s in samples) - baseline
    peak = max(max(s[1], s[2]) for s in samples) - baseline
    print(
        json.dumps(
            {
                "baseline": baseline,
                "params": param_bytes,
                "saved": saved,
                "peak": peak,
                "seconds": seconds,
            }
        )
    )


def run_child(setting: str, steps: int, length: int, batch: int) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    command = [sys.executable, __file__, "--child", setting, "--steps", str(steps)]
    command += ["--length", str(length), "--batch", str(batch)]
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", choices=["on", "off"])
    parser.add_argument("--steps", type=int, default=None, help="timed steps per process")
    parser.add_argument("--processes", type=int, default=None, help="processes per setting")
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    steps = args.steps or (1 if args.quick else 2)
    if args.child:
        child(args.child == "on", steps, args.length, args.batch)
        return
    processes = args.processes or (1 if args.quick else 2)
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    for _ in range(processes):
        for setting in ("off", "on"):
            runs[setting].append(run_child(setting, steps, args.length, args.batch))
    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())

    def summary(setting: str) -> dict:
        rs = runs[setting]
        return {
            "baseline": statistics.median(r["baseline"] for r in rs) / MIB,
            "params": rs[0]["params"] / MIB,
            "saved": statistics.median(r["saved"] for r in rs) / MIB,
            "peak": statistics.median(r["peak"] for r in rs) / MIB,
            "seconds": statistics.median(r["seconds"] for r in rs),
        }

    off, on = summary("off"), summary("on")
    params = off["params"]
    print(
        f"\nbert-base, seq {args.length}, batch {args.batch}, fp32, AdamW, dropout on; "
        f"{processes} process(es) x {steps} timed step(s) per setting, alternating; "
        f"{os.cpu_count()} cores; load average before {load_before}, after {load_after}"
    )
    print(
        f"parameters {params:.0f} MiB, their gradients {params:.0f} MiB, AdamW state "
        f"{2 * params:.0f} MiB\n"
    )
    print(
        "| gradient_checkpointing | baseline: weights + AdamW state (MiB) "
        "| saved activations (MiB) | forward+backward peak above baseline (MiB) "
        "| process peak (MiB) | s/step |"
    )
    print("|---|---|---|---|---|---|")
    for name, r in (("False", off), ("True", on)):
        print(
            f"| {name} | {r['baseline']:.0f} | {r['saved']:.0f} | {r['peak']:.0f} "
            f"| {r['baseline'] + r['peak']:.0f} | {r['seconds']:.2f} |"
        )
    print(
        f"| ratio on/off | {on['baseline'] / off['baseline']:.2f}x "
        f"| {on['saved'] / off['saved']:.2f}x | {on['peak'] / off['peak']:.2f}x "
        f"| {(on['baseline'] + on['peak']) / (off['baseline'] + off['peak']):.2f}x "
        f"| {on['seconds'] / off['seconds']:.2f}x |"
    )
    print(
        f"\nforward+backward peak minus the {params:.0f} MiB of gradients "
        f"(activations, recomputation, temporaries): off {off['peak'] - params:.0f} MiB, "
        f"on {on['peak'] - params:.0f} MiB, "
        f"ratio {(on['peak'] - params) / (off['peak'] - params):.2f}x"
    )


if __name__ == "__main__":
    main()
