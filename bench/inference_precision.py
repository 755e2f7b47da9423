"""float32 vs bfloat16 prediction on the CPU: Dice against the manual labels and the time, per dataset.

``versemi predict --precision bf16`` runs the network under bfloat16 autocast where the CPU computes
bf16 natively (AVX512-BF16 or AMX); the CPU default stays float32 until this benchmark shows, on the
default model's held-out cases, that bf16 keeps Dice within 0.5 points of float32 (issue: "speed of
what users run"). Then bf16 may be the CPU
default of ``predict`` AND of training (one rule: ``versemi.devices.autocast_dtype``).

For every labeled case (``--data``: an nnU-Net dataset folder or a folder of them, e.g.
``../shared/data``), the scan is segmented twice with the same model and settings, float32 then
bfloat16 (the order alternates per case so that load drift is shared), with the prompts the model
learned from that dataset; both labelmaps are scored against the label (Dice per prompt, as
``versemi demo`` does). One untimed prediction per precision comes first (imports, first allocations). Printed per dataset: mean Dice of each, their difference in points (bf16 -
fp32), the largest per-case difference, the seconds of each (``Predictor.predict``: preprocessing,
sliding window, restore) and the speed-up fp32/bf16; then the verdict against the 0.5-point bound.

Usage::

    .venv/bin/python bench/inference_precision.py --data ../shared/data --heldout     # the default model
    .venv/bin/python bench/inference_precision.py --model runs/x/stage2/best.pt --data ../shared/data \\
        --datasets Dataset001_Hippocampus --max-cases 10 --output bench/results/precision.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from versemi.cli._inference_args import resolve_checkpoint
from versemi.devices import cpu_has_native_bf16
from versemi.evaluation.labeled import find_labeled_cases, prompt_values, score_case
from versemi.inference import Predictor
from versemi.models import lookup_catalogue, model_record_for_path

BOUND_POINTS = 0.5  # the issue's bound on |Dice(bf16) - Dice(fp32)|, in Dice points (percent)


def default_data_dir() -> Path:
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="checkpoint file or NAME[@VERSION] (default: the default model)")
    parser.add_argument("--data", type=Path, default=default_data_dir(),
                        help="an nnU-Net dataset folder or a folder of them (default: ../shared/data)")
    parser.add_argument("--datasets", nargs="*", default=None, help="only these dataset folders")
    parser.add_argument("--heldout", action="store_true",
                        help="only the cases the model's catalogue entry lists as held out")
    parser.add_argument("--max-cases", type=int, default=None, help="at most this many cases per dataset")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--quality", default="default", choices=["default", "fast"])
    parser.add_argument("--output", type=Path, default=None, help="also write the numbers as JSON here")
    return parser.parse_args(argv)


def select_cases(args: argparse.Namespace, entry: Any) -> list[Any]:
    cases = find_labeled_cases(args.data)
    if args.datasets:
        cases = [c for c in cases if c.dataset in set(args.datasets)]
    if args.heldout:
        if entry is None or not entry.heldout:
            raise SystemExit("--heldout: the model has no catalogue entry with held-out cases")
        cases = [c for c in cases if entry.is_heldout(c.dataset, c.case)]
    if args.max_cases is not None:
        kept: dict[str, int] = {}
        chosen = []
        for case in cases:
            if kept.get(case.dataset, 0) < args.max_cases:
                kept[case.dataset] = kept.get(case.dataset, 0) + 1
                chosen.append(case)
        cases = chosen
    return cases


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure and return the per-case and per-dataset numbers (see the module docstring)."""
    checkpoint = resolve_checkpoint(args.model)
    catalogue = lookup_catalogue()
    record = model_record_for_path(checkpoint, catalogue)
    entry = catalogue.find(record.name, record.version) if record is not None else None
    predictors = {
        "fp32": Predictor(checkpoint, device="cpu", precision="fp32", threads=args.threads, quality=args.quality),
        "bf16": Predictor(checkpoint, device="cpu", precision="bf16", threads=args.threads, quality=args.quality),
    }
    label_space = predictors["fp32"].label_space
    cases = select_cases(args, entry)
    print(f"model {checkpoint} ({predictors['fp32'].model_info['name']}); {len(cases)} labeled case(s) in {args.data}; "
          f"bf16 arithmetic: {predictors['bf16'].precision_name}", flush=True)
    rows: list[dict[str, Any]] = []
    warm_up(predictors, cases, label_space)
    for index, case in enumerate(cases):
        pairs = prompt_values(label_space, case.dataset, case.dataset_json)
        if not pairs:
            continue
        image = sitk.ReadImage(str(case.image))
        reference = sitk.ReadImage(str(case.label))
        order = ["fp32", "bf16"] if index % 2 == 0 else ["bf16", "fp32"]
        row: dict[str, Any] = {"dataset": case.dataset, "case": case.case}
        for name in order:
            start = time.perf_counter()
            result = predictors[name].predict(image, [pid for pid, _ in pairs], image_name=str(case.image))
            seconds = time.perf_counter() - start
            scores = score_case(result.labelmap, result.labels, reference, dict(pairs), str(case.image), str(case.label))
            row[name] = {"seconds": round(seconds, 3), "dice": {s.prompt: round(s.dice, 5) for s in scores}}
        diff = [100 * (row["bf16"]["dice"][p] - row["fp32"]["dice"][p]) for p in row["fp32"]["dice"]]
        print(f"  {case.dataset} {case.case}: Dice fp32 {np.mean(list(row['fp32']['dice'].values())):.4f} "
              f"bf16 {np.mean(list(row['bf16']['dice'].values())):.4f} ({max(diff, key=abs):+.2f} points), "
              f"{row['fp32']['seconds']:.1f} s vs {row['bf16']['seconds']:.1f} s", flush=True)
        rows.append(row)
    summary = summarise(rows)
    document = {"model": predictors["fp32"].model_info, "native_bf16": cpu_has_native_bf16(),
                "bf16_precision": predictors["bf16"].precision_name, "bound_points": BOUND_POINTS,
                "datasets": summary, "cases": rows}
    print_summary(summary, predictors["bf16"].precision_name)
    if args.output is not None:
        from versemi.fileio import atomic_write_json

        atomic_write_json(args.output, document)
        print(f"numbers written to {args.output}")
    return document


