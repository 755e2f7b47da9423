"""``versemi`` starts without torch: help screens and ``check-dataset`` import no heavy package.

Each probe runs in a fresh interpreter, since this test process has imported torch long ago.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from versemi.cli import SUBCOMMAND_MODULES, build_parser

HEAVY_MODULES = ("torch", "monai", "versemi.training", "versemi.inference", "versemi.evaluation")

# Runs main(argv) in a fresh interpreter and prints, as its last stdout line, the exit status and
# which heavy modules ended up imported.
PROBE = """
import json, sys
from versemi.cli import main
try:
    code = main(json.loads(sys.argv[1]))
except SystemExit as exc:
    code = exc.code
heavy = [m for m in json.loads(sys.argv[2]) if m in sys.modules]
print(json.dumps({"code": code, "heavy": heavy}))
"""


def _probe(argv: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUTF8": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(argv), json.dumps(HEAVY_MODULES)],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _commands() -> list[str]:
    _, modules = build_parser()
    return sorted(modules)


def test_top_level_help_imports_no_heavy_module() -> None:
    result = _probe(["--help"])
    assert result == {"code": 0, "heavy": []}


@pytest.mark.parametrize("command", _commands())
def test_subcommand_help_imports_no_heavy_module(command: str) -> None:
    result = _probe([command, "--help"])
    assert result == {"code": 0, "heavy": []}


def test_check_dataset_runs_without_torch(synthetic_datasets: dict[str, Path]) -> None:
    result = _probe(["check-dataset", str(synthetic_datasets["Dataset901_Alpha"])])
    assert result == {"code": 0, "heavy": []}


def test_every_listed_module_is_a_command() -> None:
    _, modules = build_parser()
    assert len(modules) == len(SUBCOMMAND_MODULES)


def test_predict_and_pseudolabel_share_the_model_options() -> None:
    parser, _ = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices

    def options(command: str) -> dict[str, tuple]:
        return {
            a.option_strings[0]: (a.dest, a.default, a.help, a.choices, a.required)
            for a in subparsers[command]._actions
            if a.option_strings
        }

    predict, pseudolabel = options("predict"), options("pseudolabel")
    shared = ("--model", "--prompts", "--device", "--quality", "--tta", "--precision", "--overlap", "--batch-size",
              "--threads", "--progress")
    for name in shared:
        assert predict[name] == pseudolabel[name], name
    assert predict["--model"][1] is None and predict["--model"][4] is False  # default: the catalogue's default model
    assert predict["--precision"][1] == "auto"
    assert predict["--overlap"][1] is None  # the predictor picks 0.5 or 0.25 by --quality


def test_evaluate_default_nsd_tolerance_matches_the_library() -> None:
    from versemi.cli import evaluate
    from versemi.evaluation.metrics import DEFAULT_NSD_TOLERANCE_MM

    assert evaluate.DEFAULT_NSD_TOLERANCE_MM == DEFAULT_NSD_TOLERANCE_MM
    args = build_parser()[0].parse_args(["evaluate", "--predictions", "p", "--labels", "l"])
    assert args.nsd_tolerance == DEFAULT_NSD_TOLERANCE_MM
