"""CPU time of the full sweep vs coarse-to-fine on a whole-head-sized 1 mm MRI volume (bundled data only).

    OMP_NUM_THREADS=1 .venv/bin/python bench/coarse_to_fine.py [--threads 1] [--model FILE]

The volume (165 x 225 x 167 mm at 1 mm, like a whole-head T1) is a mosaic of shuffled blocks of the bundled
hippocampus crops (examples/data) with one crop and the left-right mirror of another pasted on either side
(:func:`versemi.data.synthetic.mosaic_canvas`). Both predictions use the default model (or ``--model``) and its
catalogue's localiser, the ``paired`` rule for the hippocampus prompts, and report CPU seconds (process time),
their ratio (target: coarse-to-fine <= 1/5 of the full sweep), the located boxes and each side's mean Dice.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
CROPS = REPO / "examples" / "data" / "Dataset001_Hippocampus"
PROMPTS = "hippocampus_anterior,hippocampus_posterior"
HEAD_MM_ZYX = (167, 225, 165)


def head_volume(seed: int = 0) -> tuple[sitk.Image, np.ndarray]:
    """The whole-head-sized mosaic and its label (see the module docstring)."""
    from versemi.data.synthetic import mosaic_canvas

    images = sorted((CROPS / "imagesTr").glob("*_0000.nii.gz"))
    reference = sitk.ReadImage(str(images[0]))
    arrays = [sitk.GetArrayFromImage(sitk.ReadImage(str(p))).astype(np.float32) for p in images]
    labels = [sitk.GetArrayFromImage(sitk.ReadImage(str(CROPS / "labelsTr" / p.name.replace("_0000", ""))))
              for p in images]
    left, right = arrays[0], arrays[1][:, :, ::-1]
    targets = [(left, labels[0]), (right, labels[1][:, :, ::-1])]
    z, y, x = HEAD_MM_ZYX
    corners = [(z // 2 - 20, y // 2 - 10, x // 2 - 15 - left.shape[2]), (z // 2 - 20, y // 2 - 10, x // 2 + 15)]
    canvas, truth, _ = mosaic_canvas(np.random.default_rng(seed), HEAD_MM_ZYX, arrays[2:], targets, positions=corners)
    image = sitk.GetImageFromArray(canvas * 500.0)
    image.SetSpacing((1.0, 1.0, 1.0))
    image.SetDirection(reference.GetDirection())
    return image, truth


def side_dice(labelmap: sitk.Image, truth: np.ndarray) -> list[float]:
    """Mean Dice of the two labels on each half (left-right) of the volume."""
    array = sitk.GetArrayFromImage(labelmap)
    half = array.shape[2] // 2
    out = []
    for side in (slice(0, half), slice(half, None)):
        p, t = array[:, :, side], truth[:, :, side]
        scores = [2 * ((p == k) & (t == k)).sum() / max(1, (p == k).sum() + (t == k).sum()) for k in (1, 2)]
        out.append(round(float(np.mean(scores)), 4))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=None, help="default: the packaged default model")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip-full", action="store_true", help="coarse-to-fine only (the full sweep takes minutes)")
    args = p.parse_args(argv)
    from versemi.checkpoint import Checkpoint
    from versemi.inference import Predictor
    from versemi.models import resolve_default_model

    model = args.model or resolve_default_model()[1]
    payload = Checkpoint.load(model).to_payload()
    paired = {name: "paired" for name in PROMPTS.split(",")}
    image, truth = head_volume()
    print(f"volume: {list(image.GetSize())} voxels (x, y, z) at 1 mm; model {model.name}", flush=True)
    results = {}
    located = Predictor(model, device="cpu", threads=args.threads)
    located.postprocessing = {**located.postprocessing, **paired}
    runs = [("coarse_to_fine", located)]
    if not args.skip_full:
        full = Predictor(payload, device="cpu", threads=args.threads, coarse_to_fine=False)
        full.postprocessing = {**full.postprocessing, **paired}
        runs.append(("full_sweep", full))
    for name, predictor in runs:
        start = time.process_time()
        result = predictor.predict(image, PROMPTS)
        seconds = time.process_time() - start
        results[name] = {"cpu_seconds": round(seconds, 1), "side_dice": side_dice(result.labelmap, truth),
                         "localised": result.info["preprocessing"][0].get("localised")}
        print(f"{name}: {json.dumps(results[name])}", flush=True)
    if "full_sweep" in results:
        ratio = results["coarse_to_fine"]["cpu_seconds"] / results["full_sweep"]["cpu_seconds"]
        print(f"ratio coarse-to-fine / full sweep: {ratio:.3f} (target <= 0.2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
