"""deepseek-vision vs MONAI on identical weights and inputs: U-Net forward+backward time and
DiceFocal loss values.

Question: does a MONAI user switching to deepseek.vision get the same numbers, and at what
speed? ``deepseek.vision.networks.UNet(features=(32, 32, 64, 128, 256))`` has the layer
structure of ``monai.networks.nets.BasicUNet(features=(32, 32, 64, 128, 256, 32))`` (two
conv-instance norm-LeakyReLU per level, max-pool down, transposed-conv up, concatenation);
MONAI's conv biases before instance norm are set to zero (instance norm removes them anyway)
and every other weight is copied across, so both compute the same function. Times: the
two models' steps interleaved round by round (shared machine), median; loss values on the
same logits and labels for several DiceFocal settings.

Run: ``python benchmarks/bench_vision_vs_monai.py [--quick]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="32^3 input, 2 timed steps")
    args = parser.parse_args()
    size, steps = (32, 2) if args.quick else (64, 5)
    try:
        from monai.losses import DiceFocalLoss as MonaiDiceFocal
        from monai.networks.nets import BasicUNet
    except ImportError:
        print("MONAI is not installed: pip install monai (the vision test extra has it)")
        return

    from deepseek.vision.losses import DiceFocalLoss
    from deepseek.vision.networks import UNet, convert_monai_basic_unet_state_dict

    torch.manual_seed(0)
    theirs = BasicUNet(3, 1, 3, features=(32, 32, 64, 128, 256, 32))
    ours = UNet(3, 1, 3, features=(32, 32, 64, 128, 256))
    with torch.no_grad():  # conv biases in front of instance norm: zero on both sides
        for name, p in theirs.named_parameters():
            if name.endswith(".conv.bias"):
                p.zero_()
    ours.load_state_dict(convert_monai_basic_unet_state_dict(theirs.state_dict(), ours))
    x = torch.randn(2, 1, size, size, size)
    y = torch.randint(0, 3, (2, 1, size, size, size))
    with torch.no_grad():
        difference = (ours(x) - theirs(x)).abs().max().item()

    def step(net):
        net.zero_grad(set_to_none=True)
        net(x).square().mean().backward()

    times: dict[str, list[float]] = {"deepseek UNet": [], "MONAI BasicUNet": []}
    for round_ in range(steps + 1):
        for name, net in (("deepseek UNet", ours), ("MONAI BasicUNet", theirs)):
            start = time.perf_counter()
            step(net)
            if round_:
                times[name].append(time.perf_counter() - start)
    median = {k: statistics.median(v) for k, v in times.items()}

    print(
        f"2x1x{size}^3 input, features (32, 32, 64, 128, 256), torch threads "
        f"{torch.get_num_threads()}; max |output difference| = {difference:.2e}; "
        f"median of {steps} interleaved forward+backward steps after 1 warm-up\n"
    )
    print("| network | forward+backward (s) | ratio vs MONAI |")
    print("|---|---:|---:|")
    for name, t in median.items():
        print(f"| {name} | {t:.3f} | {t / median['MONAI BasicUNet']:.2f}x |")

    logits = torch.randn(2, 3, size, size, size) * 2
    print("\n| DiceFocal setting | deepseek | MONAI | abs difference |")
    print("|---|---:|---:|---:|")
    for options in (
        {"to_onehot_y": True, "softmax": True},
        {"to_onehot_y": True, "softmax": True, "include_background": False, "gamma": 1.0},
        {"to_onehot_y": True, "sigmoid": True, "batch": True, "lambda_focal": 2.0},
        {"to_onehot_y": True, "softmax": True, "squared_pred": True, "jaccard": True},
    ):
        a = DiceFocalLoss(**options)(logits, y).item()
        b = MonaiDiceFocal(**options)(logits, y).item()
        shown = ", ".join(f"{k}={v}" for k, v in options.items() if k != "to_onehot_y")
        print(f"| {shown} | {a:.6f} | {b:.6f} | {abs(a - b):.1e} |")


if __name__ == "__main__":
    main()
