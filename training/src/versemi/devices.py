"""Devices and numeric precision: the ONE device resolver, and what the hardware runs well.

:func:`resolve_device` is how every caller turns ``auto|cuda|mps|cpu`` into a torch device: the
predictor (``versemi predict``, ``pseudolabel``, ``evaluate``), the trainer (``versemi train``, one
process per GPU under ``torchrun``) and the benchmarks. The Slicer module asks the same questions
in its own probe process (:func:`accelerator_facts`) and passes ``auto`` through to ``versemi
predict``, so its "will use" line and the run agree. The rule:

- ``auto``: CUDA if available, else Apple MPS where it can run a 3D convolution (older macOS / torch
  builds have MPS without Conv3d, the layer every VerSemi model is made of), else the CPU;
- ``cuda`` / ``cuda:N`` / ``mps``: that device, or a :class:`DeviceError` saying why it cannot be
  used (never a silent CPU run that takes far longer than the user expects);
- ``cpu``: the CPU.

:class:`Precision` is the ONE precision vocabulary of training (``training.precision``, ``versemi
train --precision``) and prediction (``--precision``), and :func:`autocast_dtype` the ONE rule that
turns it into an autocast dtype on a device: ``auto`` is float16 on CUDA, bfloat16 on a CPU with
native bf16 arithmetic (AVX-512-BF16 or AMX on x86, :func:`cpu_has_native_bf16`), float32 elsewhere;
an explicit ``bf16`` or ``fp16`` the device does not compute natively falls back to float32 with a
:class:`PrecisionWarning` (emulated bf16 is slower than float32). Measurements: docs/TRAINING.md and
docs/PREDICT.md.

torch is imported inside the functions: ``versemi --help`` and the CLI's argument parsers import
this module for :data:`DEVICES` without paying for torch.
"""

from __future__ import annotations

import functools
import platform
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from versemi.enums import StrEnum

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cuda", "mps", "cpu")
_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


class DeviceError(ValueError):
    """A device name that is unknown, or a device that cannot be used here; the message says why."""


def _conv3d_probe(device: str) -> None:
    """Run a tiny 3D convolution on ``device`` and bring the result back (raises where it cannot)."""
    import torch

    x = torch.zeros(1, 1, 4, 4, 4, device=device)
    torch.nn.functional.conv3d(x, torch.zeros(1, 1, 3, 3, 3, device=device), padding=1).cpu()


def mps_usable() -> bool:
    """Apple MPS exists and runs a 3D convolution."""
    import torch

    backend = getattr(torch.backends, "mps", None)
    if backend is None or not backend.is_available():
        return False
    try:
        _conv3d_probe("mps")
    except Exception:  # noqa: BLE001 - any failure means "do not use MPS"
        return False
    return True


def resolve_device(name: str = "auto", local_rank: int | None = None) -> tuple[torch.device, str]:
    """The torch device for ``auto|cuda|cuda:N|mps|cpu`` and a sentence saying why it was chosen.

    Args:
        name: the requested device (case-insensitive; empty = ``auto``).
        local_rank: under ``torchrun``, the process's local rank: ``cuda`` then means GPU
            ``local_rank % device count``. None: the current CUDA device.

    Raises:
        DeviceError: an unknown name, or an explicit device that is not available.
    """
    import torch

    name = (name or "auto").lower()
    if name not in DEVICES and not name.startswith("cuda:"):
        raise DeviceError(f"unknown device {name!r}; expected one of {', '.join(DEVICES)}")
    if name == "auto":
        if torch.cuda.is_available():
            device = _cuda_device("cuda", local_rank)
            return device, f"using {torch.cuda.get_device_name(device)} (CUDA available)"
        if mps_usable():
            return torch.device("mps"), "using Apple MPS (no CUDA)"
        why = "no CUDA GPU found" if torch.version.cuda else "this torch is a CPU-only build"
        return torch.device("cpu"), f"using the CPU ({torch.get_num_threads()} threads): {why}"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {name!r} requested but CUDA is not available (torch {torch.__version__}, "
                f"CUDA build: {torch.version.cuda or 'no - a CPU-only torch is installed'})"
            )
        device = _cuda_device(name, local_rank)
        return device, f"using {torch.cuda.get_device_name(device)} ({name})"
    if name == "mps":
        if not mps_usable():
            raise DeviceError("device 'mps' requested but Apple MPS is not available or cannot run 3D convolutions")
        return torch.device("mps"), "using Apple MPS"
    return torch.device("cpu"), f"using the CPU ({torch.get_num_threads()} threads), as requested"


