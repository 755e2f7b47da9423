"""Models the panel offers: catalogue models (``versemi models list --json``) and local checkpoints.

Everything that needs ``versemi`` or ``torch`` runs in a short subprocess of the predictor's Python,
so Slicer's GUI never imports torch (large, slow to import, DLL clashes on Windows). Results are
cached per file (path, size, modification time).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from .i18n import _

SYNTHETIC_PROMPT_NAME = "all_foreground"  # versemi.labels.SYNTHETIC_PROMPT_NAME

# Prints the label space of a checkpoint as JSON (argv[1] = path); on failure {"error": ...}, exit 2.
_LABEL_SPACE_SNIPPET = r"""
import json, sys
try:
    from versemi.checkpoint import Checkpoint
    checkpoint = Checkpoint.load(sys.argv[1])
except Exception as exc:
    print(json.dumps({"error": str(exc)}))
    sys.exit(2)
print(json.dumps({"label_space": checkpoint.label_space.to_dict(),
                  "versemi_version": checkpoint.versemi_version,
                  "model_config": {k: v for k, v in checkpoint.model_config.items()
                                   if isinstance(v, (str, int, float, bool))}}))
"""


class ModelInfoError(RuntimeError):
    """A model's information cannot be read; the message names the model and the problem."""


@dataclass(frozen=True)
class PromptInfo:
    """One structure a model can segment; ``heldout_dice`` from the model's catalogue entry (None:
    not evaluated on held-out cases, or not a catalogue model)."""

    name: str
    synthetic: bool = False
    color: tuple[int, int, int] | None = None
    heldout_dice: float | None = None

    @property
    def label(self) -> str:
        """The prompt as the panel lists it: name and held-out Dice."""
        if self.synthetic:
            return _("{name}  (union of all targets)").format(name=self.name)
        if self.heldout_dice is None:
            return _("{name}  (no held-out Dice)").format(name=self.name)
        return _("{name}  (held-out Dice {dice:.1f} %)").format(name=self.name, dice=100 * self.heldout_dice)


#: What the panel sends when every structure is ticked: ``versemi predict`` then runs only the
#: prompts whose modality fits the scan and names the others (its modality guard).
ALL_PROMPTS = "all"


def requested_prompts(checked: list[str], prompts: list[PromptInfo]) -> list[str]:
    """``[ALL_PROMPTS]`` when every real prompt (and no synthetic one) is ticked, else the ticked names:
    "all" means all that fit this scan."""
    real = [p.name for p in prompts if not p.synthetic]
    if real and set(checked) == set(real):
        return [ALL_PROMPTS]
    return list(checked)


def with_heldout_dice(prompts: list[PromptInfo], choice: "ModelChoice") -> list[PromptInfo]:
    """``prompts`` (e.g. read from the checkpoint, with colours) with the held-out Dice of ``choice``."""
    dice = {p.name: p.heldout_dice for p in choice.prompts}
    return [dataclasses.replace(p, heldout_dice=dice.get(p.name, p.heldout_dice)) for p in prompts]


@dataclass
class ModelChoice:
    """An entry of the model selector.

    Attributes:
        key: what ``versemi predict --model`` takes: ``name@version`` or an absolute checkpoint path.
        label: the text shown in the selector.
        source: ``catalogue`` / ``imported`` (from ``versemi models list``) or ``local`` (a file).
        path: the checkpoint file when it is on this machine.
        prompts: the model's prompts (from the catalogue or the checkpoint); may be empty until read.
    """

    key: str
    label: str
    source: str
    path: str | None = None
    prompts: list[PromptInfo] = field(default_factory=list)
    description: str = ""
    status: str = ""
    default: bool = False
    size: int | None = None
    licence: str = ""
    sha256: str = ""
    removable: bool = False
    embedded: bool = False

    @property
    def installed(self) -> bool:
        return self.path is not None and os.path.isfile(self.path)


def prompts_from_names(names: list[str], heldout_dice: dict[str, Any] | None = None) -> list[PromptInfo]:
    dice = {str(k): float(v) for k, v in (heldout_dice or {}).items() if isinstance(v, (int, float))}
    return [PromptInfo(str(n), synthetic=str(n) == SYNTHETIC_PROMPT_NAME, heldout_dice=dice.get(str(n))) for n in names]


