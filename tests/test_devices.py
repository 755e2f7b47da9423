"""versemi.devices: the one device resolver (predict, train, benchmarks; the Slicer module's probe)."""

from __future__ import annotations

import pytest
import torch

import versemi.devices as devices
from versemi.devices import DeviceError, resolve_device


def fake_accelerators(monkeypatch: pytest.MonkeyPatch, *, mps: bool, conv3d: bool) -> None:
    """Pretend this machine has (or lacks) Apple MPS, on which Conv3d runs (or fails): the probe is faked,
    CUDA is absent."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    def probe(device: str) -> None:
        if not conv3d:
            raise NotImplementedError(f"Conv3D is not supported on {device} (simulated)")

    monkeypatch.setattr(devices, "_conv3d_probe", probe)


def test_auto_skips_mps_where_conv3d_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_accelerators(monkeypatch, mps=True, conv3d=False)
    device, reason = resolve_device("auto")
    assert device.type == "cpu" and "using the CPU" in reason
    with pytest.raises(DeviceError, match="cannot run 3D convolutions"):
        resolve_device("mps")  # an explicit request is refused, never silently moved to the CPU
    assert devices.accelerator_facts()["mps_available"] is False


def test_auto_takes_mps_where_conv3d_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_accelerators(monkeypatch, mps=True, conv3d=True)
    assert resolve_device("auto") == (torch.device("mps"), "using Apple MPS (no CUDA)")
    assert resolve_device("MPS")[0].type == "mps"
    assert devices.accelerator_facts()["mps_available"] is True


def test_explicit_and_unknown_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_accelerators(monkeypatch, mps=False, conv3d=False)
    assert resolve_device("cpu")[0] == torch.device("cpu")
    assert resolve_device("")[0] == torch.device("cpu")  # empty = auto
    with pytest.raises(DeviceError, match="CUDA is not available"):
        resolve_device("cuda", local_rank=1)
    with pytest.raises(DeviceError, match="CUDA is not available"):
        resolve_device("cuda:1")
    with pytest.raises(DeviceError, match="unknown device 'tpu'; expected one of auto, cuda, mps, cpu"):
        resolve_device("tpu")


def test_predictor_uses_the_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    """The predictor keeps its PredictionError for a device it cannot use."""
    from inference.helpers import tiny_payload

    from versemi.inference import Predictor
    from versemi.inference.predictor import PredictionError

    fake_accelerators(monkeypatch, mps=True, conv3d=False)
    assert Predictor(tiny_payload(), device="auto").device.type == "cpu"
    with pytest.raises(PredictionError, match="cannot run 3D convolutions"):
        Predictor(tiny_payload(), device="mps")
