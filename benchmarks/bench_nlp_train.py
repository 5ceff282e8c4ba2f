"""BertForSequenceClassification: deepseek.nlp vs Hugging Face transformers, same weights.

Questions: training-step throughput (bert-base, seq 128, batch 8, fp32, AdamW) and
inference throughput at batch 1 and batch 32 (seq 128), samples/s and the ratio
ours/theirs, measured in one process on identical weights (ours loads the transformers
model's state dict).

Trustworthy on a small shared machine: the two models alternate step by step (round
robin, the order flipping every round, so a load spike hits both alike), each number is
the median over all rounds, and the header prints the CPU, the thread count and the load
average before and after (read the ratios, not the absolute rates, when the load is
above the core count).

Batches are "padded" as real ones are: the first sequence is 128 tokens, the others
64..128 (the padding a dynamic collator leaves); batch 1 has no padding. The
``ours, padded path`` rows switch deepseek.nlp's unpadding off (``model.bert.unpad =
False``), to show what it is worth; the ``ours, pack_for_inference()`` rows run a copy
of ours whose Linear weights MKL packed once (``model.pack_for_inference()``).

    python benchmarks/bench_nlp_train.py            # full run (about 10 min on 2 cores)
    python benchmarks/bench_nlp_train.py --quick    # 3 rounds per case
    python benchmarks/bench_nlp_train.py --small    # 4-layer, 256-wide BERT
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import time

import torch

SMALL = {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
         "intermediate_size": 1024}  # fmt: skip


def machine_header() -> str:
    """CPU model, cores, threads, versions and load: what the numbers depend on."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    import transformers

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"CPU: {cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}; "
        f"torch {torch.__version__}, transformers {transformers.__version__}; "
        f"load average (1/5/15 min) {load}"
    )


def build(num_labels: int = 3, **sizes: int):
    import transformers

    from deepseek.nlp import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    hf_config = transformers.BertConfig(vocab_size=21128, num_labels=num_labels, **sizes)
    theirs = transformers.BertForSequenceClassification(hf_config)
    ours = BertForSequenceClassification(
        BertConfig(vocab_size=21128, num_labels=num_labels, **sizes)
    )
    result = ours.load_state_dict(theirs.state_dict(), strict=False)
    assert not result.missing_keys, result.missing_keys  # identical weights
    return ours, theirs


def batch(size: int, length: int, vocab: int = 21128, padded: bool = True):
    g = torch.Generator().manual_seed(size * 1000 + length)
    ids = torch.randint(1, vocab, (size, length), generator=g)
    mask = torch.ones(size, length, dtype=torch.long)
    if padded and size > 1:  # realistic: some sequences shorter than the batch's longest
        lengths = torch.randint(length // 2, length + 1, (size,), generator=g)
        lengths[0] = length
        mask = (torch.arange(length)[None] < lengths[:, None]).long()
        ids = ids * mask
    labels = torch.randint(0, 3, (size,), generator=g)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class TrainStep:
    """One AdamW training step (forward, backward, step, zero_grad)."""

    def __init__(self, model, inputs):
        self.model, self.inputs = model.train(), inputs
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def __call__(self) -> None:
        self.model.train()
        self.model(**self.inputs).loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


class InferStep:
    """One eval-mode forward without autograd."""

    def __init__(self, model, inputs):
        self.model = model
        self.inputs = {k: v for k, v in inputs.items() if k != "labels"}

    @torch.no_grad()
    def __call__(self) -> None:
        self.model.eval()
        self.model(**self.inputs)


def round_robin(steps: dict[str, object], rounds: int) -> dict[str, float]:
    """Median seconds per step of each callable, the callables alternating step by step
    (order reversed every other round)."""
    names = list(steps)
    for name in names:  # warm-up: allocator, optimizer state, kernel selection
        steps[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


class _Unpadding:
    """Ours with ``bert.unpad`` set as asked, for the step's duration."""

    def __init__(self, step, model, unpad: bool):
        self.step, self.model, self.unpad = step, model, unpad

    def __call__(self) -> None:
        saved, self.model.bert.unpad = self.model.bert.unpad, self.unpad
        try:
            self.step()
        finally:
            self.model.bert.unpad = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds per case")
    parser.add_argument("--small", action="store_true", help="a 4-layer, 256-wide BERT")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per case")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument(
        "--no-ablation", action="store_true", help="skip the 'ours, padded path' rows"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ours, theirs = build(**(SMALL if args.small else {}))
    packed = copy.deepcopy(ours).eval().pack_for_inference()
    header_before = machine_header()
    base = 3 if args.quick else (args.rounds or 0)
    cases = [  # name, step class, inputs, samples, rounds
        ("train step, batch 8, seq 128 (padded)", TrainStep, batch(8, 128), 8, base or 10),
        ("inference, batch 1, seq 128", InferStep, batch(1, 128), 1, base or 20),
        ("inference, batch 32, seq 128 (padded)", InferStep, batch(32, 128), 32, base or 6),
        (
            "inference, batch 32, seq 128 (no padding)",
            InferStep,
            batch(32, 128, padded=False),
            32,
            base or 4,
        ),
    ]
    rows = []
    started = time.perf_counter()
    for name, step_cls, inputs, size, rounds in cases:
        steps = {"ours": step_cls(ours, inputs), "theirs": step_cls(theirs, inputs)}
        padded = bool((inputs["attention_mask"] == 0).any())
        if padded and not args.no_ablation:
            steps["ours_padded"] = _Unpadding(step_cls(ours, inputs), ours, unpad=False)
        if step_cls is InferStep:
            steps["ours_packed"] = step_cls(packed, inputs)
        seconds = round_robin(steps, rounds)
        ref = seconds["theirs"]
        rows.append((name, size / seconds["ours"], size / ref, ref / seconds["ours"], rounds))
        if "ours_padded" in seconds:
            s = seconds["ours_padded"]
            rows.append(("  ours, padded path (unpad off)", size / s, size / ref, ref / s, rounds))
        if "ours_packed" in seconds:
            s = seconds["ours_packed"]
            rows.append(("  ours, pack_for_inference()", size / s, size / ref, ref / s, rounds))
        print(f"done: {name} ({time.perf_counter() - started:.0f} s)", flush=True)
    size = "4-layer, 256-wide BERT" if args.small else "bert-base"
    print(f"\n{size} (vocab 21128), BertForSequenceClassification, fp32, CPU")
    print(f"before: {header_before}")
    print(f"after:  {machine_header()}")
    print("round robin, median per step\n")
    print("| case | deepseek.nlp samples/s | transformers samples/s | ratio | rounds |")
    print("|---|---|---|---|---|")
    for name, a, b, ratio, rounds in rows:
        print(f"| {name} | {a:.2f} | {b:.2f} | {ratio:.2f}x | {rounds} |")


if __name__ == "__main__":
    main()
