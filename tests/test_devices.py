"""versemi.devices: the one device resolver (predict, train, benchmarks; the Slicer module's probe) and
the one precision rule."""

from __future__ import annotations

import warnings

import pytest
import torch

import versemi.devices as devices
from versemi.devices import DeviceError, Precision, PrecisionWarning, autocast_dtype, resolve_device


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


# --- precision: the one vocabulary and rule of training and prediction ------------------------------


@pytest.mark.parametrize("native", [True, False])
def test_precision_rule_on_the_cpu(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: native)
    cpu = torch.device("cpu")
    assert autocast_dtype(Precision.AUTO, cpu) == (torch.bfloat16 if native else None)
    assert autocast_dtype("fp32", cpu) is None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert autocast_dtype("bf16", cpu, "training") == (torch.bfloat16 if native else None)
    assert [str(w.message) for w in caught] == ([] if native else [
        "bf16 was asked for but cpu has no native bf16 arithmetic (CPU: AVX512-BF16 or AMX); training in float32"])
    with pytest.warns(PrecisionWarning, match="fp16 was asked for but cpu has no CUDA; predicting in float32"):
        assert autocast_dtype("fp16", cpu, "predicting") is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert autocast_dtype("fp16", cpu, warn=False) is None
    with pytest.raises(ValueError, match="unknown precision 'half'; expected one of auto, fp32, bf16, fp16"):
        autocast_dtype("half", cpu)


def test_precision_rule_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    assert autocast_dtype("auto", torch.device("mps")) is None
    with pytest.warns(PrecisionWarning):
        assert autocast_dtype("bf16", torch.device("mps")) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    cuda = torch.device("cuda")
    assert autocast_dtype("auto", cuda) == autocast_dtype("fp16", cuda) == torch.float16
    with pytest.warns(PrecisionWarning, match="no native bf16"):
        assert autocast_dtype("bf16", cuda) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert autocast_dtype("bf16", cuda) == torch.bfloat16
