"""Dataset folders: nnU-Net v2 raw datasets and plain folders of unlabeled scans.

An nnU-Net v2 raw dataset folder looks like::

    Dataset004_SpleenCT/
      dataset.json          {"channel_names": {"0": "CT"}, "labels": {"background": 0, "spleen": 1},
                             "numTraining": 41, "file_ending": ".nii.gz"}
      imagesTr/spleen_002_0000.nii.gz     <case>_<channel as 4 digits><file_ending>
      labelsTr/spleen_002.nii.gz          <case><file_ending>

This module only lists files and reads ``dataset.json``; images are read with
:func:`versemi.images.read_image`. Validation of the whole folder lives in :mod:`versemi.data.check`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from versemi.images import LABELMAP_EXTENSIONS, split_image_extension

# A dataset's images and labels: single-file formats (the registry is versemi.images').
SUPPORTED_ENDINGS: tuple[str, ...] = LABELMAP_EXTENSIONS
REQUIRED_DATASET_JSON_KEYS: tuple[str, ...] = ("channel_names", "labels", "numTraining", "file_ending")

_CHANNEL_RE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


class DatasetError(ValueError):
    """A dataset folder or ``dataset.json`` that cannot be used; the message names it (an image file
    that cannot be read is a :class:`versemi.images.ImageFileError`)."""


def split_ending(path: str | Path) -> tuple[str, str] | None:
    """Split a file name into (stem, supported ending), or ``None`` for an unsupported file.

    ``"case_0000.nii.gz"`` -> ``("case_0000", ".nii.gz")``; the match is case-insensitive but the
    returned stem keeps its case.
    """
    stem, ending = split_image_extension(Path(path).name)
    return (stem, ending) if stem and ending.lower() in SUPPORTED_ENDINGS else None


@dataclass(frozen=True)
class Case:
    """One scan: its channel image files, its label file (``None`` when unlabeled) and its dataset.

    Attributes:
        case_id: the case identifier (file name without channel suffix and ending).
        image_paths: one path per input channel, channel 0 first.
        label_path: the label file, or ``None`` for a scan used without labels.
        dataset: the name of the dataset (or unlabeled folder) the case comes from.
    """

    case_id: str
    image_paths: tuple[Path, ...]
    label_path: Path | None
    dataset: str

    @property
    def image_path(self) -> Path:
        """The single image file of a one-channel case (VerSemi models take one channel).

        Raises:
            DatasetError: the case has several channels.
        """
        if len(self.image_paths) != 1:
            raise DatasetError(
                f"{self.dataset}/{self.case_id}: has {len(self.image_paths)} channels "
                f"({', '.join(p.name for p in self.image_paths)}); VerSemi models use one channel per "
                "scan - make a single-channel copy of the dataset"
            )
        return self.image_paths[0]

    @property
    def is_labeled(self) -> bool:
        return self.label_path is not None

    def without_label(self) -> "Case":
        """The same scan as an unlabeled case (its label file is forgotten, never read)."""
        return Case(self.case_id, self.image_paths, None, self.dataset)


def load_dataset_json(path: str | Path) -> dict[str, Any]:
    """Read and minimally validate a ``dataset.json`` (an object with the required keys).

    Raises:
        DatasetError: missing file, invalid JSON, not an object, or missing required keys.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: dataset.json not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: invalid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: must be a JSON object")
    missing = [k for k in REQUIRED_DATASET_JSON_KEYS if k not in data]
    if missing:
        raise DatasetError(f"{path}: missing required key(s): {', '.join(missing)}")
    if data["file_ending"] not in SUPPORTED_ENDINGS:
        raise DatasetError(
            f"{path}: file_ending {data['file_ending']!r} is not supported; use one of "
            f"{', '.join(SUPPORTED_ENDINGS)}"
        )
    if not isinstance(data["channel_names"], dict) or "0" not in data["channel_names"]:
        raise DatasetError(f"{path}: channel_names must be an object with at least channel \"0\"")
    if not isinstance(data["labels"], dict):
        raise DatasetError(f"{path}: labels must be an object mapping label name -> value")
    return data


