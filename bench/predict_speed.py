"""Prediction speed and memory of ``versemi predict`` (the Predictor) on CPU.

Measures, printing the machine description first (CPU, cores, load average - the numbers are only
comparable on the same, quiet machine):

1. **prompt scaling**: time of ONE prediction with 8 prompts / with 1 prompt on the same scan with
   the same model (target <= 1.25: the backbone runs once per window for all prompts);
2. **CT-sized volume**: 512 x 512 x 300 voxels, 0.78 x 0.78 x 1.5 mm (a typical abdominal CT), a
   model at 1.5 mm with 8 prompts + the synthetic one, ``--prompts all``, 2 threads: wall time and
   peak RSS of a real ``versemi predict`` process, default and ``--quality fast`` (targets: <= 4 GB,
   <= 60 s default, <= 15 s fast); fast mode once more without the glibc malloc tuning the CLI
   applies (``versemi.inference.malloc``), to keep that change measurable.

The model is the default architecture (reference V-Net, 16 filters, depth 5, 96^3 windows) with
random weights: speed and memory do not depend on the weight values. Each measured prediction runs
in its own process, so peak RSS (``ru_maxrss`` of the child) belongs to that prediction alone.

Usage::

    .venv/bin/python bench/predict_speed.py                      # everything
    .venv/bin/python bench/predict_speed.py --sections scaling   # only the prompt scaling
    .venv/bin/python bench/predict_speed.py --sections ct --qualities fast --depth 300
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from versemi.checkpoint import Checkpoint
from versemi.data.plans import Plans
from versemi.data.preprocessing import PreprocessingSpec
from versemi.labels import LabelSpace
from versemi.network import build_model

ORGANS = ["liver", "spleen", "left_kidney", "right_kidney", "pancreas", "stomach", "gallbladder", "aorta"]


def machine_description() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    mem = ""
    try:
        import psutil

        mem = f", {psutil.virtual_memory().total / 2**30:.0f} GiB RAM"
    except ImportError:
        pass
    return (f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} logical CPUs{mem}, "
            f"load average {load}; Python {platform.python_version()}, torch {torch.__version__}, "
            f"SimpleITK {sitk.Version.VersionString()}")


def make_checkpoint(path: Path, spacing: float = 1.5, patch: int = 96, base_filters: int = 16) -> Path:
    """Default architecture, 8 CT organ prompts + the synthetic one, random weights."""
    space = LabelSpace.from_dataset_labels(
        {"Dataset100_Abdomen": {"labels": {"background": 0, **{n: i + 1 for i, n in enumerate(ORGANS)}}}}
    )
    torch.manual_seed(0)
    model = build_model({"num_prompts": len(space), "base_filters": base_filters})
    spec = PreprocessingSpec(target_spacing=(spacing,) * 3, modality="CT")
    return Checkpoint(model.config, space, Plans.single(spec, [patch] * 3, space.datasets), model.state_dict()).save(path)


def make_ct(path: Path, size_xyz: tuple[int, int, int], spacing_xyz: tuple[float, float, float]) -> Path:
    """A CT-like int16 volume: air around an elliptic body cylinder with a few denser 'organs'.

    Built slab by slab so generating it needs little memory (peak RSS is measured elsewhere anyway).
    """
    nx, ny, nz = size_xyz
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:ny, 0:nx].astype(np.float32)
    cx, cy = nx / 2, ny / 2
    body = ((x - cx) / (0.45 * nx)) ** 2 + ((y - cy) / (0.35 * ny)) ** 2 <= 1
    organs = [((0.35, 0.45), 0.12, 60), ((0.65, 0.45), 0.08, 45), ((0.5, 0.6), 0.05, 150)]
    array = np.empty((nz, ny, nx), dtype=np.int16)
    for z in range(nz):
        sl = np.where(body, 40, -1000).astype(np.float32)
        for (ox, oy), r, hu in organs:
            rz = r * (1 - abs(z / nz - 0.5))
            sl[((x / nx - ox) ** 2 + (y / ny - oy) ** 2) <= rz ** 2] = hu
        sl += rng.normal(0, 20, size=sl.shape).astype(np.float32)
        array[z] = sl.astype(np.int16)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing_xyz)
    image.SetOrigin((-200.0, -180.0, -300.0))
    sitk.WriteImage(image, str(path), useCompression=False)
    return path


def run_cli(args: list[str], threads: int, malloc_tuning: bool = True) -> dict:
    """Run ``versemi predict`` in a child process; wall and CPU time, page faults, peak RSS, done line."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if not malloc_tuning:
        env["VERSEMI_NO_MALLOC_TUNING"] = "1"
    usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    before = usage0.ru_maxrss
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "versemi.cli", "predict", *args, "--threads", str(threads),
                           "--progress", "json"], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_kib = usage1.ru_maxrss
    if proc.returncode != 0:
        raise RuntimeError(f"versemi predict failed: {proc.stderr[-2000:]}")
    done = json.loads(proc.stdout.strip().splitlines()[-1])
    # ru_maxrss of children is the maximum over all children so far: only trust it when it grew.
    return {
        "wall_s": wall,
        "cpu_s": (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime),
        "sys_s": usage1.ru_stime - usage0.ru_stime,
        "minor_faults": usage1.ru_minflt - usage0.ru_minflt,
        "peak_rss_gib": peak_kib / 2**20 if peak_kib > before else float("nan"),
        "done": done,
    }


