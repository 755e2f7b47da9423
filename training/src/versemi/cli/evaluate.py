"""``versemi evaluate``: Dice, HD95 and NSD (mm) of predicted label maps against references.

Writes ``metrics.csv``, ``metrics.json`` and ``summary.md`` into ``--output`` (default
``<predictions>/evaluation``) and prints the table. Label names come from ``--dataset-json`` (default:
a ``dataset.json`` in the labels folder or its parent); the matching rules are
:mod:`versemi.evaluation.report`'s (docs/PREDICT.md, "Evaluating predictions").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from versemi.cli import CliError
from versemi.labels import load_mapping

COMMAND = "evaluate"
HELP = "Score predicted label maps against reference labels (Dice, HD95 and NSD in mm) per case and label."

# versemi.evaluation.metrics.DEFAULT_NSD_TOLERANCE_MM, written out because that module imports torch
# and the parser must build without it (tests/cli/test_startup.py checks the two agree).
DEFAULT_NSD_TOLERANCE_MM = 2.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--predictions", required=True, type=Path, metavar="DIR",
                        help="folder of predicted label maps <case>.nii.gz|.nii|.nrrd|.mha")
    parser.add_argument("--labels", required=True, type=Path, metavar="DIR",
                        help="folder of reference label maps with the same case ids (e.g. labelsTr)")
    parser.add_argument("--dataset-json", type=Path, metavar="FILE",
                        help="dataset.json naming the reference labels (default: DIR/dataset.json or "
                        "DIR/../dataset.json of --labels when present; else labels are named by value)")
    parser.add_argument("--labels-map", type=Path, metavar="FILE",
                        help="versemi label mapping file (JSON/YAML, '<dataset>:<value>' -> {\"name\"}) "
                        "renaming the dataset's labels to the model's prompt names, as in training")
    parser.add_argument("--output", type=Path, metavar="DIR",
                        help="where to write metrics.csv, metrics.json, summary.md "
                        "(default: <predictions>/evaluation)")
    parser.add_argument("--nsd-tolerance", type=float, default=DEFAULT_NSD_TOLERANCE_MM, metavar="MM",
                        help="normalised surface Dice tolerance in mm (default %(default)g)")
    parser.add_argument("--allow-missing", action="store_true",
                        help="evaluate only the labeled cases that have a prediction and list the others "
                        "(default: a missing prediction is an error)")
    parser.add_argument("--ignore-sidecars", action="store_true",
                        help="do not map prediction values through <case>.json sidecars; compare values as is")
    parser.add_argument("--quiet", action="store_true", help="print only the output paths")


def _find_dataset_json(labels_dir: Path) -> Path | None:
    for candidate in (labels_dir / "dataset.json", labels_dir.parent / "dataset.json"):
        if candidate.is_file():
            return candidate
    return None


def run(args: argparse.Namespace) -> int:
    from versemi.evaluation.report import EvaluationError, evaluate_folders, label_names_from_dataset_json

    pred_dir = args.predictions.expanduser()
    labels_dir = args.labels.expanduser()
    dataset_json = args.dataset_json.expanduser() if args.dataset_json else _find_dataset_json(labels_dir)
    try:
        mapping = None
        if args.labels_map is not None:
            if dataset_json is None:
                raise CliError("--labels-map renames the labels of a dataset.json: give --dataset-json")
            mapping = load_mapping(args.labels_map.expanduser())
        label_names = label_names_from_dataset_json(dataset_json, mapping) if dataset_json else None

        def progress(done: int, total: int, case: str) -> None:
            if not args.quiet and sys.stderr.isatty():
                print(f"\revaluated {done}/{total} ({case})", end="" if done < total else "\n",
                      file=sys.stderr, flush=True)

        result = evaluate_folders(
            pred_dir,
            labels_dir,
            label_names,
            nsd_tolerance_mm=args.nsd_tolerance,
            allow_missing=args.allow_missing,
            use_sidecars=not args.ignore_sidecars,
            progress=progress,
        )
        output = args.output.expanduser() if args.output else pred_dir / "evaluation"
        paths = result.write(output)
    except FileNotFoundError as exc:  # e.g. the mapping file
        raise CliError(f"{exc.filename}: file not found") from None
    except (EvaluationError, ValueError) as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot write the evaluation to {exc.filename}: {exc.strerror}") from None

    if not args.quiet:
        print(result.to_markdown())
        if result.missing_predictions:
            print(f"note: {len(result.missing_predictions)} labeled case(s) had no prediction and were skipped",
                  file=sys.stderr)
        if result.predictions_without_reference:
            print(f"note: {len(result.predictions_without_reference)} prediction(s) have no reference and "
                  "were ignored", file=sys.stderr)
    for path in paths.values():
        print(f"wrote {path}")
    return 0
