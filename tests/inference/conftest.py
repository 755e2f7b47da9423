"""Fixtures of the inference tests: a tiny model trained once per session, saved as a checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from versemi.checkpoint import save_checkpoint

from .helpers import train_tiny_model


@pytest.fixture(scope="session")
def trained_payload() -> dict:
    """Checkpoint payload of a tiny model trained for a few dozen steps (shared by every test)."""
    return train_tiny_model()


@pytest.fixture(scope="session")
def trained_checkpoint(trained_payload: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(trained_payload, tmp_path_factory.mktemp("model") / "tiny-model.pt")
