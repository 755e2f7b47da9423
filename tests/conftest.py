"""Shared pytest fixtures. Tests make their own small data; ../shared/data is optional."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Two CPU cores on CI: keep every test process to a predictable thread count.
torch.set_num_threads(int(os.environ.get("VERSEMI_TEST_THREADS", "1")))

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


# What the optional real-data tests read; each behaviour they check is also covered by a default test on
# generated or bundled data (examples/data, recorded fingerprints).
SHARED_DATA_FILES = ("Dataset001_Hippocampus/dataset.json", "Dataset002_LeftAtrium/dataset.json",
                     "Dataset003_ACDC/dataset.json", "protocol.json")


@pytest.fixture
def shared_data() -> Path:
    """The optional real datasets beside the checkout; skips the test, naming what is missing, without them."""
    missing = [name for name in SHARED_DATA_FILES if not (SHARED_DATA / name).is_file()]
    if missing:
        pytest.skip(f"real data not present at {SHARED_DATA} (optional; missing {', '.join(missing)})")
    return SHARED_DATA


@pytest.fixture
def synthetic_datasets(tmp_path: Path) -> dict[str, Path]:
    """Two small generated nnU-Net datasets that annotate different targets (MR and CT)."""
    from versemi.data.synthetic import SyntheticStructure, make_nnunet_dataset

    a = make_nnunet_dataset(
        tmp_path, "Dataset901_Alpha", [SyntheticStructure("organ_a", 1, 1.0)], num_cases=4, seed=1
    )
    b = make_nnunet_dataset(
        tmp_path,
        "Dataset902_Beta",
        [SyntheticStructure("spleen", 1, 1.5), SyntheticStructure("liver", 2, -1.0)],
        num_cases=4,
        modality="CT",
        spacing_xyz=(1.2, 1.2, 2.0),
        seed=2,
    )
    return {"Dataset901_Alpha": a, "Dataset902_Beta": b}


@pytest.fixture(scope="session")
def trained_payload() -> dict:
    """Checkpoint payload of a tiny model trained for a few dozen steps (shared by every test)."""
    from inference.helpers import train_tiny_model

    return train_tiny_model()


@pytest.fixture(scope="session")
def trained_checkpoint(trained_payload: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``trained_payload`` saved as a checkpoint file (the inference and CLI tests share it)."""
    from versemi.checkpoint import save_checkpoint

    return save_checkpoint(trained_payload, tmp_path_factory.mktemp("model") / "tiny-model.pt")
