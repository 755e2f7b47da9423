"""Training speed of a benchmark preset: iterations/s, the share of a step spent waiting for data, and
bf16 autocast against fp32, measured by running the real trainer for a few steps.

The trainer times every step (waiting for the next batch, then the optimisation step) and logs it;
with ``log_every = 1`` each step is one record, so the first ``--warmup`` steps (DataLoader worker
start, first allocations) can be left out of the averages.

Usage::

    .venv/bin/python bench/train_speed.py --preset cpu3 --method supervised  # the recipe: fp32 vs bf16
    .venv/bin/python bench/train_speed.py --preset cpu-2ds                   # VerSemi (single stage)
    .venv/bin/python bench/train_speed.py --preset gpu-la --device cuda --precision bf16 fp16 fp32
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import semisup  # noqa: E402
from semisup_presets import get_preset, images_per_step  # noqa: E402


def measure(
    preset_name: str,
    method: str,
    stage: int,
    steps: int,
    warmup: int,
    precision: str,
    device_name: str,
    threads: int,
    data_dir: Path,
    cache_dir: Path,
    num_workers: int | None,
) -> dict[str, float | str | int]:
    """Run ``warmup + steps`` trainer steps in a temporary folder; per-step averages after the warm-up."""
    import torch

    from versemi.data.config import TrainConfig
    from versemi.devices import resolve_device
    from versemi.training.options import training_options
    from versemi.training.run_log import read_jsonl
    from versemi.training.trainer import Trainer

    torch.set_num_threads(threads)
    preset = get_preset(preset_name)
    protocol_path = data_dir / "protocol.json"
    protocol = json.loads(protocol_path.read_text(encoding="utf-8"))
    split = semisup.make_split(data_dir, preset.datasets, protocol, preset.heldout_fraction)
    setting = preset.settings[0]
    run = semisup.RunSpec(setting, method, method, 0, warmup + steps)
    with tempfile.TemporaryDirectory(prefix="versemi_speed_") as tmp:
        out = Path(tmp)
        raw = semisup.make_config(preset, run, data_dir, protocol_path, split, cache_dir, out)
        total = warmup + steps
        if method == "versemi":  # max_steps is VerSemi's budget over both stages: give this stage `total`
            f1 = float(raw["training"].get("stage1_fraction", 0.5))
            total = math.ceil(total / (f1 if stage == 1 else 1.0 - f1)) + 1
        overrides = {"max_steps": total, "log_every": 1, "checkpoint_every": 10 * total,
                     "tensorboard": False, "precision": precision}
        if num_workers is not None:
            overrides["num_workers"] = num_workers
        raw["training"].update(overrides)
        config = TrainConfig.from_dict(raw, base_dir=out)
        options = training_options(config.training)
        trainer = Trainer(config, options, stage, out, resolve_device(device_name)[0], progress=False)
        start = time.perf_counter()
        trainer.fit()
        wall = time.perf_counter() - start
        records = [r for r in read_jsonl(trainer.folder / "train_log.jsonl") if r.get("event") == "train"]
    timed = [r for r in records if int(r["step"]) > warmup]
    step_s = np.array([float(r["seconds_per_step"]) for r in timed])
    wait_s = np.array([float(r["data_wait_fraction"]) for r in timed]) * step_s
    per_dataset = images_per_step(method, options.to_dict()) if method != "versemi" else (
        2 * options.batch_size + (options.unlabeled_batch_size if stage == 2 else 0)
    )
    ipp = per_dataset * len(preset.datasets)  # one batch per dataset per step
    return {
        "method": method if method != "versemi" else f"versemi stage {stage}",
        "precision": precision,
        "steps": len(timed),
        "it_per_s": float(len(step_s) / step_s.sum()),
        "seconds_per_step": float(step_s.mean()),
        "images_per_s": float(ipp * len(step_s) / step_s.sum()),
        "data_wait_share": float(wait_s.sum() / step_s.sum()),
        "wall_seconds": wall,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cpu3", help="benchmark preset (patch, batch sizes, model)")
    p.add_argument("--method", default="versemi", choices=("versemi", "supervised", "mean_teacher"))
    p.add_argument("--stage", type=int, default=2, choices=(1, 2), help="VerSemi stage to time (default 2)")
    p.add_argument("--steps", type=int, default=20, help="timed steps (after the warm-up)")
    p.add_argument("--warmup", type=int, default=3, help="untimed first steps")
    p.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16", "fp16", "auto"),
                   help="training precisions to compare (resolved by the one rule: bf16 without native bf16 runs fp32)")
    p.add_argument("--repeats", type=int, default=2,
                   help="measure the modes this many times, alternating (fp32, bf16, fp32, bf16, ...), so a "
                        "change of machine load affects every mode alike; the table pools the repeats")
    p.add_argument("--device", default=None, help="default: the preset's")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the preset's)")
    p.add_argument("--num-workers", type=int, default=None, help="DataLoader workers (default: the preset's)")
    p.add_argument("--data", type=Path, default=semisup.DEFAULT_DATA)
    p.add_argument("--cache-dir", type=Path, default=semisup.DEFAULT_RESULTS / "cache")
    args = p.parse_args(argv)
    preset = get_preset(args.preset)
    device = args.device or preset.device
    threads = args.threads or preset.threads
    stage = args.stage if args.method == "versemi" else 1
    grid = (f"patch {list(preset.patch_size)} at {list(preset.target_spacing)} mm" if preset.patch_size
            else "per-dataset plans")
    print(f"preset {preset.name}: {grid} over {len(preset.datasets)} datasets, model "
          f"{json.dumps(preset.model)}, batch {preset.training.get('batch_size')} labeled + "
          f"{preset.training.get('unlabeled_batch_size')} unlabeled, device {device}, {threads} threads", flush=True)
    measured: dict[str, list[dict]] = {precision: [] for precision in args.precision}
    for _ in range(max(1, args.repeats)):
        for precision in args.precision:
            row = measure(preset.name, args.method, stage, args.steps, args.warmup, precision, device, threads,
                          args.data.resolve(), args.cache_dir.resolve(), args.num_workers)
            measured[precision].append(row)
            print(json.dumps(row), flush=True)
    rows = []
    for precision, runs in measured.items():  # pooled: total steps over total seconds
        seconds = sum(r["steps"] * r["seconds_per_step"] for r in runs)
        steps = sum(r["steps"] for r in runs)
        rows.append({**runs[0], "steps": steps, "it_per_s": steps / seconds, "seconds_per_step": seconds / steps,
                     "images_per_s": sum(r["images_per_s"] * r["steps"] for r in runs) / steps,
                     "data_wait_share": sum(r["data_wait_share"] * r["steps"] for r in runs) / steps})
    print()
    print("| method | precision | it/s | s/step | images/s | data wait |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['precision']} | {r['it_per_s']:.2f} | {r['seconds_per_step']:.3f} | "
              f"{r['images_per_s']:.1f} | {100 * r['data_wait_share']:.1f} % |")
    if len(rows) > 1:
        base = rows[0]
        for r in rows[1:]:
            print(f"{r['precision']} vs {base['precision']}: {r['it_per_s'] / base['it_per_s']:.2f}x the iterations/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
