"""Where a checkpoint's prompts fire on labeled scans: each prompt thresholded on its own (no labelmap,
no post-processing), its Dice against its structure, and the share of its voxels outside every labeled
structure of the scan (false positives far from the anatomy show up there, not in the Dice alone).
``--also`` probes prompts of other datasets on the same scans (no Dice: only how much they fire), with
the scans preprocessed as the probed dataset's own (as VerSemi's consistency term sees them).

A diagnostic for a run that scores badly (``bench/semisup.py`` evaluates the labelmap only):

    .venv/bin/python bench/prompt_probe.py RUN/train/stage2/last.pt ../shared/data/Dataset003_ACDC \\
        patient080_frame01 patient001_frame01 --synthetic --also left_atrium hippocampus_anterior
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def dice(prediction: np.ndarray, reference: np.ndarray) -> float | None:
    total = int(prediction.sum()) + int(reference.sum())
    return 2.0 * int((prediction & reference).sum()) / total if total else None


def probe_case(predictor, dataset, case: str, extra: list[str]) -> dict:
    import SimpleITK as sitk

    labels = {n: v for n, v in dataset.labels.items() if v > 0}
    image_path = dataset.images_dir / f"{case}_0000{dataset.file_ending}"
    label_path = dataset.labels_dir / f"{case}{dataset.file_ending}"
    for path in (image_path, label_path):
        if not path.is_file():
            raise SystemExit(f"prompt_probe: {path}: no such file")
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(label_path)))
    prompts = list(labels) + [e for e in extra if e not in labels]
    result = predictor.predict(sitk.ReadImage(str(image_path)), prompts, return_probabilities=True,
                               image_name=str(image_path))
    anatomy = reference > 0
    row: dict = {"case": case, "prompts": {}}
    for name, probability in (result.probabilities or {}).items():
        mask = sitk.GetArrayFromImage(probability) > 0.5
        target = anatomy if name == "all_foreground" else reference == labels[name] if name in labels else None
        voxels = int(mask.sum())
        row["prompts"][name] = {
            "dice": dice(mask, target) if target is not None else None,
            "voxels": voxels,
            "reference_voxels": int(target.sum()) if target is not None else None,
            "outside_anatomy": int((mask & ~anatomy).sum()) / voxels if voxels else 0.0,
        }
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("dataset", type=Path, help="nnU-Net dataset folder (dataset.json, imagesTr, labelsTr)")
    p.add_argument("cases", nargs="+", help="case identifiers (imagesTr/<case>_0000.nii.gz)")
    p.add_argument("--synthetic", action="store_true", help="also probe the synthetic all-foreground prompt")
    p.add_argument("--also", nargs="+", default=[], metavar="PROMPT",
                   help="prompts of other datasets to probe on these scans (how much they fire)")
    p.add_argument("--json", action="store_true", help="print one JSON object per case")
    args = p.parse_args(argv)

    import torch

    from versemi.data.dataset import DatasetError, NnUNetDataset
    from versemi.inference.predictor import Predictor

    torch.set_num_threads(1)
    try:
        dataset = NnUNetDataset(args.dataset)
        dataset.labels
    except DatasetError as exc:
        raise SystemExit(f"prompt_probe: {exc}") from None
    predictor = Predictor(args.checkpoint, device="cpu", postprocess=False, coarse_to_fine=False,
                          modality_guard=False, dataset=dataset.name)
    for case in args.cases:
        extra = (["all_foreground"] if args.synthetic else []) + list(args.also)
        row = probe_case(predictor, dataset, case, extra)
        if args.json:
            print(json.dumps(row))
            continue
        cells = [f"{n} Dice {('%.3f' % s['dice']) if s['dice'] is not None else '-'}, {s['voxels']} voxels, "
                 f"{100 * s['outside_anatomy']:.0f} % outside" for n, s in row["prompts"].items()]
        print(f"{case}: " + "; ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
