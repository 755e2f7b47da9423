"""Where a training step's time goes: the recipe's network on each plan's patch, by operator kind and by
layer, and what the obvious levers (channels-last memory, ``torch.compile``) change, measured in one run.

One "step" is what the trainer does per step of the cpu3 preset: one forward + backward + AdamW update
per dataset (hippocampus 40x56x40, left atrium 56x48x48, ACDC 104x104x8 with its plan's geometry),
batch 1, every prompt of the label space. Variants are timed in alternation over ``--repeats`` rounds
(a load change hits every variant alike); the median per variant is reported with its ratio to the
baseline. Run it on a CPU with native bf16 (``--precision bf16``) and, for a CPU with only AVX2, emulate one
with ``ONEDNN_MAX_CPU_ISA=AVX2`` and ``--precision fp32`` (oneDNN then uses the AVX2 kernels only)::

    .venv/bin/python bench/train_profile.py --precision bf16
    ONEDNN_MAX_CPU_ISA=AVX2 .venv/bin/python bench/train_profile.py --precision fp32
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

from versemi.devices import cpu_has_native_bf16
from versemi.network import build_model
from versemi.network.geometry import plan_geometry

# The cpu3 plans (bench/results/cpu3/.../plans.json): patch (x, y, z) and target spacing (mm).
PLANS = {
    "hippocampus": ((40, 56, 40), (1.0, 1.0, 1.0)),
    "left_atrium": ((56, 48, 48), (1.2, 1.2, 1.2)),
    "acdc": ((104, 104, 8), (1.5, 1.5, 10.0)),
}
RECIPE_MODEL = {"backbone": "unet", "base_filters": 16, "depth": 4, "norm": "instance", "num_prompts": 7}
KINDS = (
    ("convolution backward", ("convolution_backward",)),
    ("convolution forward", ("mkldnn_convolution", "conv3d", "_convolution", "conv_transpose")),
    ("instance norm", ("batch_norm", "instance_norm")),
    ("dynamic head (bmm)", ("bmm", "baddbmm")),
    ("activations", ("leaky_relu", "threshold", "relu", "sigmoid")),
    ("optimizer", ("_foreach", "addcdiv", "lerp", "adamw")),
    ("copies and casts", ("copy_", "_to_copy", "to")),
)


def _kind(name: str) -> str:
    for kind, keys in KINDS:
        if any(k in name for k in keys):
            return kind
    return "other"


class Step:
    """One trainer-like step over the three plans for a network variant."""

    def __init__(self, precision: str, channels_last: bool, compiled: bool) -> None:
        torch.manual_seed(0)
        self.model = build_model(RECIPE_MODEL)
        self.channels_last = channels_last
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last_3d)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), 1e-3, weight_decay=1e-4)
        self.forward = torch.compile(self.model) if compiled else self.model
        self.dtype = torch.bfloat16 if precision == "bf16" else None
        self.inputs = []
        for patch, spacing in PLANS.values():
            x = torch.randn(1, 1, patch[2], patch[1], patch[0])
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last_3d)
            self.inputs.append((x, plan_geometry(spacing, patch, RECIPE_MODEL["depth"])))
        self.prompts = torch.arange(RECIPE_MODEL["num_prompts"])

    def __call__(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        for x, geometry in self.inputs:
            with torch.autocast("cpu", dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
                logits = self.forward(x, self.prompts, geometry)
            (torch.sigmoid(logits).mean() / len(self.inputs)).backward()
        self.optimizer.step()


def profile_step(step: Step) -> tuple[dict[str, float], list[tuple[str, float]]]:
    """Self CPU time by operator kind (share) and the ten costliest convolution shapes (ms)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step()
    by_kind: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        by_kind[_kind(event.key)] += event.self_cpu_time_total
    total = sum(by_kind.values())
    shares = {k: v / total for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])}
    convs = [(f"{e.key} {e.input_shapes[:2]}", e.self_cpu_time_total / 1000)
             for e in prof.key_averages(group_by_input_shape=True) if "convolution" in e.key]
    return shares, sorted(convs, key=lambda c: -c[1])[:10]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--variants", nargs="+", default=["baseline", "channels_last"],
                        choices=("baseline", "channels_last", "compile"))
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "default")
    print(f"torch {torch.__version__}, {args.threads} thread(s), precision {args.precision}, oneDNN ISA limit {isa}, "
          f"native bf16: {cpu_has_native_bf16()}")
    steps = {name: Step(args.precision, name == "channels_last", name == "compile") for name in args.variants}
    for name, step in steps.items():  # warm-up (compilation, first allocations)
        t0 = time.perf_counter()
        step()
        step()
        print(f"  warm-up {name}: {time.perf_counter() - t0:.1f} s", flush=True)
    times: dict[str, list[float]] = defaultdict(list)
    for _ in range(args.repeats):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times[args.variants[0]])
    result: dict[str, object] = {"precision": args.precision, "isa": isa, "threads": args.threads, "variants": {}}
    print(f"\nseconds per step (3 datasets), median of {args.repeats}:")
    for name in args.variants:
        med = statistics.median(times[name])
        result["variants"][name] = {"seconds": med, "speedup": base / med}  # type: ignore[index]
        print(f"  {name:14s} {med:6.3f} s   {base / med:4.2f}x")
    shares, convs = profile_step(steps[args.variants[0]])
    result["shares"] = shares
    print(f"\nwhere the {args.variants[0]} step's time goes (self CPU time):")
    for kind, share in shares.items():
        print(f"  {kind:22s} {100 * share:5.1f} %")
    print("\ncostliest convolutions (input, weight shapes):")
    for key, ms in convs:
        print(f"  {ms:7.1f} ms  {key}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
