"""``versemi demo``: the whole pipeline on the example data bundled in the repository.

check the datasets -> train a small VerSemi model (stage 1 then stage 2, with unlabeled scans) ->
segment a held-out case with chosen prompts -> labelmap + sidecar + PNG overlay + metrics.
Each step calls the same sub-command a user would run, so the demo exercises the real paths.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from versemi.cli import CliError

COMMAND = "demo"
HELP = "Run the whole pipeline (check, train, predict, evaluate, overlay) on the bundled example data."

HELD_OUT_CASE = "hippocampus_023"
DEMO_PROMPTS = "hippocampus_anterior,hippocampus_posterior"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, default=Path("examples/data"),
                        help="folder holding the example datasets (default: examples/data)")
    parser.add_argument("--output", type=Path, default=Path("demo_output"),
                        help="folder for everything the demo writes (default: demo_output)")
    parser.add_argument("--steps", type=int, default=None,
                        help="training iterations, both stages together (default: 300)")
    from versemi.devices import DEVICES

    parser.add_argument("--device", default="auto", choices=DEVICES, help="training and prediction device")


def demo_config(data: Path, output: Path, steps: int) -> dict:
    """The training config of the demo: 4 labeled + 3 unlabeled hippocampus scans, 1 held out; spleen CT labeled."""
    return {
        "datasets": [
            {
                "path": str((data / "Dataset001_Hippocampus").resolve()),
                "labeled": ["hippocampus_001", "hippocampus_004", "hippocampus_007", "hippocampus_008"],
                "exclude": [HELD_OUT_CASE],
            },
            {"path": str((data / "Dataset004_SpleenCT").resolve()), "labeled": "all"},
        ],
        "target_spacing": [1.0, 1.0, 1.5],
        "patch_size": [32, 32, 32],
        "validation": {"fraction": 0.25},
        "seed": 0,
        "model": {"backbone": "vnet", "base_filters": 8, "depth": 4},
        "training": {
            "method": "versemi",
            "max_steps": steps,
            "batch_size": 2,
            "unlabeled_batch_size": 2,
            "validate_every": max(1, steps // 2),
            "checkpoint_every": max(1, steps // 2),
            "num_workers": 0,
        },
        "cache_dir": str((output / "cache").resolve()),
        "output_dir": str((output / "train").resolve()),
    }


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def _run(argv: list[str]) -> None:
    from versemi.cli import main

    code = main(argv)
    if code != 0:
        raise CliError(f"step 'versemi {' '.join(argv)}' failed with exit code {code}", exit_code=code)


def run(args: argparse.Namespace) -> int:
    data: Path = args.data
    out: Path = args.output
    for name in ("Dataset001_Hippocampus", "Dataset004_SpleenCT"):
        if not (data / name / "dataset.json").is_file():
            raise CliError(f"{data / name}: example dataset not found (run from the repository root or pass --data)")
    out.mkdir(parents=True, exist_ok=True)
    steps = args.steps or 300
    started = time.perf_counter()

    _step("1/5 check the example datasets")
    for name in ("Dataset001_Hippocampus", "Dataset004_SpleenCT"):
        _run(["check-dataset", str(data / name)])

    t = _step("2/5 train a small VerSemi model (stage 1: labeled + CutMix; stage 2: + unlabeled scans)")
    import yaml

    config_path = out / "config.yaml"
    config_path.write_text(yaml.safe_dump(demo_config(data, out, steps), sort_keys=False))
    _run(["train", str(config_path), "--stage", "all", "--device", args.device])
    from versemi.training.trainer import final_checkpoint

    checkpoint = final_checkpoint(out / "train" / "stage2")
    if checkpoint is None:
        raise CliError(f"training left no checkpoint in {out / 'train' / 'stage2'}")
    print(f"trained in {time.perf_counter() - t:.0f} s -> {checkpoint}")

    t = _step(f"3/5 segment the held-out case {HELD_OUT_CASE} with prompts {DEMO_PROMPTS}")
    image = data / "Dataset001_Hippocampus" / "imagesTr" / f"{HELD_OUT_CASE}_0000.nii.gz"
    pred_dir = out / "predictions"
    labelmap = pred_dir / f"{HELD_OUT_CASE}.nii.gz"
    _run(["predict", "--model", str(checkpoint), "--input", str(image), "--output", str(labelmap),
          "--prompts", DEMO_PROMPTS, "--device", args.device])

    _step("4/5 metrics against the manual label (Dice, HD95 and NSD in mm)")
    ref_dir = out / "reference"
    ref_dir.mkdir(exist_ok=True)
    reference = data / "Dataset001_Hippocampus" / "labelsTr" / f"{HELD_OUT_CASE}.nii.gz"
    (ref_dir / reference.name).write_bytes(reference.read_bytes())
    _run(["evaluate", "--predictions", str(pred_dir), "--labels", str(ref_dir),
          "--dataset-json", str(data / "Dataset001_Hippocampus" / "dataset.json"),
          "--output", str(out / "metrics")])

    _step("5/5 PNG overlay")
    import SimpleITK as sitk

    from versemi.visualize import save_overlay_png

    sidecar = json.loads(labelmap.with_name(f"{HELD_OUT_CASE}.json").read_text())
    colors = {int(e["value"]): e["color"] for e in sidecar["labels"]}
    names = {int(e["value"]): e["name"] for e in sidecar["labels"]}
    png = save_overlay_png(sitk.ReadImage(str(image)), sitk.ReadImage(str(labelmap)), colors,
                           out / f"{HELD_OUT_CASE}_overlay.png", names, reference=sitk.ReadImage(str(reference)))
    print(f"overlay -> {png}")
    print(f"\nDemo finished in {time.perf_counter() - started:.0f} s. Outputs in {out}/: "
          f"train/ (checkpoints, logs), predictions/, metrics/, {png.name}")
    return 0
