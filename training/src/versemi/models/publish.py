"""Publishing a model: its catalogue entry, the compact file that ships, the packaged catalogue.

- :func:`catalogue_entry`: a checkpoint's entry (SHA-256, size, prompts, plans summary, plus what the
  publisher says), validated as a catalogue reader will (``versemi models entry`` prints it);
- :func:`inference_checkpoint`: only what prediction needs, weights in float16 (half the size);
- :func:`write_catalogue_entry`: add or replace (same name and version) an entry of a catalogue file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from versemi.fileio import atomic_write_json, sha256_file
from versemi.models.catalogue import ModelError, catalogue_document, parse_catalogue, version_key


def plans_summary(plans: Any) -> dict[str, dict[str, Any]]:
    """A catalogue entry's ``plans``: per training dataset, its modality, target spacing and window
    (x, y, z), plus the median scan extent in mm when the plans have the dataset's fingerprint."""
    summary: dict[str, dict[str, Any]] = {}
    for name, plan in plans.datasets.items():
        row: dict[str, Any] = {"modality": plan.spec.modality, "target_spacing": list(plan.target_spacing),
                               "patch_size": list(plan.patch_size)}
        fp = plan.fingerprint
        if fp is not None:
            row["median_extent_mm"] = [round(n * s, 1) for n, s in zip(fp.median_size, fp.median_spacing)]
        summary[name] = row
    return summary


def catalogue_entry(
    path: str | Path,
    name: str,
    version: str,
    url: str,
    licence: str,
    *,
    description: str = "",
    min_versemi: str | None = None,
    embedded: str | None = None,
    card: str | None = None,
    default: bool = False,
    heldout: Mapping[str, list[str]] | None = None,
    heldout_dice: Mapping[str, float] | None = None,
    localisers: Mapping[str, tuple[str, Path]] | None = None,
) -> dict[str, Any]:
    """The catalogue entry (JSON-ready dict) of a checkpoint file, validated as readers will read it.

    Args:
        path: the checkpoint, exactly as it will be published.
        name, version, url, licence, description, min_versemi: as in the catalogue (docs/MODELS.md).
        embedded, card: paths relative to the catalogue's folder when the file (and its card) ship
            beside it (the packaged catalogue: relative to ``versemi/resources/``).
        default: the default model.
        heldout: dataset -> case ids the model never trained on.
        heldout_dice: prompt -> its mean Dice on the held-out cases (``versemi models info``, Slicer).
        localisers: dataset -> ``(path relative to the catalogue's folder, the file)`` of its
            localiser (:mod:`versemi.inference.localiser`); the entry records the path and the
            file's SHA-256.

    Raises:
        versemi.checkpoint.CheckpointError: a file ``versemi predict`` could not load.
        CatalogueError: an invalid entry (name, version, URL...).
    """
    from versemi.checkpoint import Checkpoint

    path = Path(path)
    checkpoint = Checkpoint.load(path)  # publish only what predict can load
    raw: dict[str, Any] = {
        "name": name,
        "version": version,
        "url": url,
        "sha256": sha256_file(path),
        "size": path.stat().st_size,
        "label_space": list(checkpoint.label_space.names),
        "licence": licence,
        "description": description,
    }
    if min_versemi:
        raw["min_versemi"] = min_versemi
    if default:
        raw["default"] = True
    for key, value in (("embedded", embedded), ("card", card)):
        if value:
            raw[key] = value
    raw["plans"] = plans_summary(checkpoint.plans)
    if heldout:
        raw["heldout"] = {str(k): list(v) for k, v in heldout.items()}
    if heldout_dice:
        raw["heldout_dice"] = {str(k): round(float(v), 4) for k, v in heldout_dice.items()}
    if localisers:
        raw["localisers"] = {str(k): {"file": rel, "sha256": sha256_file(file)} for k, (rel, file) in localisers.items()}
    # Validate exactly as a catalogue reader would (relative URLs resolved against a dummy base).
    document = {**catalogue_document([]), "models": [raw]}
    parse_catalogue(document, source=f"entry for {path}", base_url="https://example.invalid/")
    return raw


def parse_heldout(items: list[str]) -> dict[str, list[str]]:
    """``["DATASET=CASE,CASE", ...]`` (``versemi models entry --heldout``) -> dataset -> case ids.

    Raises:
        ModelError: an item without ``=`` or without cases.
    """
    heldout: dict[str, list[str]] = {}
    for item in items:
        dataset, sep, cases = item.partition("=")
        if not sep or not dataset.strip() or not cases.strip():
            raise ModelError(f"--heldout {item!r}: expected DATASET=CASE,CASE,...")
        heldout[dataset.strip()] = [c.strip() for c in cases.split(",") if c.strip()]
    return heldout


def inference_checkpoint(source: str | Path, target: str | Path, *, model_name: str | None = None,
                         model_version: str | None = None, half: bool = True) -> Path:
    """Write the prediction-only form of a checkpoint: no training state (optimizer, EMA, RNG...),
    floating-point weights in float16 when ``half`` (a float32 network loads them back unchanged in
    shape; ``load_state_dict`` converts), the model's name and version recorded; with its SHA-256
    inside (:func:`versemi.checkpoint.save_checkpoint`).

    Returns:
        ``target``.
    """
    from versemi.checkpoint import Checkpoint

    checkpoint = Checkpoint.load(source)
    weights = {k: (v.half() if half and v.is_floating_point() else v) for k, v in checkpoint.weights.items()}
    compact = Checkpoint(
        model_config=checkpoint.model_config, label_space=checkpoint.label_space, plans=checkpoint.plans,
        weights=weights, postprocessing=dict(checkpoint.postprocessing),
        model_name=model_name or checkpoint.model_name, model_version=model_version or checkpoint.model_version,
    )
    return compact.save(target)


def write_catalogue_entry(catalogue_file: str | Path, entry: Mapping[str, Any]) -> Path:
    """Add ``entry`` to a catalogue file, replacing an entry of the same name and version (atomically);
    an entry marked default unmarks the other names' defaults (one default per catalogue).

    Raises:
        CatalogueError: the resulting catalogue is invalid.
    """
    path = Path(catalogue_file)
    document = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else catalogue_document([])
    models = [m for m in document.get("models", []) if (m.get("name"), m.get("version")) != (entry["name"], entry["version"])]
    if entry.get("default"):
        models = [{k: v for k, v in m.items() if k != "default"} if m.get("name") != entry["name"] else m for m in models]
    models.append(dict(entry))
    models.sort(key=lambda m: (str(m.get("name")), version_key(str(m.get("version")))))
    document = {**document, "models": models}
    parse_catalogue(document, source=str(path), base_url=path.resolve().as_uri(), base_dir=path.resolve().parent)
    return atomic_write_json(path, document)


__all__ = ["catalogue_entry", "inference_checkpoint", "parse_heldout", "plans_summary", "write_catalogue_entry"]
