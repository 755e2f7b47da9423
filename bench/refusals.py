"""How fast, and in how little memory, ``versemi predict`` refuses a scan that cannot fit in memory.

The scan of issue 15: 35 x 51 x 35 voxels of 50 x 50 x 50 mm. At a 1.5 mm model spacing it would be
resampled to 1167 x 1700 x 1167 = 2.3e9 voxels (tens of GB; before the memory guard the process grew
to 23 GB until the kernel's OOM killer ended it). Each run is a real ``versemi predict`` process with
the default memory limit (the memory available now), under ``ulimit -v`` as a safety net, so a
guard failure would stop at the cap instead of taking the machine down. Printed per run: exit status,
wall time, the child's peak RSS (``ru_maxrss``), and the one-line message. Targets: < 5 s, < 1 GB.

The model is the tiny test model with random weights (the refusal happens before any inference).

Usage::

    .venv/bin/python bench/refusals.py            # 3 runs
    .venv/bin/python bench/refusals.py --runs 5 --cap-gb 4
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from versemi.checkpoint import Checkpoint
from versemi.data.plans import Plans
from versemi.data.preprocessing import PreprocessingSpec
from versemi.labels import LabelSpace
from versemi.network import build_model

TARGET_SECONDS = 5.0
TARGET_RSS_GIB = 1.0


def tiny_checkpoint(path: Path) -> Path:
    """A 4-filter U-Net at 1.5 mm with three prompts (+ the synthetic one), random weights."""
    space = LabelSpace.from_dataset_labels({"Dataset001_Demo": {"labels": {"background": 0, "a": 1, "b": 2, "c": 3}}})
    model = build_model({"backbone": "unet", "base_filters": 4, "depth": 3, "convs_per_stage": 1,
                         "head_channels": 4, "num_prompts": len(space)})
    spec = PreprocessingSpec(target_spacing=(1.5, 1.5, 1.5), modality="MR")
    return Checkpoint(model.config, space, Plans.single(spec, (16, 16, 16), space.datasets), model.state_dict()).save(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cap-gb", type=float, default=6.0, help="ulimit -v of each run (safety net)")
    args = parser.parse_args()

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPUs, load average {load}; python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        model = tiny_checkpoint(root / "model.pt")
        scan = sitk.GetImageFromArray(np.random.default_rng(0).normal(100, 20, (35, 51, 35)).astype(np.float32))
        scan.SetSpacing((50.0, 50.0, 50.0))
        sitk.WriteImage(scan, str(root / "scan_50mm.nrrd"))
        cap = int(args.cap_gb * 1024**3)
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        env.pop("VERSEMI_MEMORY_LIMIT", None)
        worst_seconds = worst_rss = 0.0
        for run in range(args.runs):
            start = time.perf_counter()
            proc = subprocess.Popen(
                [sys.executable, "-m", "versemi.cli", "predict", "-m", str(model), "-i", str(root / "scan_50mm.nrrd"),
                 "-o", str(root / "out" / "seg.nii.gz"), "--progress", "none"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (cap, cap)),
            )
            _, status, usage = os.wait4(proc.pid, 0)
            seconds = time.perf_counter() - start
            proc.returncode = os.waitstatus_to_exitcode(status)
            message = proc.stderr.read().strip()
            proc.stderr.close()
            rss_gib = usage.ru_maxrss * 1024 / 1024**3  # KiB on Linux
            worst_seconds, worst_rss = max(worst_seconds, seconds), max(worst_rss, rss_gib)
            print(f"run {run + 1}: exit {proc.returncode}, {seconds:.2f} s, peak RSS {rss_gib:.2f} GiB")
            if run == 0:
                print(f"  {message}")
            if proc.returncode != 2 or (root / "out").exists():
                print("FAILED: the scan was not refused cleanly")
                return 1
    ok = worst_seconds < TARGET_SECONDS and worst_rss < TARGET_RSS_GIB
    print(f"worst: {worst_seconds:.2f} s (target < {TARGET_SECONDS:g} s), {worst_rss:.2f} GiB "
          f"(target < {TARGET_RSS_GIB:g} GiB): {'OK' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