def _cuda_device(name: str, local_rank: int | None) -> torch.device:
    """``cuda:N`` as given; ``cuda`` = GPU ``local_rank % count`` under torchrun, else the current GPU."""
    import torch

    if name == "cuda" and local_rank is not None:
        return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    return torch.device(name)


def accelerator_facts() -> dict[str, Any]:
    """What this Python's torch can use, as JSON-ready facts (the Slicer module's device probe).

    ``mps_available`` is :func:`mps_usable` (MPS that runs Conv3d), the same test :func:`resolve_device`
    makes, so a panel that applies the rule of :func:`resolve_device` to these facts predicts the run.
    """
    import torch

    cuda = bool(torch.cuda.is_available())
    return {
        "torch_version": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cuda_available": cuda,
        "cuda_device": torch.cuda.get_device_name(0) if cuda else None,
        "mps_available": mps_usable(),
    }


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (Linux x86: ``/proc/cpuinfo`` flags; elsewhere False)."""
    if platform.system() != "Linux":
        return False
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return any(f in flags for f in _NATIVE_BF16_FLAGS)
    return False


class Precision(StrEnum):
    """The arithmetic of the network: ``auto`` (what the device runs well), or one of three dtypes."""

    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


class PrecisionWarning(UserWarning):
    """An explicit precision the device cannot compute natively: float32 is used instead."""


def parse_precision(value: str, what: str = "precision") -> Precision:
    """``value`` as a :class:`Precision`.

    Raises:
        ValueError: an unknown value (the message starts with ``what``).
    """
    try:
        return Precision(value)
    except ValueError:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(Precision)}") from None


def autocast_dtype(
    precision: Precision | str, device: torch.device, doing: str = "running", warn: bool = True
) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device``: the one rule of training and prediction.

    Args:
        precision: ``auto``: float16 on CUDA, bfloat16 on a CPU with native bf16
            (:func:`cpu_has_native_bf16`), float32 elsewhere. ``fp32``: float32. ``bf16``: bfloat16
            where the hardware computes it natively (such a CPU, a CUDA GPU that supports it), else
            float32 with a :class:`PrecisionWarning`. ``fp16``: float16 on CUDA, else float32 with a
            :class:`PrecisionWarning`.
        device: where the model runs.
        doing: the verb of the warning ("predicting", "training").
        warn: warn about a fallback to float32 (False: the caller warned once already).

    Returns:
        The dtype, or None for float32 (no autocast).

    Raises:
        ValueError: an unknown ``precision``.
    """
    import torch

    precision = parse_precision(precision)
    cuda = device.type == "cuda"
    native_bf16 = torch.cuda.is_bf16_supported() if cuda else device.type == "cpu" and cpu_has_native_bf16()
    if precision is Precision.AUTO:
        return torch.float16 if cuda else torch.bfloat16 if native_bf16 else None
    if precision is Precision.BF16 and native_bf16:
        return torch.bfloat16
    if precision is Precision.FP16 and cuda:
        return torch.float16
    if warn and precision is not Precision.FP32:
        needs = "no native bf16 arithmetic (CPU: AVX512-BF16 or AMX)" if precision is Precision.BF16 else "no CUDA"
        warnings.warn(f"{precision} was asked for but {device} has {needs}; {doing} in float32",
                      PrecisionWarning, stacklevel=3)
    return None


__all__ = [
    "DEVICES",
    "DeviceError",
    "Precision",
    "PrecisionWarning",
    "accelerator_facts",
    "autocast_dtype",
    "cpu_has_native_bf16",
    "mps_usable",
    "parse_precision",
    "resolve_device",
]
