"""Typed readers of config values: each error names the file and the key path (``datasets[1].labeled``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence


class ConfigError(ValueError):
    """An invalid training config; the message names the file and the key."""


class Context:
    """Where a value came from, to build ``"<file>: <key>: <problem>"`` messages."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {key}: {message}" if key else f"{self.source}: {message}")


def check_keys(ctx: Context, key: str, data: Mapping[str, Any], allowed: Sequence[str]) -> None:
    unknown = [k for k in data if k not in allowed]
    if unknown:
        where = f"{key}.{unknown[0]}" if key else str(unknown[0])
        raise ctx.error(where, f"unknown key; allowed keys: {', '.join(allowed)}")


def read_mapping(ctx: Context, key: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ctx.error(key, f"must be a mapping, got {type(value).__name__}")
    return dict(value)


def read_string(ctx: Context, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ctx.error(key, f"must be a non-empty string, got {value!r}")
    return value


def read_case_ids(ctx: Context, key: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise ctx.error(key, f"must be a list of case ids (strings), got {value!r}")
    dupes = sorted({v for v in value if list(value).count(v) > 1})
    if dupes:
        raise ctx.error(key, f"lists case ids twice: {dupes}")
    return tuple(value)


def read_triple(ctx: Context, key: str, value: Any, kind: type) -> tuple[Any, Any, Any]:
    name = "integers" if kind is int else "numbers"
    ok = isinstance(value, (list, tuple)) and len(value) == 3 and all(
        not isinstance(v, bool) and isinstance(v, (int, float) if kind is float else int) for v in value
    )
    if not ok or any(not math.isfinite(v) or v <= 0 for v in value):
        raise ctx.error(key, f"must be three positive {name} in (x, y, z) order, got {value!r}")
    return tuple(kind(v) for v in value)  # type: ignore[return-value]


def read_int(ctx: Context, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ctx.error(key, f"must be an integer, got {value!r}")
    return value


def resolve_path(base_dir: Path, value: str) -> Path:
    """``value`` as an absolute path; a relative one is relative to ``base_dir`` (the config's folder)."""
    p = Path(value).expanduser()
    return (p if p.is_absolute() else base_dir / p).resolve()


def preview(ids: Sequence[str], n: int = 5) -> str:
    """The first ``n`` ids and the count, for messages: ``['a', 'b', ...] (12)``."""
    shown = ", ".join(repr(i) for i in list(ids)[:n])
    return f"[{shown}{', ...' if len(ids) > n else ''}] ({len(ids)})"
