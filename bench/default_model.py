"""Train, evaluate and package the VerSemi default model (the model `versemi predict` uses with no
`--model`, the demo and the Slicer panel).

Steps (each resumable; run them in order)::

    .venv/bin/python bench/default_model.py train      # versemi train on ../shared/data (hours on 2 CPU cores)
    .venv/bin/python bench/default_model.py evaluate   # held-out Dice/HD95 per prompt -> evaluation.json
    .venv/bin/python bench/default_model.py export     # fp16 weights + catalogue entry + model card in the package

What it trains on: every labeled case of ``../shared/data`` (hippocampus, left atrium, ACDC) except the
held-out split: the benchmark's held-out 20 % of each dataset (``bench/semisup.py``, the same cases every
benchmark table is scored on) plus every case bundled in ``examples/data`` (so the demo's Dice is on scans
the model never saw). Every shipped prompt has a held-out Dice on the card: the spleen (one CT case, no
held-out case possible) is not trained since 1.1.0. The recipe is the CPU recipe of the benchmark presets
(``bench/semisup_presets.py``, ``_RECIPE_*``): per-dataset plans with their network geometry, U-Net 16
filters 4 levels, one patch per dataset per step, AdamW + poly, bf16, supervised (the VerSemi terms did
not beat supervised-only at this budget, see the README), ``STEPS`` steps.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import semisup  # noqa: E402
from semisup_presets import _RECIPE_MODEL, _RECIPE_TRAINING, SHARED_DATASETS, get_preset  # noqa: E402

NAME = "versemi-default"
VERSION = "1.1.0"
STEPS = 2400
EXAMPLES = semisup.REPO_ROOT / "examples" / "data"
DEFAULT_WORK = semisup.DEFAULT_RESULTS / f"default-model-{VERSION}"


def bundled_cases() -> dict[str, list[str]]:
    """Case ids bundled in examples/data, per dataset."""
    out: dict[str, list[str]] = {}
    for ds in sorted(p for p in EXAMPLES.iterdir() if (p / "dataset.json").is_file()):
        out[ds.name] = semisup.dataset_case_ids(ds)
    return out


def heldout_split(data: Path, protocol: dict[str, Any]) -> dict[str, list[str]]:
    """The benchmark's held-out split plus the bundled example cases (never the spleen's only case)."""
    preset = get_preset("cpu3")
    split = semisup.make_split(data, SHARED_DATASETS, protocol, preset.heldout_fraction)
    for name, cases in bundled_cases().items():
        if name in split:
            split[name] = sorted(set(split[name]) | set(cases))
    return split


def make_config(data: Path, split: dict[str, list[str]], work: Path) -> dict[str, Any]:
    datasets = [{"path": str(data / name), "labeled": "all", "exclude": split.get(name, [])}
                for name in SHARED_DATASETS]
    training = {**json.loads(json.dumps(_RECIPE_TRAINING)), "method": "supervised", "max_steps": STEPS,
                "checkpoint_every": 200}
    return {
        "datasets": datasets,
        "validation": {"fraction": 0.0},
        "seed": 0,
        "model": dict(_RECIPE_MODEL),
        "training": training,
        "cache_dir": str(semisup.DEFAULT_RESULTS / "cache"),
        "output_dir": str(work / "train"),
    }


def cmd_train(args: argparse.Namespace) -> int:
    protocol = json.loads((args.data / "protocol.json").read_text(encoding="utf-8"))
    split = heldout_split(args.data, protocol)
    args.work.mkdir(parents=True, exist_ok=True)
    semisup.write_json_atomic(args.work / "heldout.json", split)
    config = make_config(args.data, split, args.work)
    semisup.write_json_atomic(args.work / "config.json", config)
    run = semisup.RunSpec("all_labels", "default", "supervised", 0, STEPS)
    record = semisup.run_training(run, config, args.work, args.device, args.threads)
    print(json.dumps({"checkpoint": record["checkpoint"], "wall_seconds": record["wall_seconds"]}))
    return 0


def _interpreter() -> str:
    """The Python that runs this script, relative to the working directory when inside it (for the card)."""
    exe = sys.executable
    return os.path.relpath(exe) if exe.startswith(os.getcwd() + os.sep) else exe


def cmd_evaluate(args: argparse.Namespace) -> int:
    split = json.loads((args.work / "heldout.json").read_text(encoding="utf-8"))
    done = json.loads((args.work / semisup.TRAIN_DONE_FILE).read_text(encoding="utf-8"))
    checkpoint = Path(args.checkpoint or done["checkpoint"])
    heldout = {k: v for k, v in split.items() if k in SHARED_DATASETS}
    rows, seconds = semisup.evaluate_checkpoint(
        checkpoint, args.data, heldout, args.work / "predictions", args.device, args.threads, 0.5, 1
    )
    summary = {
        "/".join(key): {"dice": semisup._mean(c["dice"] for c in cases.values()),
                        "hd95": semisup._mean(c["hd95"] for c in cases.values()), "n": len(cases)}
        for key, cases in semisup.per_case_scores(rows).items()
    }
    semisup.write_json_atomic(args.work / "evaluation.json", {
        "checkpoint": str(checkpoint), "seconds": seconds, "summary": summary, "rows": rows,
        "command": " ".join([_interpreter(), "bench/default_model.py", *sys.argv[1:]]),
    })
    for key, value in summary.items():
        hd95 = "-" if value["hd95"] is None else f"{value['hd95']:.1f} mm"
        print(f"{key}: Dice {100 * value['dice']:.1f} %, HD95 {hd95} (n={value['n']})")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("step", choices=("train", "evaluate", "export"))
    p.add_argument("--data", type=Path, default=semisup.DEFAULT_DATA)
    p.add_argument("--work", type=Path, default=DEFAULT_WORK)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--checkpoint", default=None, help="evaluate/export this checkpoint (default: the trained one)")
    args = p.parse_args(argv)
    args.data = args.data.expanduser().resolve()
    args.work = args.work.expanduser().resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.step == "train":
        return cmd_train(args)
    if args.step == "evaluate":
        return cmd_evaluate(args)
    from default_model_export import export  # noqa: PLC0415 - written with the packaging (issue 12)

    return export(args)


if __name__ == "__main__":
    sys.exit(main())