def section_scaling(workdir: Path, threads: int, repeats: int) -> None:
    from versemi.inference import Predictor

    torch.set_num_threads(threads)
    ckpt = make_checkpoint(workdir / "scaling.pt")
    predictor = Predictor(ckpt, device="cpu", threads=threads)
    # A scan of 216 mm per axis = 144 voxels at 1.5 mm: 2 x 2 x 2 windows of 96 at 50 % overlap.
    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray((rng.normal(0, 100, (144, 192, 192))).astype(np.int16))
    image.SetSpacing((1.125, 1.125, 1.5))
    results = {}
    for prompts in ("liver", ",".join(ORGANS)):
        predictor.predict(image, prompts)  # warm-up
        times, cpu = [], []
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            res = predictor.predict(image, prompts)
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        results[len(prompts.split(","))] = (float(np.median(times)), float(np.median(cpu)), res.info["seconds"])
    print(f"\n[prompt scaling] scan {list(image.GetSize())} (x, y, z), {threads} threads, median of {repeats}")
    for n, (t, c, parts) in results.items():
        print(f"  {n} prompt(s): {t:7.2f} s wall, {c:7.2f} s CPU   parts: {parts}")
    print(f"  ratio 8 prompts / 1 prompt: {results[8][0] / results[1][0]:.2f} wall, "
          f"{results[8][1] / results[1][1]:.2f} CPU time   (target <= 1.25)")


def section_ct(workdir: Path, threads: int, depth: int, qualities: list[str], no_tuning: list[str]) -> None:
    ckpt = make_checkpoint(workdir / "ct.pt")
    size = (512, 512, depth)
    spacing = (0.78, 0.78, 1.5)
    ct = make_ct(workdir / "ct.nrrd", size, spacing)
    print(f"\n[CT volume] {size[0]}x{size[1]}x{size[2]} voxels at {spacing} mm, model at 1.5 mm, "
          f"96^3 windows, --prompts all (8), {threads} threads, one process per run")
    runs = [(q, True) for q in qualities] + [(q, False) for q in no_tuning]
    for quality, tuning in runs:
        out = workdir / f"ct_seg_{quality}.nii.gz"
        r = run_cli(["--model", str(ckpt), "--input", str(ct), "--output", str(out), "--prompts", "all",
                     "--device", "cpu", "--quality", quality], threads, malloc_tuning=tuning)
        target = "<= 60 s" if quality == "default" else "<= 15 s"
        rss = r["peak_rss_gib"]
        # RUSAGE_CHILDREN keeps the largest child's peak: a smaller later one cannot be seen.
        rss_text = f"{rss:.2f} GiB" if rss == rss else "not measurable here (below an earlier run's)"
        print(f"  --quality {quality:7s}{'' if tuning else ' (glibc malloc NOT tuned)'}: wall {r['wall_s']:6.1f} s "
              f"(target {target}), CPU {r['cpu_s']:6.1f} s (sys {r['sys_s']:.1f} s, "
              f"{r['minor_faults'] / 1e6:.2f} M minor page faults), peak RSS {rss_text} "
              f"(target <= 4 GB)")
        sidecar = json.loads(Path(r["done"]["sidecar"]).read_text())
        print(f"    spacing {sidecar['prediction']['spacing_mm']} mm, overlap {sidecar['prediction']['overlap']}, "
              f"predictor parts {sidecar['prediction']['seconds']} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", default="scaling,ct")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--depth", type=int, default=300, help="slices of the CT volume")
    parser.add_argument("--qualities", default="fast,default")
    parser.add_argument("--without-malloc-tuning", default="fast",
                        help="qualities to run again without the glibc malloc tuning (comma-separated, or '')")
    args = parser.parse_args()
    print(machine_description())
    with tempfile.TemporaryDirectory(prefix="versemi-bench-") as tmp:
        workdir = Path(tmp)
        sections = args.sections.split(",")
        if "scaling" in sections:
            section_scaling(workdir, args.threads, args.repeats)
        if "ct" in sections:
            section_ct(workdir, args.threads, args.depth, args.qualities.split(","),
                       [q for q in args.without_malloc_tuning.split(",") if q])


if __name__ == "__main__":
    main()