def warm_up(predictors: dict[str, Predictor], cases: list[Any], label_space: Any) -> None:
    """One untimed prediction per precision (first imports, allocations, oneDNN kernels), so the first
    timed case is not charged for them."""
    for case in cases:
        pairs = prompt_values(label_space, case.dataset, case.dataset_json)
        if pairs:
            image = sitk.ReadImage(str(case.image))
            for predictor in predictors.values():
                predictor.predict(image, [pid for pid, _ in pairs], image_name=str(case.image))
            return


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per dataset: mean Dice per precision (over cases and prompts), difference in points, largest
    per-case difference, total seconds of each and the speed-up fp32/bf16."""
    out: dict[str, dict[str, Any]] = {}
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        mine = [r for r in rows if r["dataset"] == dataset]
        dice = {name: float(np.mean([d for r in mine for d in r[name]["dice"].values()])) for name in ("fp32", "bf16")}
        per_case = [100 * (d16 - d32) for r in mine
                    for d32, d16 in zip(r["fp32"]["dice"].values(), r["bf16"]["dice"].values())]
        seconds = {name: sum(r[name]["seconds"] for r in mine) for name in ("fp32", "bf16")}
        out[dataset] = {
            "cases": len(mine),
            "dice_fp32": round(dice["fp32"], 5),
            "dice_bf16": round(dice["bf16"], 5),
            "difference_points": round(100 * (dice["bf16"] - dice["fp32"]), 3),
            "largest_case_difference_points": round(max(per_case, key=abs), 3),
            "seconds_fp32": round(seconds["fp32"], 2),
            "seconds_bf16": round(seconds["bf16"], 2),
            "speedup": round(seconds["fp32"] / seconds["bf16"], 3) if seconds["bf16"] > 0 else None,
        }
    return out


def print_summary(summary: dict[str, dict[str, Any]], bf16_precision: str) -> None:
    print(f"\n{'dataset':<26} {'cases':>5} {'Dice fp32':>9} {'Dice bf16':>9} {'diff':>7} {'worst case':>10} "
          f"{'s fp32':>8} {'s bf16':>8} {'fp32/bf16':>9}")
    for dataset, s in summary.items():
        print(f"{dataset:<26} {s['cases']:>5} {s['dice_fp32']:>9.4f} {s['dice_bf16']:>9.4f} "
              f"{s['difference_points']:>+7.2f} {s['largest_case_difference_points']:>+10.2f} {s['seconds_fp32']:>8.1f} "
              f"{s['seconds_bf16']:>8.1f} {s['speedup'] or 0:>8.2f}x")
    if not summary:
        print("no case to compare")
        return
    within = all(abs(s["difference_points"]) <= BOUND_POINTS for s in summary.values())
    total32 = sum(s["seconds_fp32"] for s in summary.values())
    total16 = sum(s["seconds_bf16"] for s in summary.values())
    print(f"\nbf16 keeps mean Dice within {BOUND_POINTS} points of fp32 on every dataset: {'YES' if within else 'NO'}; "
          f"time fp32 / bf16 = {total32 / max(total16, 1e-9):.2f}x")
    if bf16_precision != "bfloat16":
        print("(this CPU has no native bf16: the 'bf16' runs were float32, nothing was compared)")
    elif within and total32 > total16:
        print("=> bf16 may be the CPU default (auto in versemi.devices.autocast_dtype)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not cpu_has_native_bf16():
        print("note: this CPU has no native bf16 arithmetic (AVX512-BF16 / AMX): bf16 falls back to float32 here",
              file=sys.stderr)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
