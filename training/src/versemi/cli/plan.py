"""``versemi plan CONFIG``: show each dataset's plan (grid, normalisation, patch) before training.

The plans come from each dataset's fingerprint (median spacing and size of its scans, the extent of
its labeled structures, CT intensities) and the config's ``plans:`` section, exactly as ``versemi
train`` makes them (see ``docs/TRAINING.md`` and :mod:`versemi.data.plans`). ``--json`` prints one
object mapping each dataset name (and each unlabeled or review folder, with ``plan_of`` naming the
dataset whose plan it uses) to its plan; spacings are in mm and sizes in voxels, both ``(x, y, z)``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from versemi.cli import CliError

COMMAND = "plan"
HELP = "show the per-dataset plans (target spacing, normalisation, patch size) a training config gets"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="training config (YAML or JSON)")
    parser.add_argument("--json", action="store_true", help="print one JSON object: dataset name -> plan")


def plans_json(plans: Any) -> dict[str, Any]:
    """``{name: plan}`` for the datasets, then the folders (with ``plan_of``)."""
    out: dict[str, Any] = {}
    for name, plan in plans.datasets.items():
        out[name] = _plan_entry(plan)
    for source, target in plans.aliases.items():
        out[source] = {**_plan_entry(plans.datasets[target]), "plan_of": target}
    return out


def _plan_entry(plan: Any) -> dict[str, Any]:
    spec = plan.spec.to_dict()
    return {
        "modality": spec["modality"],
        "target_spacing": list(plan.target_spacing),
        "patch_size": list(plan.patch_size),
        "normalization": {k: spec[k] for k in ("normalization", "intensity_clip", "intensity_mean", "intensity_std")
                          if spec[k] is not None},
        "covers_foreground": plan.covers_foreground(),
        "overridden": list(plan.overridden),
        "fingerprint": plan.fingerprint.to_dict() if plan.fingerprint else None,
    }


def run(args: argparse.Namespace) -> int:
    from versemi.data.config import ConfigError, load_config
    from versemi.data.plans import PlansError, format_plans, plans_for_config

    try:
        config = load_config(args.config)
        plans = plans_for_config(config)
    except (ConfigError, PlansError, ValueError, OSError) as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(json.dumps(plans_json(plans), indent=2))
    else:
        print(format_plans(plans))
    return 0
