"""Real scans registered in Slicer's Sample Data module, so the module can be tried in two clicks.

The scans are the small cases bundled with VerSemi (``examples/data``, Medical Segmentation
Decathlon, CC BY-SA 4.0): the extension build copies them to ``Resources/SampleData``; a module used
from a repository checkout reads them from ``examples/data``. They are registered with ``file://``
URIs and SHA-256 checksums: Sample Data copies them into its cache and loads them as volumes.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional
from .i18n import _

CATEGORY = "VerSemi"


@dataclass(frozen=True)
class Sample:
    """One scan offered in the Sample Data module.

    Attributes:
        name: the name shown in the Sample Data module.
        path: the file, relative to the data folder (``examples/data`` layout).
        node_name: the volume node's name once loaded.
        thumbnail: the thumbnail file name in ``Resources/Icons/SampleData``.
        prompts: structures the bundled cases are labelled with (what to tick in the panel).
    """

    name: str
    path: str
    node_name: str
    thumbnail: str
    prompts: tuple[str, ...]

    @property
    def file_name(self) -> str:
        """The name Sample Data stores the file under in its cache (unique to VerSemi)."""
        return f"VerSemi-{Path(self.path).name}"


SAMPLES = (
    Sample(
        "VerSemi hippocampus MR",
        "Dataset001_Hippocampus/imagesTr/hippocampus_001_0000.nii.gz",
        "VerSemiHippocampusMR",
        "VerSemiHippocampusMR.png",
        ("hippocampus_anterior", "hippocampus_posterior"),
    ),
    Sample(
        "VerSemi spleen CT",
        "Dataset004_SpleenCT/imagesTr/spleen_002_0000.nii.gz",
        "VerSemiSpleenCT",
        "VerSemiSpleenCT.png",
        ("spleen",),
    ),
)


def data_root(resources_dir: str | os.PathLike[str]) -> Optional[Path]:
    """The folder holding the sample scans: the bundled copy, else the checkout's ``examples/data``."""
    resources_dir = Path(resources_dir)
    for root in (resources_dir / "SampleData", resources_dir.parent.parent / "examples" / "data"):
        if all((root / sample.path).is_file() for sample in SAMPLES):
            return root
    return None


def sha256_of(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sample_sources(resources_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Keyword arguments of ``SampleDataLogic.registerCustomSampleDataSource``, one dict per scan.

    Empty when the scans are not found (a broken install: the module still works without them).
    """
    root = data_root(resources_dir)
    if root is None:
        return []
    icons = Path(resources_dir) / "Icons" / "SampleData"
    sources = []
    for sample in SAMPLES:
        path = root / sample.path
        sources.append({
            "category": CATEGORY,
            "sampleName": sample.name,
            "uris": [path.resolve().as_uri()],
            "fileNames": [sample.file_name],
            "nodeNames": [sample.node_name],
            "thumbnailFileName": str(icons / sample.thumbnail),
            "loadFileType": "VolumeFile",
            "checksums": [f"SHA256:{sha256_of(path)}"],
        })
    return sources


def sample_path(resources_dir: str | os.PathLike[str], node_name: str) -> Path:
    """The scan file of a sample (for the self-test, which loads it without the Sample Data module).

    Raises:
        FileNotFoundError: the sample data is not installed (names the folders looked in).
    """
    root = data_root(resources_dir)
    sample = next((s for s in SAMPLES if s.node_name == node_name), None)
    if sample is None:
        raise KeyError(_("unknown sample {node_name!r}; known: {value}").format(node_name=node_name, value=', '.join(s.node_name for s in SAMPLES)))
    if root is None:
        raise FileNotFoundError(
            _("sample data not found in {value} nor in the checkout's examples/data").format(value=Path(resources_dir) / 'SampleData')
        )
    return root / sample.path
