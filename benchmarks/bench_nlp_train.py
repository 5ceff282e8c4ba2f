"""BertForSequenceClassification: deepseek.nlp vs Hugging Face transformers, same weights.

Questions: training-step throughput (bert-base, seq 128, batch 8, fp32, AdamW) and
inference throughput at batch 1 and 32 (seq 128), samples/s and the ratio ours/theirs,
measured in one process on identical weights (ours loads the transformers model's
state dict), alternating the two models per round so machine load hits both alike.

    python benchmarks/bench_nlp_train.py            # 3 rounds x 5 steps
    python benchmarks/bench_nlp_train.py --quick    # 1 round x 2 steps
    python benchmarks/bench_nlp_train.py --small    # small BERT, 8 alternating rounds

Prints a markdown table. CPU only here; bert-base is slow on 2 cores, so step counts are
small: read the numbers as +-10%.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

SMALL = {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
         "intermediate_size": 1024}  # fmt: skip


def build(num_labels: int = 3, **sizes: int):
    import transformers

    from deepseek.nlp import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    hf_config = transformers.BertConfig(vocab_size=21128, num_labels=num_labels, **sizes)
    theirs = transformers.BertForSequenceClassification(hf_config)
    ours = BertForSequenceClassification(
        BertConfig(vocab_size=21128, num_labels=num_labels, **sizes)
    )
    ours.load_state_dict(theirs.state_dict(), strict=False)
    for a, b in zip(ours.state_dict().values(), theirs.state_dict().values(), strict=False):
        assert a.shape == b.shape
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


def time_train(model, inputs, steps: int) -> float:
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    start = time.perf_counter()
    for _ in range(steps):
        loss = model(**inputs).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (time.perf_counter() - start) / steps


@torch.no_grad()
def time_infer(model, inputs, steps: int) -> float:
    model.eval()
    inputs = {k: v for k, v in inputs.items() if k != "labels"}
    start = time.perf_counter()
    for _ in range(steps):
        model(**inputs)
    return (time.perf_counter() - start) / steps


def compare(ours, theirs, fn, inputs, rounds: int, steps: int) -> tuple[float, float]:
    fn(ours, inputs, 1)  # warm-up (allocator, kernels)
    fn(theirs, inputs, 1)
    mine, ref = [], []
    for _ in range(rounds):
        mine.append(fn(ours, inputs, steps))
        ref.append(fn(theirs, inputs, steps))
    return statistics.median(mine), statistics.median(ref)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and steps")
    parser.add_argument(
        "--small",
        action="store_true",
        help="a 4-layer, 256-wide BERT, 8 alternating rounds of 1 step (for loaded machines)",
    )
    args = parser.parse_args()
    rounds, steps = (1, 2) if args.quick else (3, 5)
    if args.small:
        rounds, steps = 8, 1
    ours, theirs = build(**(SMALL if args.small else {}))
    rows = []
    cases = [
        ("train step, batch 8, seq 128", time_train, batch(8, 128), 8),
        ("inference, batch 1, seq 128", time_infer, batch(1, 128), 1),
        ("inference, batch 32, seq 128", time_infer, batch(32, 128), 32),
    ]
    for name, fn, inputs, size in cases:
        mine, ref = compare(ours, theirs, fn, inputs, rounds, steps)
        rows.append((name, size / mine, size / ref, ref / mine))
    size = "4-layer, 256-wide BERT" if args.small else "bert-base"
    print(f"\n{size} (vocab 21128), fp32, CPU threads={torch.get_num_threads()}, "
          f"{rounds} rounds x {steps} steps (median)\n")  # fmt: skip
    print("| case | deepseek.nlp samples/s | transformers samples/s | ratio |")
    print("|---|---|---|---|")
    for name, a, b, ratio in rows:
        print(f"| {name} | {a:.2f} | {b:.2f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