class NnUNetDataset:
    """An nnU-Net v2 raw dataset folder (``imagesTr``, ``labelsTr``, ``dataset.json``).

    Args:
        root: the dataset folder, e.g. ``.../Dataset001_Hippocampus``.

    Raises:
        DatasetError: ``root`` is not a folder (``dataset.json`` problems surface on first use).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: dataset folder not found")

    def __repr__(self) -> str:
        return f"NnUNetDataset({str(self.root)!r})"

    @property
    def name(self) -> str:
        """The folder name, e.g. ``Dataset001_Hippocampus`` (the key used by label mappings)."""
        return self.root.name

    @property
    def images_dir(self) -> Path:
        return self.root / "imagesTr"

    @property
    def labels_dir(self) -> Path:
        return self.root / "labelsTr"

    @property
    def dataset_json_path(self) -> Path:
        return self.root / "dataset.json"

    @cached_property
    def dataset_json(self) -> dict[str, Any]:
        """The parsed ``dataset.json`` (validated for the required keys)."""
        return load_dataset_json(self.dataset_json_path)

    @property
    def file_ending(self) -> str:
        return str(self.dataset_json["file_ending"])

    @property
    def channel_names(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in self.dataset_json["channel_names"].items()}

    @property
    def num_channels(self) -> int:
        return len(self.dataset_json["channel_names"])

    @property
    def modality(self) -> str:
        """The modality of channel 0 as written in ``channel_names`` (e.g. ``"CT"``, ``"MRI"``)."""
        return self.channel_names["0"]

    @property
    def labels(self) -> dict[str, int]:
        """Label name -> value, background included.

        Raises:
            DatasetError: a label value is not an integer (nnU-Net region labels are unsupported).
        """
        out: dict[str, int] = {}
        for name, value in self.dataset_json["labels"].items():
            if isinstance(value, bool) or not isinstance(value, int):
                raise DatasetError(
                    f"{self.dataset_json_path}: label {name!r} has value {value!r}; expected an integer "
                    "(region labels given as lists are not supported)"
                )
            out[str(name)] = value
        return out

    @property
    def label_values(self) -> list[int]:
        """The declared label values, sorted, background (0) included."""
        return sorted(set(self.labels.values()))

    @property
    def foreground_values(self) -> list[int]:
        """The declared label values other than background, sorted."""
        return [v for v in self.label_values if v != 0]

    @property
    def num_training(self) -> int:
        return int(self.dataset_json["numTraining"])

    # --- cases ----------------------------------------------------------------------------------
    def _channel_files(self) -> dict[str, dict[int, Path]]:
        """case id -> {channel index: path} for image files named like nnU-Net expects."""
        found: dict[str, dict[int, Path]] = {}
        if not self.images_dir.is_dir():
            return found
        ending = self.file_ending
        for path in self.images_dir.iterdir():
            # Hidden files (e.g. macOS "._case_0000.nii.gz" resource forks) are not cases.
            if path.name.startswith(".") or not path.name.endswith(ending) or not path.is_file():
                continue
            m = _CHANNEL_RE.match(path.name[: -len(ending)])
            if m:
                found.setdefault(m["case"], {})[int(m["channel"])] = path
        return found

    def _label_files(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        if not self.labels_dir.is_dir():
            return found
        ending = self.file_ending
        for path in self.labels_dir.iterdir():
            if path.name.startswith("."):
                continue
            if path.name.endswith(ending) and len(path.name) > len(ending) and path.is_file():
                found[path.name[: -len(ending)]] = path
        return found

    @cached_property
    def cases(self) -> list[Case]:
        """Every case with a channel-0 image, sorted by case id.

        ``image_paths`` lists the expected file of every channel in ``channel_names`` (whether or not
        it exists: :func:`versemi.data.check.check_dataset` reports missing ones); ``label_path`` is
        the label file or ``None`` when ``labelsTr`` has none for the case.
        """
        channels = self._channel_files()
        labels = self._label_files()
        ending = self.file_ending
        cases = []
        for case_id in sorted(channels):
            if 0 not in channels[case_id]:
                continue
            image_paths = tuple(
                self.images_dir / f"{case_id}_{c:04d}{ending}" for c in range(self.num_channels)
            )
            cases.append(Case(case_id, image_paths, labels.get(case_id), self.name))
        return cases

    @property
    def case_ids(self) -> list[str]:
        return [c.case_id for c in self.cases]

    def case(self, case_id: str) -> Case:
        """The case with this id.

        Raises:
            KeyError: no such case (the message names the dataset folder).
        """
        for c in self.cases:
            if c.case_id == case_id:
                return c
        raise KeyError(f"{self.root}: no case {case_id!r} in imagesTr")

    def __len__(self) -> int:
        return len(self.cases)


class ImageFolder:
    """A plain folder of unlabeled scans: every supported image file is one single-channel case.

    The case id is the file name without its ending; files in sub-folders, hidden files and other
    files are ignored.

    Args:
        root: the folder.
        name: the name the cases carry as ``dataset`` (default: the folder name).

    Raises:
        DatasetError: ``root`` is not a folder, or two files share a case id.
    """

    def __init__(self, root: str | Path, name: str | None = None) -> None:
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: folder of unlabeled scans not found")
        self.name = name or self.root.name

    def __repr__(self) -> str:
        return f"ImageFolder({str(self.root)!r})"

    @cached_property
    def cases(self) -> list[Case]:
        """One unlabeled case per image file, sorted by case id."""
        by_id: dict[str, Path] = {}
        for path in sorted(self.root.iterdir()):
            split = split_ending(path)
            if split is None or path.name.startswith(".") or not path.is_file():
                continue
            stem = split[0]
            if stem in by_id:
                raise DatasetError(
                    f"{self.root}: {by_id[stem].name} and {path.name} have the same case id {stem!r}"
                )
            by_id[stem] = path
        return [Case(cid, (p,), None, self.name) for cid, p in sorted(by_id.items())]

    @property
    def case_ids(self) -> list[str]:
        return [c.case_id for c in self.cases]

    def __len__(self) -> int:
        return len(self.cases)
