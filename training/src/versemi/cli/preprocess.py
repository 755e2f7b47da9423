"""``versemi preprocess CONFIG``: fill a training config's preprocessed cache ahead of training.

Every case the config trains on (labeled with its label, unlabeled without) is preprocessed into
``cache_dir``; up-to-date entries are reused, so a second run is cheap and ``versemi train`` finds the
cache full. Prints one summary line (a JSON object with ``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from versemi.cli import CliError

COMMAND = "preprocess"
HELP = "Preprocess a training config's cases into its cache (memory-mapped arrays), reusing what is up to date."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, metavar="CONFIG", help="training config (YAML or JSON)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="cache folder (default: the config's cache_dir)")
    parser.add_argument(
        "--workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="processes preprocessing at once (default %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _size_on_disk(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def run(args: argparse.Namespace) -> int:
    from versemi.data.cache import PreprocessedCache, fill_cache, jobs_for_config
    from versemi.data.config import load_config
    from versemi.data.plans import plans_for_config

    if args.workers < 1:
        raise CliError(f"--workers must be at least 1, got {args.workers}")
    try:
        config = load_config(args.config)
        jobs = jobs_for_config(config, plans_for_config(config))
    except (ValueError, OSError) as exc:  # ConfigError and DatasetError are ValueErrors
        raise CliError(str(exc)) from None
    if not jobs:
        raise CliError(f"{args.config}: the config selects no cases to preprocess")
    cache_dir = (args.cache_dir or config.cache_dir).expanduser().resolve()
    try:
        cache = PreprocessedCache(cache_dir)
    except OSError as exc:
        raise CliError(f"{cache_dir}: cannot create the cache folder: {exc.strerror or exc}") from None

    start = time.perf_counter()
    try:
        cases, stats = fill_cache(cache, jobs, workers=args.workers, progress=not args.no_progress)
    except (ValueError, OSError) as exc:
        raise CliError(str(exc)) from None
    seconds = time.perf_counter() - start

    summary = {
        "cache_dir": str(cache_dir),
        "cases": len(cases),
        "labeled": sum(c.labeled for c in cases),
        "unlabeled": sum(not c.labeled for c in cases),
        "built": stats.misses,
        "reused": stats.hits,
        "seconds": round(seconds, 2),
        "cache_bytes": _size_on_disk(cache_dir),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"{summary['cases']} cases ({summary['labeled']} labeled, {summary['unlabeled']} unlabeled): "
            f"{summary['built']} preprocessed, {summary['reused']} reused, in {seconds:.1f} s; "
            f"cache {cache_dir} ({summary['cache_bytes'] / 2**20:.1f} MiB)",
            file=sys.stdout,
        )
    return 0
