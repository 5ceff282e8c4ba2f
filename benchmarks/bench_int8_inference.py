"""fp32 vs dynamic int8 (``deepseek.quantization.quantize_dynamic_int8``) CPU inference.

Model: a transformer-ish stack of ``--layers`` pre-LayerNorm blocks of width ``--width``
(q/k/v/out projections around ``scaled_dot_product_attention``, then a 4x MLP), on
sequences of 16 tokens, so almost all FLOPs are in ``nn.Linear``. Only the Linear layers
are quantized (int8 weights, activations quantized per batch); attention, LayerNorm and
GELU stay fp32. Each figure is the median of ``--repeats`` timed forward passes under
``torch.inference_mode`` after warm-up; the ratio is fp32 time / int8 time (higher is
better for int8), measured in the same run, on 1 thread unless ``--threads``.

    python benchmarks/bench_int8_inference.py [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

import torch
from torch import nn
from torch.nn import functional as F

from deepseek.quantization import quantize_dynamic_int8

TOKENS = 16


class Block(nn.Module):
    def __init__(self, width: int, heads: int = 8) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.up, self.down = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).unbind(2)
        attn = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        )
        x = x + self.out(attn.transpose(1, 2).reshape(b, t, d))
        return x + self.down(F.gelu(self.up(self.norm2(x))))


def make_model(width: int, layers: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(*(Block(width) for _ in range(layers)), nn.Linear(width, 1000)).eval()


def median_ms(model: nn.Module, x: torch.Tensor, repeats: int) -> float:
    with torch.inference_mode():
        for _ in range(max(2, repeats // 5)):
            model(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def size_mb(model: nn.Module) -> float:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller model, fewer repeats")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=30)
    # One thread by default: on a busy machine every multi-threaded op can stall for a
    # scheduler time slice, which swamps millisecond timings.
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    width, layers, repeats = (256, 2, 10) if args.quick else (args.width, args.layers, args.repeats)
    torch.set_num_threads(args.threads)

    fp32 = make_model(width, layers)
    int8 = quantize_dynamic_int8(fp32)
    print(
        f"{layers} blocks, width {width}, {TOKENS} tokens/sample, torch {torch.__version__}, "
        f"{args.threads} thread(s), quantized engine {torch.backends.quantized.engine}, "
        f"median of {repeats}"
    )
    print(f"serialized state_dict: fp32 {size_mb(fp32):.1f} MiB, int8 {size_mb(int8):.1f} MiB\n")
    print("| batch | fp32 ms | int8 ms | ratio fp32/int8 | max abs diff | max abs output |")
    print("|---:|---:|---:|---:|---:|---:|")
    generator = torch.Generator().manual_seed(1)
    for batch in (1, 32):
        x = torch.randn(batch, TOKENS, width, generator=generator)
        with torch.inference_mode():
            ref, out = fp32(x), int8(x)
        t_fp32, t_int8 = median_ms(fp32, x, repeats), median_ms(int8, x, repeats)
        print(
            f"| {batch} | {t_fp32:.2f} | {t_int8:.2f} | {t_fp32 / t_int8:.2f}x | "
            f"{(out - ref).abs().max():.3g} | {ref.abs().max():.3g} |"
        )


if __name__ == "__main__":
    main()
