"""Choose each prompt's post-processing rule on the development split (never on held-out cases).

    OMP_NUM_THREADS=1 .venv/bin/python bench/postprocessing_rules.py --model CKPT [--write CKPT_OUT]

For every development case (``bench/semisup.py`` ``which="dev"``, held-out and bundled cases excluded) the model
predicts once without post-processing; each candidate rule (:data:`RULES`) is then applied to that labelmap and
scored (mean Dice per prompt). Crop datasets of a paired structure (:data:`PAIRED_DATASETS`) are also scored on
"both sides" volumes: a development crop next to the left-right mirror of another (a head holds both), so a rule
that keeps one component is seen to lose a side. The best mean Dice wins; within :data:`TIE` of the best the
simplest rule (earliest in :data:`RULES`) is kept. Prints the table, writes ``<work>/postprocessing_rules.json``
and, with ``--write``, a copy of the checkpoint with the chosen rules in its ``postprocessing`` (for
``bench/default_model_export.py``; the card prints them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parent))
import semisup  # noqa: E402
from localiser import case_split  # noqa: E402

RULES = ("largest_component", "paired", "above_fraction:0.2", "none")
PAIRED_DATASETS = ("Dataset001_Hippocampus",)
TIE = 0.002


def scores(labelmap: np.ndarray, truth: np.ndarray, values: dict[str, int]) -> dict[str, float]:
    out = {}
    for name, value in values.items():
        p, t = labelmap == value, truth == value
        total = int(p.sum()) + int(t.sum())
        out[name] = 1.0 if total == 0 else 2.0 * int((p & t).sum()) / total
    return out


def apply_rule(labelmap: np.ndarray, rule: str, groups: dict[int, list[int]], image: sitk.Image) -> np.ndarray:
    from versemi.inference.export import left_right_axis
    from versemi.inference.postprocess import keep_largest_components

    if rule == "none":
        return labelmap
    axis = left_right_axis(image)
    return keep_largest_components(labelmap.copy(), groups, {v: rule for v in groups}, 2 - axis, image.GetSpacing()[axis])


def both_sides(a: sitk.Image, la: np.ndarray, b: sitk.Image, lb: np.ndarray) -> tuple[sitk.Image, np.ndarray]:
    """Crop ``a`` and the left-right mirror of ``b`` side by side (cropped to a common shape)."""
    from versemi.data.synthetic import _unit_mean

    axis = 2 - int(np.argmax(np.abs(np.asarray(a.GetDirection()).reshape(3, 3)[0])))
    arrays = [_unit_mean(sitk.GetArrayFromImage(a)), np.flip(_unit_mean(sitk.GetArrayFromImage(b)), axis)]
    labels = [la, np.flip(lb, axis)]
    shape = np.minimum(arrays[0].shape, arrays[1].shape)
    cut = tuple(slice(0, n) if k != axis else slice(None) for k, n in enumerate(shape))
    image = sitk.GetImageFromArray(np.concatenate([x[cut] for x in arrays], axis=axis) * 500.0)
    image.SetSpacing(a.GetSpacing())
    image.SetDirection(a.GetDirection())
    return image, np.concatenate([x[cut] for x in labels], axis=axis)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--data", type=Path, default=semisup.DEFAULT_DATA)
    p.add_argument("--work", type=Path, default=semisup.DEFAULT_RESULTS / "postprocessing-rules")
    p.add_argument("--write", type=Path, default=None, help="checkpoint copy with the chosen rules")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--datasets", nargs="*", default=None, help="only these datasets (default: all of the model's)")
    args = p.parse_args(argv)
    from versemi.checkpoint import Checkpoint
    from versemi.inference import Predictor

    checkpoint = Checkpoint.load(args.model)
    predictor = Predictor(checkpoint, device="cpu", threads=args.threads, postprocess=False, coarse_to_fine=False)
    table: dict[str, dict[str, list[float]]] = {}
    for dataset in args.datasets or checkpoint.plans.datasets:
        if not (args.data / dataset).is_dir():
            continue
        prompts = {name: value for name, value in
                   json.loads((args.data / dataset / "dataset.json").read_text())["labels"].items() if value}
        names = [n for n in prompts if n in predictor.label_space.names]
        if not names:
            continue
        _, dev = case_split(args.data, dataset)
        cases = []
        for case in dev:
            image = sitk.ReadImage(str(args.data / dataset / "imagesTr" / f"{case}_0000.nii.gz"))
            truth = sitk.GetArrayFromImage(sitk.ReadImage(str(args.data / dataset / "labelsTr" / f"{case}.nii.gz")))
            cases.append((image, truth))
        if dataset in PAIRED_DATASETS:
            cases += [both_sides(*cases[k], *cases[(k + 1) % len(dev)]) for k in range(len(dev))]
        for image, truth in cases:
            result = predictor.predict(image, ",".join(names), image_name=dataset)
            raw = sitk.GetArrayFromImage(result.labelmap)
            values = {e.name: e.value for e in result.labels}
            groups = predictor.planner.postprocessing_groups(result.labels, {n: "x" for n in names})
            mapped = np.zeros_like(raw)
            for name in names:  # the dataset's label values -> the prediction's
                mapped[truth == prompts[name]] = values[name]
            for rule in RULES:
                for name, d in scores(apply_rule(raw, rule, groups, image), mapped, values).items():
                    table.setdefault(name, {}).setdefault(rule, []).append(d)
    chosen: dict[str, str] = {}
    report: dict[str, Any] = {}
    for name, by_rule in table.items():
        means = {rule: float(np.mean(v)) for rule, v in by_rule.items()}
        best = max(means.values())
        rule = next(r for r in RULES if means[r] >= best - TIE)
        report[name] = {"chosen": rule, "mean_dice": {r: round(m, 4) for r, m in means.items()},
                        "cases": len(by_rule[rule])}
        print(f"{name}: {rule}  " + "  ".join(f"{r} {100 * m:.1f}" for r, m in means.items()), flush=True)
        if rule != "none":
            chosen[name] = rule
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "postprocessing_rules.json").write_text(json.dumps({"model": str(args.model), "rules": chosen,
                                                                     "report": report}, indent=2))
    if args.write:
        payload = checkpoint.to_payload()
        payload["postprocessing"] = chosen
        Checkpoint.from_payload(payload).save(args.write)
        print(f"wrote {args.write} with the chosen rules")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
