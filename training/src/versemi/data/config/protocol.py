"""Protocol files: labeled cases named by setting, ``{dataset name: {setting: [case ids]}}`` (JSON)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from versemi.data.config.readers import Context, check_keys, read_case_ids, read_string, resolve_path

PROTOCOL_KEYS = ("protocol", "setting", "dataset")


@dataclass(frozen=True)
class ProtocolRef:
    """Labeled cases taken from a protocol file: ``{dataset name: {setting: [case ids]}}``."""

    path: Path
    setting: str
    dataset: str

    def to_dict(self) -> dict[str, str]:
        return {"protocol": str(self.path), "setting": self.setting, "dataset": self.dataset}


def parse_protocol(ctx: Context, key: str, raw: Mapping[str, Any], base: Path, dataset: str) -> ProtocolRef:
    """A dataset's ``labeled: {protocol: FILE, setting: NAME[, dataset: ENTRY]}`` (``dataset``: the folder name)."""
    check_keys(ctx, key, raw, PROTOCOL_KEYS)
    for k in ("protocol", "setting"):
        if k not in raw:
            raise ctx.error(f"{key}.{k}", "required key is missing")
    path = resolve_path(base, read_string(ctx, f"{key}.protocol", raw["protocol"]))
    setting = read_string(ctx, f"{key}.setting", raw["setting"])
    entry = read_string(ctx, f"{key}.dataset", raw.get("dataset", dataset))
    return ProtocolRef(path, setting, entry)


def read_protocol(ctx: Context, key: str, ref: ProtocolRef) -> tuple[str, ...]:
    """The case ids a protocol file lists for the referenced dataset and setting."""
    if not ref.path.is_file():
        raise ctx.error(f"{key}.protocol", f"file not found: {ref.path}")
    try:
        data = json.loads(ref.path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ctx.error(f"{key}.protocol", f"{ref.path}: invalid JSON: {exc}") from exc
    if not isinstance(data, dict) or ref.dataset not in data or not isinstance(data[ref.dataset], dict):
        have = ", ".join(sorted(data)) if isinstance(data, dict) else "nothing"
        raise ctx.error(f"{key}.protocol", f"{ref.path} has no entry for dataset {ref.dataset!r} "
                        f"(it has: {have}); set '{key}.dataset' to pick another entry")
    settings = data[ref.dataset]
    if ref.setting not in settings:
        raise ctx.error(f"{key}.setting", f"{ref.path}: dataset {ref.dataset!r} has no setting "
                        f"{ref.setting!r} (it has: {', '.join(sorted(settings))})")
    return read_case_ids(Context(str(ref.path)), f"{ref.dataset}.{ref.setting}", settings[ref.setting])
