"""Paired per-case Dice differences between finished benchmark runs kept in different result folders.

``bench/semisup.py`` pairs variants within one results folder; development-split ablations live in
folders of their own (one per ``--set`` override). This prints, per dataset, ``A - B`` averaged over
the dataset's prompts per case, then mean ± standard error over cases (and per prompt with ``--labels``).

    .venv/bin/python bench/compare_runs.py \\
        bench/results/cpu3-dev/versemi/runs/labeled_10pct__versemi__seed0 \\
        bench/results/cpu3-dev/supervised/runs/labeled_10pct__supervised__seed0
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import semisup  # noqa: E402


def run_scores(run: Path) -> dict[tuple[str, str], dict[str, dict[str, float | None]]]:
    """A finished run's per-case scores (its ``metrics.json``)."""
    metrics = run / "metrics.json"
    if not metrics.is_file():
        raise SystemExit(f"{run}: no metrics.json (the run has not been evaluated)")
    return semisup.per_case_scores(json.loads(metrics.read_text())["rows"])


def paired(a: dict[str, dict[str, float | None]], b: dict[str, dict[str, float | None]]) -> tuple[float, float, int]:
    """Mean, standard error and count of the per-case Dice differences ``a - b`` (in points)."""
    diffs = [100 * (a[c]["dice"] - b[c]["dice"]) for c in sorted(set(a) & set(b))
             if a[c]["dice"] is not None and b[c]["dice"] is not None]
    n = len(diffs)
    se = float(np.std(diffs, ddof=1) / math.sqrt(n)) if n >= 2 else float("nan")
    return (float(np.mean(diffs)) if n else float("nan")), se, n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_a", type=Path, help="run folder A (holds metrics.json)")
    p.add_argument("run_b", type=Path, help="run folder B")
    p.add_argument("--labels", action="store_true", help="also print every prompt")
    args = p.parse_args(argv)
    a, b = run_scores(args.run_a), run_scores(args.run_b)
    print(f"A = {args.run_a}\nB = {args.run_b}\nDice A - B, points, paired per case (mean ± SE, n cases):")
    for key in sorted(set(a) & set(b)):
        dataset, label = key
        if label != semisup.MEAN_LABEL and not args.labels:
            continue
        mean, se, n = paired(a[key], b[key])
        print(f"  {dataset:<26} {label:<22} {mean:+6.1f} ± {se:4.1f}  (n={n})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
