"""``versemi demo``: the default model on the bundled example scans, then (``--train``) training.

1. **Segment** every bundled example case (``examples/data``) with the default model (or ``--model``):
   Dice and HD95 per case and prompt, a labelmap + sidecar and an overlay PNG per case. Cases the
   catalogue entry lists as ``heldout`` are summarised; the others are "trained on" (no test) or
   "not listed". ``--data ../shared/data --heldout-only`` gives the numbers of the model card.
2. **Train** (``--train``, or without a default model): check the datasets, train a small model
   (stage 1, then stage 2), segment a held-out case; each step runs the sub-command a user would.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from versemi.cli import CliError
from versemi.fileio import describe_error

COMMAND = "demo"
HELP = ("segment the bundled example scans with the default model (Dice, time, overlays); "
        "--train: then run the short training demo")

HELD_OUT_CASE = "hippocampus_023"
DEMO_PROMPTS = "hippocampus_anterior,hippocampus_posterior"
TRAINING_DATASETS = ("Dataset001_Hippocampus", "Dataset004_SpleenCT")
SPLITS = {True: "held out", False: "TRAINED ON", None: "not listed"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, default=Path("examples/data"),
                        help="folder holding the example datasets (default: examples/data)")
    parser.add_argument("--output", type=Path, default=Path("demo_output"),
                        help="folder for everything the demo writes (default: demo_output)")
    parser.add_argument("--model", "-m", default=None,
                        help="checkpoint file or NAME[@VERSION] to segment with (default: the catalogue's "
                             "default model, shipped with versemi)")
    parser.add_argument("--heldout-only", action="store_true",
                        help="segment only the cases the model's catalogue entry lists as held out, e.g. "
                             "`--data ../shared/data --heldout-only` recomputes the held-out numbers of its card")
    parser.add_argument("--train", action="store_true",
                        help="then run the short training demo (train a small model on the examples, ~1.5 min "
                             "on 2 CPU cores)")
    parser.add_argument("--steps", type=int, default=None,
                        help="training demo: iterations, both stages together (default: 300)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch and SimpleITK")
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


def training_demo(args: argparse.Namespace, out: Path) -> int:
    """The training demo (``--train``): check, train a small model, segment, evaluate, overlay; in ``out``."""
    data: Path = args.data
    for name in TRAINING_DATASETS:
        if not (data / name / "dataset.json").is_file():
            raise CliError(f"{data / name}: example dataset not found (run from the repository root or pass --data)")
    out.mkdir(parents=True, exist_ok=True)
    steps = args.steps or 300
    started = time.perf_counter()

    _step("1/5 check the example datasets")
    for name in TRAINING_DATASETS:
        _run(["check-dataset", str(data / name)])

    t = _step("2/5 train a small VerSemi model (stage 1: labeled + CutMix; stage 2: + unlabeled scans)")
    import yaml

    config_path = out / "config.yaml"
    config_path.write_text(yaml.safe_dump(demo_config(data, out, steps), sort_keys=False))
    _run(["train", str(config_path), "--stage", "all", "--device", args.device])
    from versemi.training.checkpointing import final_checkpoint

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
    print(f"\nTraining demo finished in {time.perf_counter() - started:.0f} s. Outputs in {out}/: "
          f"train/ (checkpoints, logs), predictions/, metrics/, {png.name}")
    return 0


# --- the default model on the bundled examples -------------------------------------------------------


def _model(args: argparse.Namespace) -> tuple[Path, Any]:
    """The checkpoint to segment with and its catalogue entry (None when none describes it).

    Raises:
        versemi.models.NoDefaultModelError: no ``--model`` and no default model in the catalogue.
    """
    from versemi.cli._inference_args import resolve_checkpoint
    from versemi.models import lookup_catalogue, model_record_for_path

    path = resolve_checkpoint(args.model)
    catalogue = lookup_catalogue()
    record = model_record_for_path(path, catalogue)
    entry = catalogue.find(record.name, record.version) if record is not None else None
    return path, entry


def _fmt(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if value == value and value not in (float("inf"), float("-inf")) else "-"


def segment_examples(args: argparse.Namespace, checkpoint: Path, entry: Any, out: Path) -> dict[str, Any]:
    """Segment every labeled example case with the model; print and return per-case, per-prompt results.

    Args:
        args: the demo's options (``data``, ``device``, ``threads``).
        checkpoint: the model file (verified when it came from the catalogue).
        entry: its catalogue entry (``heldout`` lists), or None.
        out: the output folder (``predictions/<dataset>/``, ``overlays/``, ``results.json``).

    Returns:
        The results document written to ``out/results.json``.
    """
    import SimpleITK as sitk

    from versemi.evaluation.labeled import (
        find_labeled_cases,
        prompt_values,
        reference_in_prediction_values,
        score_case,
    )
    from versemi.inference.predictor import Predictor
    from versemi.visualize import save_overlay_png

    cases = find_labeled_cases(args.data)
    if getattr(args, "heldout_only", False):
        if entry is None or not entry.heldout:
            raise CliError("--heldout-only: the model's catalogue entry lists no held-out cases")
        cases = [c for c in cases if entry.is_heldout(c.dataset, c.case)]
    if not cases:
        raise CliError(f"{args.data}: no labeled example case found")
    t0 = time.perf_counter()
    predictor = Predictor(checkpoint, device=args.device, threads=args.threads)
    info = predictor.model_info
    spec = f"{info['name']}@{info['version']}" if info.get("version") else info["name"]
    how = "shipped with versemi" if entry is not None and entry.embedded_path is not None and \
        checkpoint == entry.embedded_path else str(checkpoint)
    print(f"model {spec} ({how}; SHA-256 {str(info['sha256'])[:12]}...) loaded in "
          f"{time.perf_counter() - t0:.1f} s, {predictor.device_reason}, {predictor.precision_name}")
    if entry is None or not entry.heldout:
        print("  (no list of held-out cases for this model: a case's Dice may be on training data)")
    print(f"\n{'case':<18} {'split':<11} {'prompt':<24} {'Dice':>6} {'HD95 mm':>8} {'time':>8}")
    rows: list[dict[str, Any]] = []
    for case in cases:
        pairs = prompt_values(predictor.label_space, case.dataset, case.dataset_json)
        heldout = entry.is_heldout(case.dataset, case.case) if entry is not None else None
        split = SPLITS[heldout]
        if not pairs:
            print(f"{case.case:<18} {split:<11} (skipped: the model segments none of {case.dataset}'s labels)")
            continue
        values = dict(pairs)
        labelmap_path = out / "predictions" / case.dataset / f"{case.case}.nii.gz"
        t = time.perf_counter()
        written = predictor.predict_file(case.image, labelmap_path, [pid for pid, _ in pairs])
        seconds = round(time.perf_counter() - t, 2)
        result = written.result
        reference = sitk.ReadImage(str(case.label))
        scores = score_case(result.labelmap, result.labels, reference, values, str(labelmap_path), str(case.label))
        png = save_overlay_png(
            sitk.ReadImage(str(case.image)), result.labelmap, {e.value: e.color for e in result.labels},
            out / "overlays" / f"{case.case}.png", {e.value: e.name for e in result.labels},
            reference=reference_in_prediction_values(reference, result.labels, values),
        )
        for i, score in enumerate(scores):
            first = i == 0
            print(f"{case.case if first else '':<18} {split if first else '':<11} {score.prompt:<24} "
                  f"{_fmt(score.dice):>6} {_fmt(score.hd95, 1):>8} {f'{seconds:.1f} s' if first else '':>8}")
        rows.append({"dataset": case.dataset, "case": case.case, "split": split, "heldout": heldout,
                     "seconds": seconds, "labelmap": str(written.output), "overlay": str(png),
                     "prompts": [score.to_dict() for score in scores]})
    summary = _summary(rows)
    if summary:
        print("\nHeld-out cases (never trained on), mean per prompt:")
        for name, item in summary.items():
            hd95 = f"{item['mean_hd95_mm']:.2f} mm" if item["mean_hd95_mm"] is not None else "-"
            empty = f" ({item['hd95_undefined']} case(s) without HD95: an empty mask)" if item["hd95_undefined"] else ""
            # in percent with one decimal, as the model card prints them
            print(f"  {name:<24} Dice {100 * item['mean_dice']:.1f} %  HD95 {hd95} over {item['cases']} case(s){empty}")
    trained = sorted({r["case"] for r in rows if r["heldout"] is False})
    if trained:
        print(f"Trained on (Dice shown, not a test): {', '.join(trained)}")
    card_dice = dict(entry.heldout_dice) if entry is not None else {}
    if card_dice:
        # Every prompt's number, also those the bundled examples cannot show (their data may not be copied).
        print("\nEvery prompt's held-out Dice (the model card; `versemi models info` prints it):")
        for name, dice in card_dice.items():
            print(f"  {name:<24} Dice {100 * dice:.1f} %")
    document = {"model": {**info, "catalogue_entry": entry.spec if entry is not None else None},
                "device": str(predictor.device), "precision": predictor.precision_name,
                "cases": rows, "heldout_mean": summary, "card_heldout_dice": card_dice}
    from versemi.fileio import atomic_write_json

    atomic_write_json(out / "results.json", document)
    print(f"\nlabelmaps: {out / 'predictions'}/, overlays: {out / 'overlays'}/, numbers: {out / 'results.json'}")
    return document


def _summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean Dice and HD95 per prompt over the held-out cases (HD95 over the cases where it is defined)."""
    scores: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["heldout"] is True:
            for score in row["prompts"]:
                scores.setdefault(score["prompt"], []).append(score)
    summary = {}
    for name, items in scores.items():
        hd95 = [s["hd95_mm"] for s in items if s["hd95_mm"] is not None]
        summary[name] = {"mean_dice": round(sum(s["dice"] for s in items) / len(items), 6), "cases": len(items),
                         "mean_hd95_mm": round(sum(hd95) / len(hd95), 2) if hd95 else None,
                         "hd95_undefined": len(items) - len(hd95)}
    return summary


def run(args: argparse.Namespace) -> int:
    from versemi.models import NoDefaultModelError

    out: Path = args.output
    if not args.data.is_dir():
        raise CliError(f"{args.data}: example data not found (run from the repository root or pass --data)")
    started = time.perf_counter()
    try:
        checkpoint, entry = _model(args)
    except NoDefaultModelError as exc:
        print(f"versemi demo: {exc}\nversemi demo: no default model is available, so the demo trains a small one "
              "instead (--train)", file=sys.stderr)
        return training_demo(args, out / "training")
    except ValueError as exc:  # a model that is not installed or fails verification, an unreadable file
        raise CliError(str(exc)) from None
    out.mkdir(parents=True, exist_ok=True)
    _step(f"segment the bundled example scans in {args.data} with the {'given' if args.model else 'default'} model")
    try:
        segment_examples(args, checkpoint, entry, out)
    except (ValueError, OSError) as exc:
        raise CliError(describe_error(exc)) from None
    print(f"\nSegmented in {time.perf_counter() - started:.0f} s.")
    if args.train:
        return training_demo(args, out / "training")
    return 0
