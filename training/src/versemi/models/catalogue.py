"""The model catalogue: which trained models exist, where to get them and how to verify them.

A catalogue is a JSON file (local path or HTTP(S) URL) of entries: name, version, url, sha256, size,
label space, licence and, optionally, an ``embedded`` checkpoint and model ``card`` shipped beside it,
the training datasets' ``plans`` and ``heldout`` case ids (every field: docs/MODELS.md). Relative
URLs and files resolve against the catalogue's own location, so a folder with a catalogue and its
models is a complete mirror; unknown keys are ignored so older releases read newer catalogues.

Which catalogue: ``--catalogue``, else ``$VERSEMI_CATALOGUE``, else ``versemi/resources/catalogue.json``.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from versemi import __version__
from versemi.environment import catalogue_source

CATALOGUE_FORMAT = "versemi-catalogue"
CATALOGUE_FORMAT_VERSION = 1
PACKAGED_CATALOGUE = "packaged"  # how the shipped catalogue names itself in messages

# Names and versions become file names in the cache: keep them to portable, unambiguous characters.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_URL_SCHEMES = {"http", "https", "file"}
# A catalogue is a small text file; refuse anything that is clearly not one.
_MAX_CATALOGUE_BYTES = 16 * 1024 * 1024


class ModelError(ValueError):
    """Base class of every model catalogue / download / cache error (one-line, user-facing)."""


class CatalogueError(ModelError):
    """A catalogue that cannot be read or is invalid; the message names the file and the problem."""


class CatalogueUnavailableError(CatalogueError):
    """A catalogue URL or file that cannot be fetched right now (offline, missing)."""


class UnknownModelError(ModelError):
    """A model name (or name@version) that the catalogue does not list."""


def validate_identifier(value: str, what: str) -> str:
    """Check a model name or version is safe to use in a file name.

    Args:
        value: the name or version.
        what: ``"name"`` or ``"version"`` (for the message).

    Raises:
        ModelError: empty, or characters other than letters, digits, ``.``, ``_``, ``+``, ``-``.
    """
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise ModelError(
            f"invalid model {what} {value!r}: use letters, digits, '.', '_', '+', '-' "
            "and start with a letter or digit"
        )
    return value


def version_key(version: str) -> tuple[tuple[int, ...], str]:
    """Sort key for versions: the dotted numeric prefix compared as numbers, then the rest as text.

    ``"1.10.0" > "1.9.2"``; ``"2" > "1.99"``; versions without a numeric prefix sort first.
    """
    match = re.match(r"\d+(?:\.\d+)*", version)
    numbers = tuple(int(p) for p in match.group(0).split(".")) if match else ()
    return numbers, version[match.end() if match else 0 :]


def parse_model_spec(spec: str) -> tuple[str, str | None]:
    """Split ``"NAME[@VERSION]"`` into ``(name, version or None)`` and validate both parts."""
    name, sep, version = spec.partition("@")
    validate_identifier(name, "name")
    if sep:
        validate_identifier(version, "version")
        return name, version
    return name, None


@dataclass(frozen=True)
class CatalogueEntry:
    """One downloadable model.

    Attributes:
        name: model name (unique together with ``version``).
        version: model version; the newest is chosen when none is asked for.
        url: absolute ``http(s)://`` or ``file://`` URL of the checkpoint (relative URLs in the
            file are resolved when the catalogue is loaded).
        sha256: lower-case hex SHA-256 of the checkpoint file.
        size: file size in bytes.
        label_space: the prompt names the model segments (in prompt-id order).
        licence: licence of the weights (e.g. ``"CC-BY-4.0"``).
        description: one line for humans.
        min_versemi: oldest versemi release that can use the model, or ``None``.
        default: the model ``versemi predict`` uses without ``--model`` and the Slicer panel
            preselects (``"default": true`` in the file).
        embedded: the ``embedded`` path as written in the catalogue (relative to its folder), or None.
        embedded_path: where that file is (absolute), or None: not embedded, or a catalogue read over
            HTTP(S) (which has no folder to ship files in).
        card: the ``card`` path as written (a markdown model card), or None.
        card_path: where the card is (absolute), or None.
        plans: dataset -> ``{"modality", "target_spacing" (x, y, z mm), "patch_size" (x, y, z)}``,
            a summary of the checkpoint's plans (informative; the checkpoint's own plans are used).
        heldout: dataset -> case ids the model was never trained on; a dataset in ``plans`` without
            a ``heldout`` list was trained on whole (see :meth:`is_heldout`).
        localisers: dataset -> ``{"file", "sha256"}``: the localiser of that dataset's structures
            (coarse-to-fine prediction, :mod:`versemi.inference.coarse_to_fine`), a file beside the
            catalogue like ``embedded``.
        localiser_paths: dataset -> where that file is (absolute), or None without a catalogue folder.
        heldout_dice: prompt -> its mean Dice on the held-out cases (the card's number), shown by
            ``versemi models info`` and the Slicer panel.
    """

    name: str
    version: str
    url: str
    sha256: str
    size: int
    label_space: tuple[str, ...]
    licence: str
    description: str = ""
    min_versemi: str | None = None
    default: bool = False
    embedded: str | None = None
    embedded_path: Path | None = None
    card: str | None = None
    card_path: Path | None = None
    plans: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, hash=False)
    heldout: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    localisers: Mapping[str, Mapping[str, str]] = field(default_factory=dict, hash=False)
    localiser_paths: Mapping[str, Path | None] = field(default_factory=dict, hash=False)
    heldout_dice: Mapping[str, float] = field(default_factory=dict, hash=False)

    @property
    def spec(self) -> str:
        """``"name@version"``."""
        return f"{self.name}@{self.version}"

    @property
    def file_name(self) -> str:
        """The checkpoint's file name in the model cache: ``<name>-<version>.pt``."""
        return f"{self.name}-{self.version}.pt"

    def is_supported(self, versemi_version: str = __version__) -> bool:
        """True when this versemi release is new enough for the model."""
        return self.min_versemi is None or version_key(versemi_version) >= version_key(self.min_versemi)

    def is_heldout(self, dataset: str, case: str) -> bool | None:
        """Whether the model never trained on ``case`` of ``dataset``.

        Returns:
            True: listed in ``heldout``. False: the entry lists held-out cases of that dataset and this
            is not one, or the model was trained on the dataset (it is in ``plans``) and lists none of
            its cases as held out (e.g. a dataset of one case, trained on). None: unknown (the entry
            says nothing about the dataset).
        """
        if dataset in self.heldout:
            return case in self.heldout[dataset]
        return False if dataset in self.plans else None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "url": self.url,
            "sha256": self.sha256,
            "size": self.size,
            "label_space": list(self.label_space),
            "licence": self.licence,
            "description": self.description,
        }
        if self.min_versemi is not None:
            d["min_versemi"] = self.min_versemi
        if self.default:
            d["default"] = True
        for key in ("embedded", "card"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        if self.plans:
            d["plans"] = {k: dict(v) for k, v in self.plans.items()}
        if self.heldout:
            d["heldout"] = {k: list(v) for k, v in self.heldout.items()}
        if self.localisers:
            d["localisers"] = {k: dict(v) for k, v in self.localisers.items()}
        if self.heldout_dice:
            d["heldout_dice"] = dict(self.heldout_dice)
        return d


@dataclass
class Catalogue:
    """The models a catalogue lists, plus where it came from (for messages and relative URLs)."""

    entries: list[CatalogueEntry] = field(default_factory=list)
    source: str = PACKAGED_CATALOGUE

    def __iter__(self):
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def versions(self, name: str) -> list[CatalogueEntry]:
        """Entries called ``name``, newest version first."""
        found = [e for e in self.entries if e.name == name]
        return sorted(found, key=lambda e: version_key(e.version), reverse=True)

    def find(self, name: str, version: str | None = None) -> CatalogueEntry | None:
        """The entry ``name@version`` (newest version when ``version`` is None), or None."""
        for entry in self.versions(name):
            if version is None or entry.version == version:
                return entry
        return None

    def default_entry(self) -> CatalogueEntry | None:
        """The default model (``"default": true``; its newest such version), or None when none is."""
        defaults = [e for e in self.entries if e.default]
        return max(defaults, key=lambda e: version_key(e.version)) if defaults else None

    def get(self, spec: str) -> CatalogueEntry:
        """The entry for ``"NAME[@VERSION]"``.

        Raises:
            UnknownModelError: not listed; the message lists what the catalogue has.
        """
        name, version = parse_model_spec(spec)
        entry = self.find(name, version)
        if entry is None:
            listed = ", ".join(e.spec for e in self.entries) or "none"
            raise UnknownModelError(
                f"model {spec!r} is not in the catalogue ({self.source}); listed models: {listed}"
            )
        return entry


# --- loading -----------------------------------------------------------------------------------


def _is_url(source: str) -> bool:
    return urllib.parse.urlsplit(source).scheme.lower() in _URL_SCHEMES and "://" in source


def _read_source(source: str) -> tuple[bytes, str]:
    """Bytes of a catalogue and the base URL that relative model URLs (and embedded files) resolve against."""
    if _is_url(source):
        try:
            with urllib.request.urlopen(source, timeout=30) as response:
                data = response.read(_MAX_CATALOGUE_BYTES + 1)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CatalogueUnavailableError(f"catalogue {source}: cannot fetch: {reason}") from exc
        return data, source
    path = Path(source).expanduser()
    if not path.is_file():
        raise CatalogueUnavailableError(f"catalogue {path}: file not found")
    with path.open("rb") as f:
        data = f.read(_MAX_CATALOGUE_BYTES + 1)
    return data, path.resolve().as_uri()


def load_catalogue(source: str | Path | None = None) -> Catalogue:
    """Load and validate a catalogue.

    Args:
        source: a file path or an ``http(s)://`` / ``file://`` URL; None = ``$VERSEMI_CATALOGUE``,
            else the catalogue shipped with versemi.

    Raises:
        CatalogueUnavailableError: the file or URL cannot be read.
        CatalogueError: not JSON, or an invalid entry (the message names the catalogue and entry).
    """
    if source is None:
        source = catalogue_source()
    if source is None:
        folder = resources.files("versemi").joinpath("resources")
        data, base, label = folder.joinpath("catalogue.json").read_bytes(), "", PACKAGED_CATALOGUE
        # Embedded models live beside the packaged catalogue (a normal, unzipped install).
        base_dir = Path(str(folder)) if isinstance(folder, Path) else None
    else:
        label = str(source)
        data, base = _read_source(label)
        base_dir = _local_folder(base)
    if len(data) > _MAX_CATALOGUE_BYTES:
        raise CatalogueError(f"catalogue {label}: larger than {_MAX_CATALOGUE_BYTES} bytes; not a catalogue")
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CatalogueError(f"catalogue {label}: not valid JSON: {exc}") from exc
    return parse_catalogue(document, source=label, base_url=base, base_dir=base_dir)


def _local_folder(base_url: str) -> Path | None:
    """The folder of a catalogue read from a file (``file://`` base URL); None for HTTP(S)."""
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme.lower() != "file":
        return None
    return Path(urllib.request.url2pathname(parts.path)).parent


def is_remote_source(source: str | None) -> bool:
    """True for an ``http(s)://`` catalogue (reading it may need the network)."""
    return source is not None and _is_url(source) and urllib.parse.urlsplit(source).scheme.lower() != "file"


def parse_catalogue(
    document: Any, source: str = "<memory>", base_url: str = "", base_dir: Path | None = None
) -> Catalogue:
    """Validate a parsed catalogue document (the format: docs/MODELS.md).

    Args:
        document: the parsed JSON.
        source: where it came from (used in messages).
        base_url: URL that relative model URLs are resolved against ("" = relative URLs are errors).
        base_dir: the catalogue's folder, which ``embedded`` and ``card`` paths are resolved against
            (None: a catalogue without a folder, e.g. read over HTTP; those keys are then ignored).
    """
    where = f"catalogue {source}"
    if not isinstance(document, Mapping):
        raise CatalogueError(f"{where}: top level must be a JSON object with a 'models' list")
    if document.get("format") != CATALOGUE_FORMAT:
        raise CatalogueError(f"{where}: 'format' must be {CATALOGUE_FORMAT!r}")
    fmt_version = document.get("format_version")
    if fmt_version != CATALOGUE_FORMAT_VERSION:
        raise CatalogueError(
            f"{where}: format_version {fmt_version!r} is not readable by versemi {__version__} "
            f"(reads {CATALOGUE_FORMAT_VERSION})"
        )
    models = document.get("models")
    if not isinstance(models, list):
        raise CatalogueError(f"{where}: 'models' must be a list")
    entries: list[CatalogueEntry] = []
    seen: set[str] = set()
    for index, raw in enumerate(models):
        entry = _parse_entry(raw, f"{where}: models[{index}]", base_url, base_dir)
        if entry.spec in seen:
            raise CatalogueError(f"{where}: models[{index}]: duplicate entry {entry.spec}")
        seen.add(entry.spec)
        entries.append(entry)
    defaults = sorted({e.name for e in entries if e.default})
    if len(defaults) > 1:
        raise CatalogueError(f"{where}: more than one default model ({', '.join(defaults)}); mark one name as default")
    return Catalogue(entries, source=source)


def _label_names(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, Mapping) and isinstance(value.get("prompts"), list):
        # A LabelSpace dict: keep the prompt names in prompt-id order.
        names = [p.get("name") if isinstance(p, Mapping) else None for p in value["prompts"]]
    elif isinstance(value, list):
        names = value
    else:
        raise CatalogueError(f"{where}: 'label_space' must be a list of prompt names or a LabelSpace dict")
    if not names or not all(isinstance(n, str) and n for n in names):
        raise CatalogueError(f"{where}: 'label_space' must name at least one prompt, all non-empty strings")
    return tuple(names)


def _shipped_file(raw: Mapping[str, Any], key: str, where: str, base_dir: Path | None) -> tuple[str | None, Path | None]:
    """``embedded`` / ``card``: the path as written and where it is (None without a catalogue folder).

    Raises:
        CatalogueError: not a relative path inside the catalogue's folder.
    """
    value = raw.get(key)
    if value is None:
        return None, None
    if not isinstance(value, str) or not value.strip():
        raise CatalogueError(f"{where}: {key!r} must be a non-empty relative path")
    value = value.strip()
    relative = Path(value)
    if relative.is_absolute() or value.startswith(("/", "\\")) or ".." in relative.parts or "\\" in value or ":" in value:
        raise CatalogueError(
            f"{where}: {key!r} {value!r} must be a relative path inside the catalogue's folder, with '/' separators"
        )
    return value, (base_dir / relative) if base_dir is not None else None


def _text_list(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise CatalogueError(f"{what} must be a list of non-empty strings")
    return tuple(value)


def _number_triple(value: Any, kind: type, what: str) -> list[Any]:
    if (not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 3
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in value)
            or (kind is int and not all(float(v).is_integer() for v in value))):
        raise CatalogueError(f"{what} must be three positive {'integers' if kind is int else 'numbers'} (x, y, z)")
    return [kind(v) for v in value]


def _parse_plans(value: Any, where: str) -> dict[str, dict[str, Any]]:
    """The ``plans`` summary: dataset -> modality, target_spacing, patch_size (other keys kept)."""
    if not isinstance(value, Mapping):
        raise CatalogueError(f"{where}: 'plans' must map each dataset to its modality, target_spacing and patch_size")
    plans: dict[str, dict[str, Any]] = {}
    for dataset, plan in value.items():
        at = f"{where}: plans[{dataset!r}]"
        if not isinstance(plan, Mapping):
            raise CatalogueError(f"{at} must be an object")
        modality = plan.get("modality")
        if not isinstance(modality, str) or not modality:
            raise CatalogueError(f"{at}: 'modality' must be a non-empty string")
        plans[str(dataset)] = {
            **dict(plan),
            "modality": modality,
            "target_spacing": _number_triple(plan.get("target_spacing"), float, f"{at}: 'target_spacing'"),
            "patch_size": _number_triple(plan.get("patch_size"), int, f"{at}: 'patch_size'"),
        }
    return plans


def _parse_entry(raw: Any, where: str, base_url: str, base_dir: Path | None = None) -> CatalogueEntry:
    if not isinstance(raw, Mapping):
        raise CatalogueError(f"{where}: each model must be a JSON object")

    def text(key: str, required: bool = True) -> str | None:
        value = raw.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value.strip():
            raise CatalogueError(f"{where}: {key!r} must be a non-empty string")
        return value.strip()

    name, version = text("name"), text("version")
    where = f"{where} ({name}@{version})"
    try:
        validate_identifier(name, "name")  # type: ignore[arg-type]
        validate_identifier(version, "version")  # type: ignore[arg-type]
    except ModelError as exc:
        raise CatalogueError(f"{where}: {exc}") from None

    url = text("url")
    assert url is not None
    if not _is_url(url):
        if not base_url:
            raise CatalogueError(f"{where}: relative url {url!r} needs a catalogue loaded from a file or URL")
        url = urllib.parse.urljoin(base_url, url)
    if urllib.parse.urlsplit(url).scheme.lower() not in _URL_SCHEMES:
        raise CatalogueError(f"{where}: url {url!r} must be http://, https:// or file://")

    sha256 = (text("sha256") or "").lower()
    if not _SHA256_RE.match(sha256):
        raise CatalogueError(f"{where}: 'sha256' must be 64 hexadecimal digits")

    size = raw.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise CatalogueError(f"{where}: 'size' must be a positive integer (bytes)")

    if "label_space" not in raw:
        raise CatalogueError(f"{where}: 'label_space' is missing")
    labels = _label_names(raw["label_space"], where)

    # Accept the US spelling too: catalogues are hand-written.
    licence_key = "license" if raw.get("licence") is None and "license" in raw else "licence"
    licence = text(licence_key)

    description = raw.get("description", "")
    if not isinstance(description, str):
        raise CatalogueError(f"{where}: 'description' must be a string")
    min_versemi = text("min_versemi", required=False)
    if min_versemi is not None and not re.match(r"^\d+(\.\d+)*", min_versemi):
        raise CatalogueError(f"{where}: 'min_versemi' must be a version such as '0.2.0'")
    default = raw.get("default", False)
    if not isinstance(default, bool):
        raise CatalogueError(f"{where}: 'default' must be true or false")
    embedded, embedded_path = _shipped_file(raw, "embedded", where, base_dir)
    card, card_path = _shipped_file(raw, "card", where, base_dir)
    plans = _parse_plans(raw["plans"], where) if raw.get("plans") is not None else {}
    heldout_raw = raw.get("heldout")
    if heldout_raw is not None and not isinstance(heldout_raw, Mapping):
        raise CatalogueError(f"{where}: 'heldout' must map each dataset to a list of case ids")
    heldout = {str(k): _text_list(v, f"{where}: heldout[{k!r}]") for k, v in (heldout_raw or {}).items()}
    localisers, localiser_paths = _parse_localisers(raw.get("localisers"), where, base_dir)
    heldout_dice = _parse_dice(raw.get("heldout_dice"), where)

    return CatalogueEntry(
        name=name,  # type: ignore[arg-type]
        version=version,  # type: ignore[arg-type]
        url=url,
        sha256=sha256,
        size=size,
        label_space=labels,
        licence=licence,  # type: ignore[arg-type]
        description=description.strip(),
        min_versemi=min_versemi,
        default=default,
        embedded=embedded,
        embedded_path=embedded_path,
        card=card,
        card_path=card_path,
        plans=plans,
        heldout=heldout,
        localisers=localisers,
        localiser_paths=localiser_paths,
        heldout_dice=heldout_dice,
    )


def _parse_localisers(value: Any, where: str, base_dir: Path | None) -> tuple[dict[str, dict[str, str]], dict[str, Path | None]]:
    """``localisers``: dataset -> ``{"file": relative path, "sha256": hex}`` and where each file is."""
    if value is None:
        return {}, {}
    if not isinstance(value, Mapping):
        raise CatalogueError(f"{where}: 'localisers' must map each dataset to {{'file', 'sha256'}}")
    out: dict[str, dict[str, str]] = {}
    paths: dict[str, Path | None] = {}
    for dataset, item in value.items():
        at = f"{where}: localisers[{dataset!r}]"
        if not isinstance(item, Mapping) or not _SHA256_RE.match(str(item.get("sha256", "")).lower()):
            raise CatalogueError(f"{at} must be {{'file': relative path, 'sha256': 64 hexadecimal digits}}")
        file, path = _shipped_file(item, "file", at, base_dir)
        if file is None:
            raise CatalogueError(f"{at}: 'file' is missing")
        out[str(dataset)] = {"file": file, "sha256": str(item["sha256"]).lower()}
        paths[str(dataset)] = path
    return out, paths


def _parse_dice(value: Any, where: str) -> dict[str, float]:
    """``heldout_dice``: prompt -> a Dice in [0, 1]."""
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0 for v in value.values()):
        raise CatalogueError(f"{where}: 'heldout_dice' must map each prompt to a Dice between 0 and 1")
    return {str(k): float(v) for k, v in value.items()}


def catalogue_document(entries: Iterable[CatalogueEntry]) -> dict[str, Any]:
    """A catalogue JSON document for ``entries`` (what ``load_catalogue`` reads back)."""
    return {
        "format": CATALOGUE_FORMAT,
        "format_version": CATALOGUE_FORMAT_VERSION,
        "models": [e.to_dict() for e in entries],
    }