def parse_models_list(text: str) -> list[ModelChoice]:
    """Model choices from the output of ``versemi models list --json``."""
    try:
        document = json.loads(text)
        rows = document["models"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ModelInfoError(_("unexpected output of 'versemi models list --json': {exc}").format(exc=exc)) from exc
    models_dir = str(document.get("models_dir") or "") if isinstance(document, dict) else ""
    choices = []
    for row in rows:
        name, version = str(row.get("name", "")), str(row.get("version", ""))
        if not name:
            continue
        spec = f"{name}@{version}" if version else name
        status = str(row.get("status", ""))
        embedded = row.get("embedded") is True  # the file ships with versemi: nothing to download
        label = f"{spec} ({status}{', ships with versemi' if embedded else ''})" if status else spec
        if row.get("supported") is False:
            label += " - needs a newer versemi"
        default = row.get("default") is True
        if default:
            label += " - default"
        path = row.get("path") or None
        size = row.get("size")
        choices.append(
            ModelChoice(
                key=spec,
                label=label,
                source="catalogue" if row.get("source") == "catalogue" else "imported",
                path=path,
                prompts=prompts_from_names(list(row.get("label_space") or []), row.get("heldout_dice")),
                description=str(row.get("description") or ""),
                status=status,
                default=default,
                size=int(size) if isinstance(size, int) else None,
                licence=str(row.get("licence") or ""),
                sha256=str(row.get("sha256") or ""),
                embedded=embedded,
                # Only files in the model cache are removed from the panel (not one shipped in the package).
                removable=bool(path and models_dir and _same_dir(os.path.dirname(path), models_dir)),
            )
        )
    return choices


def _same_dir(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.normcase(os.path.abspath(a)) == os.path.normcase(os.path.abspath(b))


def model_card_text(choice: ModelChoice) -> str:
    """A model card from what ``versemi models list`` says (shown until ``versemi models info`` answers)."""
    lines = [choice.key]
    if choice.description:
        lines.append(choice.description)
    if choice.prompts:
        lines.append("Structures (held-out Dice): " + ", ".join(
            p.name + ("" if p.heldout_dice is None else f" {100 * p.heldout_dice:.1f} %") for p in choice.prompts))
    if choice.licence:
        lines.append(f"Licence of the weights: {choice.licence}")
    if choice.path:
        lines.append(f"File: {choice.path}")
    if choice.sha256:
        lines.append(f"SHA-256: {choice.sha256}")
    if choice.default:
        lines.append("Default model.")
    if choice.embedded:
        lines.append("Ships with versemi: no download needed.")
    return "\n".join(lines)


def read_model_card(choice: ModelChoice, python_executable: str = sys.executable, timeout: float = 60.0) -> str:
    """``versemi models info NAME@VERSION`` when this versemi has it, else :func:`model_card_text`."""
    completed = _run([python_executable, "-m", "versemi.cli", "models", "info", choice.key], timeout)
    if completed.returncode == 0 and completed.stdout.strip():
        return completed.stdout.strip()
    return model_card_text(choice)


def remove_model(spec: str, python_executable: str = sys.executable, timeout: float = 60.0) -> str:
    """``versemi models remove NAME@VERSION``: delete a model from the cache; returns its message.

    Raises:
        ModelInfoError: the command failed (its last error line).
    """
    completed = _run([python_executable, "-m", "versemi.cli", "models", "remove", spec], timeout)
    if completed.returncode != 0:
        raise ModelInfoError(_("'versemi models remove {spec}' failed: {last_line}").format(spec=spec, last_line=_last_line(completed.stderr)))
    return _last_line(completed.stdout) or f"Removed {spec}."


def list_catalogue_models(python_executable: str = sys.executable, timeout: float = 120.0) -> list[ModelChoice]:
    """Catalogue and installed models, from ``versemi models list --json`` (no network needed)."""
    completed = _run([python_executable, "-m", "versemi.cli", "models", "list", "--json"], timeout)
    if completed.returncode != 0:
        raise ModelInfoError(_("'versemi models list' failed: {last_line}").format(last_line=_last_line(completed.stderr)))
    return parse_models_list(completed.stdout)


def label_space_prompts(label_space: dict[str, Any]) -> list[PromptInfo]:
    """Prompts of a ``LabelSpace.to_dict()`` (as stored in checkpoints)."""
    prompts = []
    for p in label_space.get("prompts", []):
        color = p.get("color")
        prompts.append(
            PromptInfo(
                name=str(p["name"]),
                synthetic=bool(p.get("synthetic", False)),
                color=tuple(int(c) for c in color) if color else None,  # type: ignore[arg-type]
            )
        )
    return prompts


_label_space_cache: dict[tuple[str, int, int], list[PromptInfo]] = {}


def read_checkpoint_prompts(
    checkpoint_path: str | os.PathLike[str], python_executable: str = sys.executable, timeout: float = 300.0
) -> list[PromptInfo]:
    """The prompts of a checkpoint file, read in a subprocess (cached per file version)."""
    path = os.path.abspath(os.fspath(checkpoint_path))
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise ModelInfoError(_("{path}: checkpoint file not found").format(path=path)) from exc
    key = (path, stat.st_size, stat.st_mtime_ns)
    if key not in _label_space_cache:
        completed = _run([python_executable, "-c", _LABEL_SPACE_SNIPPET, path], timeout)
        try:
            data = json.loads(completed.stdout.strip().splitlines()[-1])
        except (json.JSONDecodeError, IndexError):
            data = {"error": _last_line(completed.stderr) or "unexpected output"}
        if completed.returncode != 0 or "error" in data:
            message = str(data.get("error") or f"{path}: cannot read checkpoint")
            raise ModelInfoError(message if path in message else f"{path}: {message}")
        _label_space_cache[key] = label_space_prompts(data["label_space"])
    return list(_label_space_cache[key])


def local_checkpoint_choice(path: str | os.PathLike[str]) -> ModelChoice:
    """A selector entry for a checkpoint file chosen with "Browse local checkpoint..."."""
    path = os.path.abspath(os.fspath(path))
    return ModelChoice(key=path, label=f"{Path(path).name} (local file)", source="local", path=path)


def download_command(spec: str, python_executable: str = sys.executable) -> list[str]:
    """``versemi models download`` with JSON progress (parsed by ``process.ProcessRunner``)."""
    return [python_executable, "-m", "versemi.cli", "models", "download", spec, "--progress", "json"]


def _run(command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    from .process import subprocess_environment

    env = subprocess_environment()
    try:
        return subprocess.run(
            command, capture_output=True, text=True, encoding="utf-8", errors="replace",
            timeout=timeout, check=False, env=env,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ModelInfoError(_("cannot run {command}: {exc}").format(command=command[0], exc=exc)) from exc


def _last_line(text: str) -> str:
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""
