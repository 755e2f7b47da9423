"""``versemi plan CONFIG``: show each dataset's plan (grid, normalisation, patch) before training.

The plans are made exactly as ``versemi train`` makes them (:mod:`versemi.data.plans`,
docs/TRAINING.md). ``--json`` maps each dataset, and each unlabeled or review folder (``plan_of``
names the dataset whose plan it uses), to its plan; spacings in mm, sizes in voxels, ``(x, y, z)``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from versemi.cli import CliError

if TYPE_CHECKING:
    from versemi.data.plans import Plans

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
    from versemi.data.plans import PlansError, plans_for_config

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


def format_plans(plans: Plans) -> str:
    """A human-readable table of the plans (``versemi plan``)."""
    lines = [f"plans v{plans.version}: patch budget {plans.patch_voxels} voxels, size divisor {plans.size_divisor}"]
    for plan in plans.datasets.values():
        fp = plan.fingerprint
        spacing = " x ".join(f"{s:g}" for s in plan.target_spacing)
        patch = " x ".join(str(p) for p in plan.patch_size)
        lines.append(f"{plan.dataset} ({plan.spec.modality}, {plan.spec.normalization})")
        if fp is not None:
            lines.append(f"  fingerprint: {fp.num_cases} scans, median spacing "
                         f"{' x '.join(f'{s:g}' for s in fp.median_spacing)} mm, median size "
                         f"{' x '.join(f'{s:g}' for s in fp.median_size)} voxels")
            shape = " x ".join(f"{s:.0f}" for s in fp.median_size_at(plan.target_spacing))
            lines.append(f"  median scan on the target grid: {shape} voxels")
        lines.append(f"  target spacing: {spacing} mm (x, y, z)")
        covers = plan.covers_foreground()
        note = "" if covers is None else (" (covers the median labeled structure)" if covers
                                          else " (smaller than the median labeled structure)")
        lines.append(f"  patch size: {patch} voxels (x, y, z){note}")
        if plan.spec.normalization == "ct_zscore":
            lo, hi = plan.spec.intensity_clip
            lines.append(f"  intensities: clip to [{lo:g}, {hi:g}], z-score with mean {plan.spec.intensity_mean:g}, "
                         f"sd {plan.spec.intensity_std:g}")
        if plan.network is not None:
            bottleneck = " x ".join(str(v) for v in plan.network.bottleneck_size(plan.patch_size))
            lines.append(f"  network: {plan.network.describe()} (x, y, z); bottleneck {bottleneck} voxels")
        else:
            lines.append("  network: every axis pooled at every stage, 3x3x3 kernels (isotropic)")
        if plan.overridden:
            lines.append(f"  set by the config: {', '.join(plan.overridden)}")
    for source, target in plans.aliases.items():
        lines.append(f"{source}: uses the plan of {target}")
    return "\n".join(lines)
