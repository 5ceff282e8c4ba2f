"""What do epoch-level accumulating metrics cost next to scikit-learn on the whole set?

Question: ``deepseek.metrics`` updates sufficient statistics per validation batch
(accuracy, macro F1, MSE: a few counters; AUROC: keeps the scores) and computes once at
the end. Against the reference (concatenate every batch, then scikit-learn's
``accuracy_score`` / ``f1_score(average="macro")`` / ``roc_auc_score`` /
``mean_squared_error`` on the whole set), how long does a whole epoch take, and are the
values equal? Both run on one thread. Per-batch averaging (the old Trainer behaviour) is
shown for the value difference it makes.

Run: ``python benchmarks/bench_metrics_accumulate.py [--quick]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from sklearn import metrics as skm

from deepseek.metrics import build_metrics


def data(n: int, classes: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, classes, (n,), generator=g)
    logits = torch.randn(n, classes, generator=g)
    logits[torch.arange(n), target] += 1.0
    return logits, target


def ours(batches, names):
    metrics = build_metrics(names)
    for logits, target in batches:
        for name, m in metrics.items():
            if name == "mse":
                m.update(logits[:, 0], target.float())
            else:
                m.update(logits, target)
    return {name: float(m.compute()) for name, m in metrics.items()}


def sklearn_whole(batches):
    logits = torch.cat([b[0] for b in batches])
    target = torch.cat([b[1] for b in batches]).numpy()
    labels = logits.argmax(-1).numpy()
    return {
        "accuracy": skm.accuracy_score(target, labels),
        "f1_macro": skm.f1_score(target, labels, average="macro"),
        "auroc": skm.roc_auc_score(target, logits.softmax(-1).numpy(), multi_class="ovr"),
        "mse": skm.mean_squared_error(target.astype("float64"), logits[:, 0].numpy()),
    }


def per_batch_mean(batches):
    values = [sklearn_whole([b]) for b in batches]
    return {k: statistics.mean(v[k] for v in values) for k in values[0]}


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)  # scikit-learn runs on one thread too; and the machine is shared
    n, classes, batch = (20_000, 10, 250) if args.quick else (100_000, 10, 250)
    repeats = 3 if args.quick else 5
    logits, target = data(n, classes)
    batches = list(zip(logits.split(batch), target.split(batch)))
    names = ["accuracy", "f1_macro", "auroc", "mse"]
    t_ref, ref = timed(lambda: sklearn_whole(batches), repeats)
    t_ours, got = timed(lambda: ours(batches, names), repeats)
    naive = per_batch_mean(batches)
    print(f"{n} samples, {classes} classes, {len(batches)} batches of {batch}; median of {repeats}")
    print()
    print(
        "| metric | deepseek.metrics (accumulated) | sklearn on the whole set | |diff| "
        "| per-batch mean (old) |"
    )
    print("|---|---|---|---|---|")
    for name in names:
        print(
            f"| {name} | {got[name]:.6f} | {ref[name]:.6f} | {abs(got[name] - ref[name]):.1e} "
            f"| {naive[name]:.6f} |"
        )
    print()
    print("| epoch of 4 metrics | seconds | ratio vs sklearn |")
    print("|---|---|---|")
    print(f"| sklearn on the concatenated set (reference) | {t_ref:.3f} | 1.00x |")
    print(f"| deepseek.metrics update per batch + compute | {t_ours:.3f} | {t_ours / t_ref:.2f}x |")


if __name__ == "__main__":
    main()
