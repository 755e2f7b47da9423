"""Paired per-case Dice differences between finished benchmark runs kept in different result folders.

``bench/semisup.py`` pairs variants within one results folder; development-split ablations live in
folders of their own (one per ``--set`` override). Each ``--pair A B`` names two run folders of the
same seed; per case, ``A - B`` is averaged over the dataset's prompts and over the pairs (seeds), then
the mean ± standard error over cases is printed per dataset (and per prompt with ``--labels``), as
``bench/semisup.py`` pairs its variants; with several pairs also the mean ± standard error over the
pairs of each pair's mean difference (the seed as the unit: where seeds differ more than cases do).

    R=bench/results/cpu3-dev
    .venv/bin/python bench/compare_runs.py \\
        --pair $R/versemi/runs/labeled_10pct__versemi__seed0 $R/supervised/runs/labeled_10pct__supervised__seed0 \\
        --pair $R/versemi/runs/labeled_10pct__versemi__seed1 $R/supervised/runs/labeled_10pct__supervised__seed1
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


def paired(pairs: list[tuple[dict[str, dict[str, float | None]], dict[str, dict[str, float | None]]]]
           ) -> tuple[float, float, int]:
    """Mean, standard error and count over cases of the Dice differences ``a - b`` (points), each case's
    difference averaged over the pairs (seeds) that score it."""
    per_case: dict[str, list[float]] = {}
    for a, b in pairs:
        for c in set(a) & set(b):
            if a[c]["dice"] is not None and b[c]["dice"] is not None:
                per_case.setdefault(c, []).append(100 * (a[c]["dice"] - b[c]["dice"]))
    diffs = [float(np.mean(v)) for v in per_case.values()]
    n = len(diffs)
    se = float(np.std(diffs, ddof=1) / math.sqrt(n)) if n >= 2 else float("nan")
    return (float(np.mean(diffs)) if n else float("nan")), se, n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pair", nargs=2, type=Path, action="append", required=True, metavar=("A", "B"),
                   help="two run folders (each holds metrics.json), usually of one seed; repeat per seed")
    p.add_argument("--labels", action="store_true", help="also print every prompt")
    args = p.parse_args(argv)
    scores = [(run_scores(a), run_scores(b)) for a, b in args.pair]
    for a, b in args.pair:
        print(f"A = {a}\nB = {b}")
    print(f"Dice A - B, points, paired per case over {len(scores)} pair(s) (mean ± SE over cases, n cases):")
    keys = set.intersection(*(set(a) & set(b) for a, b in scores))
    for key in sorted(keys):
        dataset, label = key
        if label != semisup.MEAN_LABEL and not args.labels:
            continue
        mean, se, n = paired([(a[key], b[key]) for a, b in scores])
        line = f"  {dataset:<26} {label:<22} {mean:+6.1f} ± {se:4.1f}  (n={n})"
        if len(scores) >= 2:  # the seed as the unit: each pair's mean over cases, then mean ± SE over pairs
            per_seed = [paired([(a[key], b[key])])[0] for a, b in scores]
            line += f"   over seeds {np.mean(per_seed):+6.1f} ± {np.std(per_seed, ddof=1) / math.sqrt(len(per_seed)):4.1f}"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
