"""Our predictor vs the VerSemi reference implementation's inference procedure, same network.

The reference (maxwell0027/VerSemi, inherited from UA-MT's ``test_all_case``) slides 96^3 windows
with a stride of 16 voxels in-plane and 4 through-plane, runs the WHOLE network once per window
AND per task prompt, and averages the probabilities uniformly. It is reimplemented here (no code
copied) on the same network and the same preprocessed volume, and compared with
``Predictor.predict`` (Gaussian-weighted windows at 50 % overlap, one backbone pass per window for
all prompts, restore to the input grid) at 4 prompts on a real left-atrium MRI.

Printed: the number of network passes of each, wall times (the reference's time covers only its
window loop; ours is end to end: preprocessing, sliding window, restore), the speed-up and the Dice
agreement of the two labelmaps per prompt (both turned into labels by the same rule: most probable
prompt where its probability >= 0.5).

Both run the network on the same input: the left-atrium plan's grid and window of the model (a
model with per-dataset plans predicts every prompt here on the left atrium's plan: ``--dataset``),
the reference with its strides (16 voxels in-plane, 4 through-plane) and one pass per prompt. How
much faster ours is depends on that grid and window: the reference's own set-up (96^3 windows on the
0.625 mm grid, 112 windows for a 183 x 140 x 88 scan) gives ~18x; a model planned at 1.2 mm with a
56 x 48 x 48 window covers the same scan with a few windows either way, so the ratio is mostly the
4 prompts per pass.

Without ``--model`` the network is the default architecture with RANDOM weights: timings are
representative, but the agreement of two random networks' outputs says little; pass a checkpoint
trained on the left atrium (``versemi train``) for a meaningful agreement.

Usage::

    .venv/bin/python bench/reference_inference.py [--data ../shared/data] [--case NAME] [--model ckpt.pt]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from versemi.checkpoint import Checkpoint
from versemi.data.plans import Plans
from versemi.data.preprocessing import PreprocessingSpec, preprocess_case, restore_to_input_grid
from versemi.inference import Predictor
from versemi.labels import LabelSpace
from versemi.network import build_model

DATASET = "Dataset002_LeftAtrium"
PROMPTS = ["left_atrium", "right_ventricle", "myocardium", "left_ventricle"]


def default_data_dir() -> Path:
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def random_checkpoint(path: Path, patch: int = 96, base_filters: int = 16) -> Path:
    """Default architecture (reference V-Net, 16 filters) over LA + ACDC prompts; LA spacing, 96^3."""
    space = LabelSpace.from_dataset_labels({
        "Dataset002_LeftAtrium": {"labels": {"background": 0, "left_atrium": 1}},
        "Dataset003_ACDC": {"labels": {"background": 0, "right_ventricle": 1, "myocardium": 2, "left_ventricle": 3}},
    })
    torch.manual_seed(0)
    model = build_model({"num_prompts": len(space), "base_filters": base_filters})
    spec = PreprocessingSpec(target_spacing=(0.625, 0.625, 0.625), modality="MR")
    return Checkpoint(model.config, space, Plans.single(spec, [patch] * 3, space.datasets), model.state_dict()).save(path)


def reference_sliding_window(
    model: torch.nn.Module, volume: np.ndarray, prompt_ids: list[int], patch: int | tuple[int, int, int] = 96,
    stride_inplane: int = 16, stride_through: int = 4,
) -> tuple[np.ndarray, int]:
    """The reference procedure: per window, per prompt, a full forward pass; uniform averaging.

    ``volume`` is ``(z, y, x)``; z is the through-plane axis; ``patch`` one size or ``(z, y, x)``.
    Returns the ``(P, z, y, x)`` probabilities and the number of network passes.
    """
    pz, py, px = (patch, patch, patch) if isinstance(patch, int) else tuple(int(p) for p in patch)
    sizes = (pz, py, px)
    pads = [max(p - n, 0) for p, n in zip(sizes, volume.shape)]
    padded = np.pad(volume, [(p // 2, p - p // 2) for p in pads], mode="constant")
    dz, dy, dx = padded.shape
    strides = (stride_through, stride_inplane, stride_inplane)
    steps = [math.ceil((n - p) / s) + 1 for n, p, s in zip(padded.shape, sizes, strides)]
    score = np.zeros((len(prompt_ids), dz, dy, dx), dtype=np.float32)
    count = np.zeros((dz, dy, dx), dtype=np.float32)
    passes = 0
    with torch.inference_mode():
        for iz in range(steps[0]):
            z = min(strides[0] * iz, dz - pz)
            for iy in range(steps[1]):
                y = min(strides[1] * iy, dy - py)
                for ix in range(steps[2]):
                    x = min(strides[2] * ix, dx - px)
                    box = (slice(z, z + pz), slice(y, y + py), slice(x, x + px))
                    window = torch.from_numpy(np.ascontiguousarray(padded[box]))
                    for k, pid in enumerate(prompt_ids):  # the reference: one whole forward per task
                        prob = torch.sigmoid(model(window[None, None], torch.tensor([pid])))[0, 0].numpy()
                        score[(k, *box)] += prob
                        passes += 1
                    count[box] += 1
    probs = score / count[None]
    unpad = tuple(slice(p // 2, p // 2 + n) for p, n in zip(pads, volume.shape))
    return probs[(slice(None), *unpad)], passes


def labels_from_probabilities(probs: np.ndarray) -> np.ndarray:
    winner = probs.argmax(axis=0).astype(np.uint8) + 1
    return np.where(probs.max(axis=0) >= 0.5, winner, 0).astype(np.uint8)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return float("nan") if total == 0 else float(2 * np.logical_and(a, b).sum() / total)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=default_data_dir())
    parser.add_argument("--case", help="case name (default: the first in imagesTr)")
    parser.add_argument("--model", type=Path, help="a checkpoint with the four prompts (default: random weights)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--patch", type=int, default=96, help="window size of the random model (quick checks)")
    parser.add_argument("--base-filters", type=int, default=16, help="width of the random model (quick checks)")
    parser.add_argument("--precision", choices=("fp32", "auto"), default="fp32",
                        help="our predictor's arithmetic: fp32 (the reference's, like for like; default) or auto "
                             "(what `versemi predict` uses: bf16 on a CPU with native bf16)")
    args = parser.parse_args()

    images = args.data / DATASET / "imagesTr"
    if not images.is_dir():
        print(f"skipped: {images} not found (the left-atrium data is optional; pass --data)")
        return 0
    files = sorted(images.glob("*_0000.nii.gz"))
    if args.case:
        files = [f for f in files if f.name.startswith(args.case)]
    if not files:
        print(f"skipped: no case {args.case!r} in {images}")
        return 0
    torch.set_num_threads(args.threads)
    print(f"machine: {os.cpu_count()} logical CPUs, load average {os.getloadavg()[0]:.1f}, "
          f"torch {torch.__version__}, {args.threads} threads; ours in {args.precision}, the reference in fp32")

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.model or random_checkpoint(Path(tmp) / "random.pt", args.patch, args.base_filters)
        predictor = Predictor(ckpt, device="cpu", threads=args.threads, postprocess=False, precision=args.precision)
        if DATASET in predictor.plans.datasets:  # every prompt on the left atrium's plan, as the reference
            predictor = Predictor(ckpt, device="cpu", threads=args.threads, postprocess=False, dataset=DATASET,
                                  precision=args.precision)
        prompt_ids = predictor.resolve_prompts(PROMPTS)
        image = sitk.ReadImage(str(files[0]))
        print(f"case {files[0].name}: size {image.GetSize()} (x, y, z), spacing {image.GetSpacing()} mm; "
              f"model {'random weights' if args.model is None else args.model}; prompts {PROMPTS}")

        predictor.predict(image, PROMPTS[:1])  # warm-up (first-call allocations, oneDNN kernels)
        # CPU time as well as wall time: on a shared machine the load changes between the two runs.
        start, cpu_start = time.perf_counter(), time.process_time()
        ours = predictor.predict(image, PROMPTS)
        ours_s, ours_cpu = time.perf_counter() - start, time.process_time() - cpu_start
        ours_windows = ours.info

        group = predictor.preprocessing_groups(prompt_ids)[0]
        case = preprocess_case(image, group.spec)  # the same network input for the reference
        start, cpu_start = time.perf_counter(), time.process_time()
        ref_probs, passes = reference_sliding_window(predictor.model, case.image, prompt_ids,
                                                     patch=group.patch_size_zyx)
        ref_s, ref_cpu = time.perf_counter() - start, time.process_time() - cpu_start
        ref_labels = sitk.GetArrayFromImage(
            restore_to_input_grid(labels_from_probabilities(ref_probs), case.record, is_label=True)
        )

    from versemi.inference.sliding import count_windows

    n_ours = count_windows(case.image.shape, group.patch_size_zyx, predictor.overlap)
    our_labels = sitk.GetArrayFromImage(ours.labelmap)
    print(f"reference: {passes} network passes ({passes // len(PROMPTS)} windows x {len(PROMPTS)} prompts), "
          f"{ref_s:.1f} s wall, {ref_cpu:.1f} s CPU (window loop only)")
    print(f"ours:      {n_ours} network passes (windows, all prompts each), {ours_s:.1f} s wall, {ours_cpu:.1f} s CPU "
          f"end to end (parts {ours_windows['seconds']})")
    print(f"speed-up:  {ref_s / ours_s:.1f}x wall, {ref_cpu / ours_cpu:.1f}x CPU time, end to end; "
          f"{ref_s / ours_windows['seconds']['inference']:.1f}x wall for the sliding window only; "
          f"network passes {passes / n_ours:.1f}x fewer")
    for k, name in enumerate(PROMPTS, start=1):
        a, b = our_labels == k, ref_labels == k
        print(f"  Dice agreement {name:16s} {dice(a, b):.3f}   (voxels: ours {int(a.sum())}, reference {int(b.sum())})")
    print(f"  labelmaps identical on {np.mean(our_labels == ref_labels):.2%} of voxels")
    # The criterion: the two outputs' Dice against the manual label agree (target: within 0.5 points).
    label_file = args.data / DATASET / "labelsTr" / files[0].name.replace("_0000.nii.gz", ".nii.gz")
    if label_file.is_file():
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(label_file))) == 1
        ours_dice, ref_dice = dice(our_labels == 1, truth), dice(ref_labels == 1, truth)
        print(f"  Dice vs manual left_atrium label: ours {100 * ours_dice:.1f}, reference {100 * ref_dice:.1f}, "
              f"difference {100 * (ours_dice - ref_dice):+.1f} points (target: within 0.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
