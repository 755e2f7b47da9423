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


# --- the typed checkpoint --------------------------------------------------------------------------
def _typed(training: bool = True):
    from inference.helpers import tiny_payload

    from versemi.checkpoint import Checkpoint, TrainingState

    checkpoint = Checkpoint.from_payload(tiny_payload())
    if training:
        checkpoint.training = TrainingState(
            config={"datasets": []}, options={"method": "supervised"}, method="supervised", stage=1, step=7,
            max_steps=10, optimizer={"state": {}, "param_groups": []}, schedule={"last_epoch": 7},
            rng={"torch": torch.get_rng_state()}, best_metric=0.5, best_step=5,
        )
    return checkpoint


def test_typed_checkpoint_round_trip(tmp_path: Path) -> None:
    from versemi.checkpoint import Checkpoint

    original = _typed()
    path = original.save(tmp_path / "ckpt.pt")
    loaded = Checkpoint.load(path)
    assert loaded.source == str(path) and loaded.versemi_version
    assert loaded.label_space.names == original.label_space.names
    assert loaded.plans.to_dict() == original.plans.to_dict()
    assert loaded.model_config == original.model_config
    assert all(torch.equal(loaded.weights[k], v) for k, v in original.weights.items())
    state = loaded.require_training()
    assert (state.method, state.stage, state.step, state.best_metric, state.best_step) == ("supervised", 1, 7, 0.5, 5)
    assert torch.equal(state.rng["torch"], original.training.rng["torch"])
    model = loaded.build_model()
    assert not model.training and model.num_prompts == len(loaded.label_space)
    raw = torch.load(path, weights_only=True)  # the file stays a plain weights-only dict
    assert raw["format_version"] == 2 and raw["step"] == 7 and set(raw["plans"]) >= {"datasets"}


def test_typed_checkpoint_refusals(tmp_path: Path) -> None:
    from versemi.checkpoint import Checkpoint

    inference_only = _typed(training=False).save(tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match=r"model.pt: not a training checkpoint \(no 'optimizer'\)"):
        Checkpoint.load(inference_only).require_training()
    payload = _typed(training=False).to_payload()
    with pytest.raises(CheckpointError, match="<checkpoint dict>: checkpoint format version 99 is incompatible"):
        Checkpoint.from_payload({**payload, "format_version": 99})
    with pytest.raises(CheckpointError, match="lacks plans needed for prediction"):
        Checkpoint.from_payload({k: v for k, v in payload.items() if k != "plans"})
    with pytest.raises(CheckpointError, match="not usable for prediction"):
        Checkpoint.from_payload({**payload, "plans": {"format": "something else"}})
    with pytest.raises(CheckpointError, match="no 'schedule'"):
        Checkpoint.from_payload({**payload, "optimizer": {}, "step": 1, "stage": 1, "method": "supervised"})
    other_prompts = Checkpoint.from_payload(payload)
    other_prompts.model_config = {**other_prompts.model_config, "num_prompts": 2}
    with pytest.raises(CheckpointError, match="not usable for prediction"):
        other_prompts.build_model()  # the head's weights do not fit two prompts
