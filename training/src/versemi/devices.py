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

bf16 autocast on a CPU is only worth it where the CPU has native bf16 arithmetic (AVX-512-BF16 or
AMX on x86): there it ran the training step of the CPU recipe ~2x faster than float32
(``bench/train_speed.py``); without it bf16 is emulated and slower (:func:`cpu_has_native_bf16`).

torch is imported inside the functions: ``versemi --help`` and the CLI's argument parsers import
this module for :data:`DEVICES` without paying for torch.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


__all__ = [
    "DEVICES",
    "DeviceError",
    "accelerator_facts",
    "cpu_has_native_bf16",
    "mps_usable",
    "resolve_device",
]
