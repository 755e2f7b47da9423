"""The ``plans`` section: the patch budget, per-dataset plan overrides and the network geometry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from versemi.data.config.readers import Context, check_keys, read_mapping, read_string, read_triple
from versemi.data.plan_settings import DEFAULT_PATCH_VOXELS, NETWORK_GEOMETRIES, OVERRIDE_KEYS

PLANS_KEYS = ("patch_voxels", "overrides", "network_geometry")


@dataclass(frozen=True)
class PlansConfig:
    """The ``plans:`` section (see :mod:`versemi.data.plans`).

    Attributes:
        patch_voxels: Voxel budget of one training patch (the memory budget of the plans).
        overrides: Dataset name -> plan keys set instead of derived (``target_spacing``,
            ``patch_size``, ``normalization``).
        network_geometry: ``"spacing"`` (per-dataset pooling and in-plane kernels from the spacing) or
            ``"isotropic"`` (every axis pooled at every stage).
    """

    patch_voxels: int = DEFAULT_PATCH_VOXELS
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    network_geometry: str = "spacing"

    def to_dict(self) -> dict[str, Any]:
        return {"patch_voxels": self.patch_voxels, "overrides": {k: dict(v) for k, v in self.overrides.items()},
                "network_geometry": self.network_geometry}


def parse_plans(ctx: Context, raw: dict[str, Any], dataset_names: Sequence[str]) -> PlansConfig:
    """The ``plans`` section; overrides may name only datasets of the config."""
    check_keys(ctx, "plans", raw, PLANS_KEYS)
    voxels = raw.get("patch_voxels", DEFAULT_PATCH_VOXELS)
    if isinstance(voxels, bool) or not isinstance(voxels, int) or voxels < 8:
        raise ctx.error("plans.patch_voxels", f"must be an integer >= 8 (voxels of one patch), got {voxels!r}")
    overrides = read_mapping(ctx, "plans.overrides", raw.get("overrides"))
    parsed: dict[str, dict[str, Any]] = {}
    for name, entry in overrides.items():
        key = f"plans.overrides.{name}"
        if name not in dataset_names:
            raise ctx.error(key, f"not a dataset of the config ({', '.join(dataset_names)})")
        entry = read_mapping(ctx, key, entry)
        check_keys(ctx, key, entry, OVERRIDE_KEYS)
        out: dict[str, Any] = {}
        if "target_spacing" in entry:
            out["target_spacing"] = read_triple(ctx, f"{key}.target_spacing", entry["target_spacing"], float)
        if "patch_size" in entry:
            out["patch_size"] = read_triple(ctx, f"{key}.patch_size", entry["patch_size"], int)
        if "normalization" in entry:
            out["normalization"] = read_string(ctx, f"{key}.normalization", entry["normalization"])
        parsed[str(name)] = out
    geometry = raw.get("network_geometry", "spacing")
    if geometry not in NETWORK_GEOMETRIES:
        raise ctx.error("plans.network_geometry", f"must be one of {', '.join(NETWORK_GEOMETRIES)}, got {geometry!r}")
    return PlansConfig(int(voxels), parsed, geometry)
