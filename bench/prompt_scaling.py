"""How the PromptedSegmenter's cost grows with the number of prompts, on CPU.

Measures (median of ``--repeats`` after one warm-up, ``torch.set_num_threads(--threads)``):

1. inference forward time for 8 prompts vs 1 prompt (target ratio <= 1.25), and its parts: the
   backbone (``encode``) and the head (``decode_prompts``);
2. the dynamic-layer implementations: chunked batched matmuls (used), unchunked, and the reference
   grouped convolution;
3. ``channels_last_3d`` vs contiguous backbone forward;
4. bf16 autocast vs fp32 forward + backward (training step without optimizer) for the default model
   and a small one.

Usage::

    .venv/bin/python bench/prompt_scaling.py            # default model, 96^3, 2 threads
    .venv/bin/python bench/prompt_scaling.py --size 64 --sections scaling
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from versemi.network import PromptedSegmenter, build_model
from versemi.network.dynamic_head import apply_dynamic_layers

SECTIONS = ("scaling", "head", "channels_last", "autocast")


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Medians of several functions timed round-robin, so CPU contention from others hits all alike."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def grouped_conv_layers(x: torch.Tensor, layers: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """The reference DoDNet application: features repeated per prompt, one grouped 1x1x1 conv."""
    batch, channels, voxels = x.shape
    num = layers[0][0].shape[1]
    x = x[:, None].expand(batch, num, channels, voxels).reshape(1, batch * num * channels, voxels, 1, 1)
    for index, (weight, bias) in enumerate(layers):
        out_ch, in_ch = weight.shape[2:]
        x = F.conv3d(
            x, weight.reshape(batch * num * out_ch, in_ch, 1, 1, 1), bias.reshape(-1), groups=batch * num
        )
        if index < len(layers) - 1:
            x = torch.relu_(x)
    return x.reshape(batch, num, voxels)


def bench_scaling(model: PromptedSegmenter, images: torch.Tensor, prompts: int, repeats: int) -> None:
    many = torch.arange(prompts)
    one = torch.arange(1)
    with torch.inference_mode():
        forward = interleaved_medians(
            {"1": lambda: model(images, one), str(prompts): lambda: model(images, many)}, repeats
        )
        features, pooled = model.encode(images)
        parts = interleaved_medians(
            {
                "backbone": lambda: model.encode(images),
                "head 1": lambda: model.decode_prompts(features, pooled, one),
                f"head {prompts}": lambda: model.decode_prompts(features, pooled, many),
            },
            repeats,
        )
    ratio = forward[str(prompts)] / forward["1"]
    print(f"forward, 1 prompt:            {forward['1']:.3f} s")
    print(f"forward, {prompts} prompts:           {forward[str(prompts)]:.3f} s")
    print(f"ratio {prompts} prompts / 1 prompt:   {ratio:.3f}  (target <= 1.25: "
          f"{'met' if ratio <= 1.25 else 'NOT met'})")
    print(f"  backbone (encode):          {parts['backbone']:.3f} s")
    print(f"  head, 1 prompt:             {parts['head 1']:.3f} s")
    print(f"  head, {prompts} prompts:            {parts[f'head {prompts}']:.3f} s")


def bench_head(model: PromptedSegmenter, images: torch.Tensor, prompts: int, repeats: int) -> None:
    head = model.head
    with torch.inference_mode():
        features, pooled = model.encode(images)
        x = head.project_features(features)
        layers = head.dynamic_parameters(pooled, torch.arange(prompts)[None].expand(images.shape[0], -1))
        chunk = head.voxels_per_chunk
        reference = grouped_conv_layers(x, layers)
        variants = {
            f"chunked matmul ({chunk} voxels, used)": lambda: torch.cat(
                [apply_dynamic_layers(c, layers) for c in x.split(chunk, dim=2)], dim=2
            ),
            "unchunked matmul": lambda: apply_dynamic_layers(x, layers),
            "grouped conv (reference)": lambda: grouped_conv_layers(x, layers),
        }
        for name, fn in variants.items():
            error = (fn() - reference).abs().max().item()
            seconds = median_seconds(fn, max(3, repeats // 2))
            print(f"  {name:40s} {seconds:.4f} s   max |diff| vs grouped conv {error:.1e}")


def bench_channels_last(model: PromptedSegmenter, images: torch.Tensor, repeats: int) -> None:
    last = build_model(model.config).eval()
    last.load_state_dict(model.state_dict())
    last = last.to(memory_format=torch.channels_last_3d)
    images_last = images.contiguous(memory_format=torch.channels_last_3d)
    with torch.inference_mode():
        times = interleaved_medians(
            {"contiguous": lambda: model.encode(images),
             "channels_last_3d": lambda: last.encode(images_last)},
            repeats,
        )
    for name, seconds in times.items():
        print(f"  backbone forward, {name:18s} {seconds:.3f} s")


def bench_autocast(config: dict, batch: int, size: int, prompts: int, repeats: int) -> None:
    torch.manual_seed(0)
    model = build_model(config).train()
    images = torch.randn(batch, config.get("in_channels", 1), size, size, size)
    ids = torch.arange(prompts)
    target = (torch.rand(batch, prompts, size, size, size) > 0.5).float()

    def step(dtype: torch.dtype | None) -> None:
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
            logits = model(images, ids)
            loss = F.binary_cross_entropy_with_logits(logits, target)
        loss.backward()

    times = interleaved_medians(
        {"fp32": lambda: step(None), "bf16 autocast": lambda: step(torch.bfloat16)}, repeats
    )
    with torch.inference_mode():
        model.eval()
        inference = interleaved_medians(
            {"fp32": lambda: model(images, ids),
             "bf16 autocast": lambda: torch.autocast("cpu", dtype=torch.bfloat16)(model)(images, ids)},
            repeats,
        )
    label = (f"{config.get('backbone', 'vnet')} base {config.get('base_filters', 16)} depth "
             f"{config.get('depth', 5)}, batch {batch}, {size}^3, {prompts} prompts")
    print(f"  {label}")
    for name in times:
        print(f"    {name:14s} forward+backward {times[name]:.3f} s   inference forward "
              f"{inference[name]:.3f} s")
    print(f"    bf16/fp32 ratio: forward+backward {times['bf16 autocast'] / times['fp32']:.2f}, "
          f"inference {inference['bf16 autocast'] / inference['fp32']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=96, help="cubic input side (default 96)")
    parser.add_argument("--prompts", type=int, default=8, help="prompts of the many-prompt run")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--train-size", type=int, default=64,
                        help="cubic patch side of the default model's forward+backward timing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = {"backbone": "vnet", "base_filters": 16, "depth": 5, "num_prompts": args.prompts + 1}
    model = build_model(config).eval()
    images = torch.randn(1, 1, args.size, args.size, args.size)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, input 1x1x{args.size}^3, "
          f"V-Net base 16 depth 5 ({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M "
          f"parameters), median of {args.repeats}")
    if "scaling" in args.sections:
        print("\n[prompt scaling, inference mode]")
        bench_scaling(model, images, args.prompts, args.repeats)
    if "head" in args.sections:
        print(f"\n[dynamic layers for {args.prompts} prompts, inference mode]")
        bench_head(model, images, args.prompts, args.repeats)
    if "channels_last" in args.sections:
        print("\n[memory format, inference mode]")
        bench_channels_last(model, images, args.repeats)
    if "autocast" in args.sections:
        print("\n[bf16 autocast vs fp32: forward+backward (BCE loss, no optimizer) and inference]")
        bench_autocast(config, 1, args.train_size, 2, max(3, args.repeats // 2))
        small = {"backbone": "vnet", "base_filters": 4, "depth": 3, "num_prompts": 3}
        bench_autocast(small, 2, 32, 2, args.repeats)


if __name__ == "__main__":
    main()
