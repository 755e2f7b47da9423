"""Which device the predictor will use, and why (said in the panel before a run).

Users often have a CPU-only torch on a machine with an NVIDIA GPU and wonder why inference is slow, so
the panel says it. :func:`probe_torch` gathers the torch facts in a subprocess (Slicer's process never
imports torch); :func:`choose_device` applies ``versemi.devices.resolve_device``'s rule to them only
to *say* what will happen: ``versemi predict`` gets the requested value and decides itself.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from .i18n import _

# The facts come from versemi's own device module (``versemi.devices.accelerator_facts``): the same
# test ``versemi predict --device auto`` makes (MPS counts only where it runs a 3D convolution).
_PROBE = r"""
import json
info = {"torch_version": None, "cuda_build": None, "cuda_available": False, "cuda_device": None,
        "mps_available": False}
try:
    from versemi.devices import accelerator_facts
    info.update(accelerator_facts())
except Exception as exc:
    info["error"] = str(exc)
print(json.dumps(info))
"""


@dataclass(frozen=True)
class TorchInfo:
    """What the predictor's Python knows about accelerators."""

    torch_version: str | None = None
    cuda_build: str | None = None
    cuda_available: bool = False
    cuda_device: str | None = None
    mps_available: bool = False
    error: str | None = None


@dataclass(frozen=True)
class DeviceChoice:
    device: str  # the device the run will use: cpu, cuda or mps (the run itself is passed the request)
    reason: str

    def describe(self) -> str:
        return f"will use: {self.device.upper() if self.device != 'cpu' else 'CPU'} because {self.reason}"


def probe_torch(python_executable: str = sys.executable, timeout: float = 120.0) -> TorchInfo:
    """Ask ``python_executable`` what torch sees (a subprocess: torch is not imported here)."""
    try:
        from .process import subprocess_environment

        completed = subprocess.run(
            [python_executable, "-c", _PROBE], capture_output=True, text=True, timeout=timeout, check=False,
            env=subprocess_environment(),
        )
        data = json.loads(completed.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError, IndexError) as exc:
        return TorchInfo(error=f"cannot query torch: {exc}")
    return TorchInfo(**{k: data.get(k) for k in TorchInfo.__dataclass_fields__})


def nvidia_gpu_present(timeout: float = 10.0) -> bool:
    """True if ``nvidia-smi`` lists at least one GPU (the driver is installed and sees a GPU)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return False
    try:
        completed = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return completed.returncode == 0 and "GPU" in completed.stdout


def choose_device(requested: str, info: TorchInfo, nvidia_present: bool) -> DeviceChoice:
    """The device a run will use for a requested ``auto|cpu|cuda|mps``, with the reason.

    Raises:
        ValueError: an explicit ``cuda``/``mps`` request that cannot be honoured (better than a
            silent CPU run that takes much longer than the user expects).
    """
    if info.torch_version is None:
        return DeviceChoice("cpu", "VerSemi's packages (PyTorch, versemi) are not installed yet (they are installed on first run)")
    cpu_build = info.cuda_build is None
    if requested == "cpu":
        return DeviceChoice("cpu", "CPU was selected")
    if requested == "cuda":
        if info.cuda_available:
            return DeviceChoice("cuda", f"CUDA was selected ({info.cuda_device or 'GPU'})")
        if cpu_build and nvidia_present:
            raise ValueError(
                _("CUDA selected, but torch {torch_version} is a CPU-only build although an NVIDIA GPU is "
                   "present: reinstall PyTorch with CUDA (PyTorch Utils module)").format(torch_version=info.torch_version)
            )
        raise ValueError(_("CUDA selected, but no CUDA GPU is available to torch"))
    if requested == "mps":
        if info.mps_available:
            return DeviceChoice("mps", "Apple GPU (MPS) was selected")
        raise ValueError(_("MPS selected, but the Apple GPU backend is not available to torch or cannot run 3D "
                            "convolutions"))
    # auto: versemi.devices.resolve_device's order (CUDA, MPS that runs Conv3d, CPU); the rest is advice
    if info.cuda_available:
        return DeviceChoice("cuda", f"a CUDA GPU is available ({info.cuda_device or 'GPU'})")
    if info.mps_available:
        return DeviceChoice("mps", "an Apple GPU (MPS) is available")
    if cpu_build and nvidia_present:
        return DeviceChoice(
            "cpu",
            f"torch {info.torch_version} is a CPU-only build although an NVIDIA GPU seems present "
            "(nvidia-smi); reinstall PyTorch with CUDA in the PyTorch Utils module to use it",
        )
    if not cpu_build:
        return DeviceChoice("cpu", f"torch has CUDA {info.cuda_build} but no usable GPU/driver was found")
    return DeviceChoice("cpu", "no GPU is available (and no Apple GPU that runs 3D convolutions)")
