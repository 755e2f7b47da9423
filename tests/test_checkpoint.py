"""versemi.checkpoint: every saved checkpoint carries its SHA-256, every load verifies it."""

from __future__ import annotations

import hashlib
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from versemi.checkpoint import (
    CHECKSUM_PREFIX,
    CheckpointError,
    CheckpointIntegrityWarning,
    load_checkpoint,
    save_checkpoint,
    stored_checksum,
    verify_checkpoint_file,
)


def _payload() -> dict:
    return {"model": {"w": torch.arange(50_000, dtype=torch.float32)}, "label_space": {"prompts": []}}


def test_saved_checkpoint_carries_a_checksum_of_itself(tmp_path: Path) -> None:
    path = save_checkpoint(_payload(), tmp_path / "a.pt")
    data = path.read_bytes()
    digest, covered = stored_checksum(path)
    assert covered == len(data) - len(CHECKSUM_PREFIX) - 64
    assert hashlib.sha256(data[:covered]).hexdigest() == digest
    assert zipfile.ZipFile(path).comment == CHECKSUM_PREFIX + digest.encode()  # a plain zip comment
    assert torch.equal(torch.load(path, weights_only=True)["model"]["w"], _payload()["model"]["w"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no integrity warning for a verified file
        assert torch.equal(load_checkpoint(path)["model"]["w"], _payload()["model"]["w"])
    assert verify_checkpoint_file(path) is True


@pytest.mark.parametrize("where", ["weights", "comment", "directory"])
def test_any_flipped_byte_is_refused(tmp_path: Path, where: str) -> None:
    path = save_checkpoint(_payload(), tmp_path / "a.pt")
    data = bytearray(path.read_bytes())
    index = {"weights": len(data) // 2, "comment": len(data) - 3, "directory": len(data) - 120}[where]
    data[index] ^= 0x04
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"{path}: checkpoint is damaged"):
        load_checkpoint(path)


def test_file_without_checksum_uses_a_recorded_sha256_or_warns(tmp_path: Path) -> None:
    saved = save_checkpoint(_payload(), tmp_path / "a.pt")
    plain = tmp_path / "plain.pt"
    torch.save(torch.load(saved, weights_only=True), plain)
    assert stored_checksum(plain) is None
    with pytest.warns(CheckpointIntegrityWarning, match="no checksum"):
        load_checkpoint(plain)
    recorded = hashlib.sha256(plain.read_bytes()).hexdigest()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_checkpoint(plain, expected_sha256=recorded)
    with pytest.raises(CheckpointError, match="does not match the recorded"):
        load_checkpoint(plain, expected_sha256="0" * 64)


def test_load_errors_are_one_line(tmp_path: Path) -> None:
    saved = save_checkpoint(_payload(), tmp_path / "a.pt")
    truncated = tmp_path / "t.pt"
    truncated.write_bytes(saved.read_bytes()[:3000])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(truncated)
    assert "truncated or corrupt" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match="checkpoint file is empty"):
        (tmp_path / "e.pt").touch()
        load_checkpoint(tmp_path / "e.pt")
