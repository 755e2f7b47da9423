"""A catalogue folder with an embedded default model, laid out like the packaged one.

``versemi/resources/`` holds ``catalogue.json`` and ``models/<name>-<version>.pt`` + ``.md``; a test
makes the same layout in a temporary folder and points ``VERSEMI_CATALOGUE`` at it, so every test of
the default model runs the same code as the shipped one, with a tiny model made on the spot.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

from versemi.checkpoint import save_checkpoint

CARD = """# {name} {version}

A tiny test model (random weights), embedded beside its catalogue.

## Held-out cases

{heldout}
"""


def make_embedded_catalogue(
    folder: Path,
    payload: Mapping[str, Any] | Path,
    name: str = "tiny-default",
    version: str = "1.0.0",
    *,
    default: bool = True,
    heldout: Mapping[str, list[str]] | None = None,
    plans: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``folder/catalogue.json`` whose one entry embeds ``payload`` (a checkpoint dict, or a
    checkpoint file to copy) as ``models/<name>-<version>.pt`` with a card ``models/<name>-<version>.md``;
    returns the catalogue file."""
    models = folder / "models"
    models.mkdir(parents=True, exist_ok=True)
    if isinstance(payload, Path):
        import shutil

        from versemi.checkpoint import load_checkpoint

        weights = Path(shutil.copyfile(payload, models / f"{name}-{version}.pt"))
        payload = load_checkpoint(weights)
    else:
        weights = save_checkpoint(dict(payload), models / f"{name}-{version}.pt")
    data = weights.read_bytes()
    heldout = dict(heldout or {})
    (models / f"{name}-{version}.md").write_text(
        CARD.format(name=name, version=version, heldout=json.dumps(heldout)), encoding="utf-8"
    )
    from versemi.labels import LabelSpace

    entry: dict[str, Any] = {
        "name": name,
        "version": version,
        "url": f"https://example.invalid/releases/{name}-{version}.pt",
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "label_space": list(LabelSpace.from_dict(payload["label_space"]).names),
        "licence": "CC0-1.0",
        "description": "tiny embedded test model",
        "embedded": f"models/{name}-{version}.pt",
        "card": f"models/{name}-{version}.md",
    }
    if default:
        entry["default"] = True
    if heldout:
        entry["heldout"] = heldout
    if plans:
        entry["plans"] = dict(plans)
    path = folder / "catalogue.json"
    path.write_text(json.dumps({"format": "versemi-catalogue", "format_version": 1, "models": [entry]}, indent=2),
                    encoding="utf-8")
    return path


def flip_byte(path: Path, offset: int | None = None) -> None:
    """Change one byte of a file in place (the middle one by default)."""
    data = bytearray(path.read_bytes())
    index = len(data) // 2 if offset is None else offset
    data[index] ^= 0xFF
    path.write_bytes(bytes(data))
