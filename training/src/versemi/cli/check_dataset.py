"""``versemi check-dataset DIR [DIR ...] [--json]``: validate nnU-Net v2 raw dataset folders.

Prints every problem (errors first, then warnings; one per line with the file path) and a summary
line per folder. Exit status 0 when no folder has errors (warnings allowed), 1 otherwise. Grids are
compared with the one rule training and ``evaluate`` use (:func:`versemi.images.grid_differences`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from versemi.data.check import Problem

COMMAND = "check-dataset"
HELP = "Check nnU-Net v2 raw dataset folders (files, geometry, labels) and list every problem."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dirs", nargs="+", type=Path, metavar="DIR", help="dataset folder(s) (DatasetNNN_Name)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON report on stdout instead of text")
    parser.add_argument("--workers", type=int, default=None, help="threads reading files (default: up to 4)")


def _count_cases(root: Path) -> int:
    images = root / "imagesTr"
    if not images.is_dir():
        return 0
    return len({p.name for p in images.iterdir() if "_0000." in p.name and not p.name.startswith(".")})


def run(args: argparse.Namespace) -> int:
    from versemi.data.check import check_dataset, summarize

    reports = []
    any_errors = False
    for folder in args.dirs:
        root = folder.expanduser().resolve()
        start = time.perf_counter()
        problems = check_dataset(root, workers=args.workers)
        seconds = time.perf_counter() - start
        errors, warnings = summarize(problems)
        any_errors |= errors > 0
        reports.append((root, problems, errors, warnings, seconds))

    if args.json:
        out = [
            {
                "dataset": str(root),
                "cases": _count_cases(root),
                "ok": errors == 0,
                "errors": errors,
                "warnings": warnings,
                "problems": [p.to_dict() for p in problems],
            }
            for root, problems, errors, warnings, _ in reports
        ]
        json.dump(out[0] if len(out) == 1 else out, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for root, problems, errors, warnings, seconds in reports:
            _print_text(problems)
            verdict = "FAILED" if errors else "OK"
            print(f"{root.name}: {verdict}: {_count_cases(root)} case(s), {errors} error(s), "
                  f"{warnings} warning(s) ({seconds:.1f} s)")
    return 1 if any_errors else 0


def _print_text(problems: list[Problem]) -> None:
    from versemi.data.check import ERROR, WARNING

    for severity in (ERROR, WARNING):
        for p in problems:
            if p.severity == severity:
                print(str(p))
