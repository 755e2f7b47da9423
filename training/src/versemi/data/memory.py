"""The one memory estimate: refuse a scan whose preprocessing or prediction cannot fit, before allocating.

Resampling a scan of 50 mm voxels to 1.5 mm multiplies its voxel count ~37,000-fold, and the process
would grow until the OOM killer ends it. :func:`check_preprocessing_memory` computes the resampled grid
from the header alone, estimates the peak bytes (:data:`PREPROCESS_BYTES_PER_VOXEL` per resampled voxel;
prediction adds :func:`prediction_bytes`) and raises :class:`MemoryLimitError` saying what to do. The
limit is ``$VERSEMI_MEMORY_LIMIT`` (``--memory-limit``; bytes or e.g. ``"8G"``), else the RAM available
now, lowered by a cgroup limit and ``ulimit -v``. ``tests/data/test_memory.py`` checks the estimate.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from versemi.environment import MEMORY_LIMIT_ENV, memory_limit_text

# Bytes per voxel of the resampled grid at the peak of preprocess_case (measured: 21.6 MR z-score, 16.6 CT).
PREPROCESS_BYTES_PER_VOXEL = 22.0
# Bytes per voxel of the input grid held during preprocessing (float32 cast + reoriented copies;
# measured: 11.5-14 depending on the allocator state).
INPUT_COPY_BYTES_PER_VOXEL = 14.0
# Bytes per resampled voxel for a label (uint8 cast + resampled uint8).
LABEL_BYTES_PER_VOXEL = 2.0
# Below this a scan is never refused (the estimate is only meant to stop absurd allocations).
MIN_CHECKED_BYTES = 256 * 1024**2
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


class MemoryLimitError(ValueError):
    """Work that would need more memory than the limit allows; the message says what to do."""


def parse_size(text: str) -> int:
    """``"8G"``, ``"8 GB"``, ``"512M"``, ``"1.5g"``, ``"1000000"`` -> bytes (binary units).

    Raises:
        ValueError: not a size.
    """
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgtKMGT]?)(i?[bB])?\s*", str(text))
    if not match:
        raise ValueError(f"memory limit {text!r} is not a size like 8G, 512M or 1000000 (bytes)")
    value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if value <= 0:
        raise ValueError(f"memory limit {text!r} must be positive")
    return int(value)


def format_bytes(n: float) -> str:
    """``1.5e9`` -> ``"1.4 GiB"``."""
    for unit, size in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    if not text or text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _cgroup_remaining() -> int | None:
    """Bytes this process's cgroup may still use (v2, else v1), or None without a limit."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, rel = parts
        if hierarchy == "0" and controllers == "":  # cgroup v2
            base = f"/sys/fs/cgroup{rel.rstrip('/')}" if rel != "/" else "/sys/fs/cgroup"
            for folder in (base, "/sys/fs/cgroup"):
                limit = _read_int(f"{folder}/memory.max")
                if limit is not None:
                    used = _read_int(f"{folder}/memory.current") or 0
                    return max(limit - used, 0)
        elif "memory" in controllers.split(","):  # cgroup v1
            for folder in (f"/sys/fs/cgroup/memory{rel.rstrip('/')}", "/sys/fs/cgroup/memory"):
                limit = _read_int(f"{folder}/memory.limit_in_bytes")
                if limit is not None and limit < 1 << 60:
                    used = _read_int(f"{folder}/memory.usage_in_bytes") or 0
                    return max(limit - used, 0)
    return None


def _address_space_remaining() -> int | None:
    """Bytes of address space left under ``ulimit -v`` (RLIMIT_AS), or None without a limit."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return None
    try:
        import psutil

        used = psutil.Process().memory_info().vms
    except Exception:  # noqa: BLE001 - psutil missing or refused: assume nothing is used yet
        used = 0
    return max(soft - used, 0)


def available_memory() -> tuple[int, str]:
    """The memory this process can still use, and where that number comes from.

    Returns:
        ``(bytes, description)``: the system's available RAM (``psutil``), lowered by a cgroup
        limit and by RLIMIT_AS where they are smaller.
    """
    candidates: list[tuple[int, str]] = []
    try:
        import psutil

        candidates.append((int(psutil.virtual_memory().available), "available RAM"))
    except Exception:  # noqa: BLE001 - no psutil: fall back to sysconf
        try:
            candidates.append((os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free RAM"))
        except (ValueError, OSError, AttributeError):
            pass
    cgroup = _cgroup_remaining()
    if cgroup is not None:
        candidates.append((cgroup, "the container's memory limit"))
    address = _address_space_remaining()
    if address is not None:
        candidates.append((address, "the address-space limit set by ulimit -v"))
    if not candidates:
        return 1 << 62, "unknown"
    return min(candidates)


@contextlib.contextmanager
def memory_limit_set(text: str | None) -> Iterator[None]:
    """Within the block, :func:`memory_limit` is ``text`` (e.g. ``"8G"``; None: unchanged).

    Sets ``$VERSEMI_MEMORY_LIMIT`` (so worker processes see it too) and restores it afterwards.
    Without ``text`` the variable is checked now, so a bad value is named before any work (even
    when no scan would be large enough to consult it).

    Raises:
        MemoryLimitError: ``$VERSEMI_MEMORY_LIMIT`` is set to something that is not a size.
    """
    if not text:
        env_memory_limit()
        yield
        return
    parse_size(text)
    previous = os.environ.get(MEMORY_LIMIT_ENV)
    os.environ[MEMORY_LIMIT_ENV] = text
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(MEMORY_LIMIT_ENV, None)
        else:
            os.environ[MEMORY_LIMIT_ENV] = previous


def memory_limit() -> tuple[int, str]:
    """The limit work is checked against: ``$VERSEMI_MEMORY_LIMIT`` if set, else :func:`available_memory`.

    Raises:
        MemoryLimitError: the variable is set to something that is not a size.
    """
    found = env_memory_limit()
    return found if found is not None else available_memory()


def env_memory_limit() -> tuple[int, str] | None:
    """``$VERSEMI_MEMORY_LIMIT`` in bytes and as the message names it; None when it is not set.

    Raises:
        MemoryLimitError: it is set to something that is not a size (the message names the variable).
    """
    text = memory_limit_text()
    if not text:
        return None
    try:
        return parse_size(text), f"the limit {MEMORY_LIMIT_ENV}={text}"
    except ValueError as exc:
        raise MemoryLimitError(f"environment variable {MEMORY_LIMIT_ENV}: {exc}; unset it or set a size") from None


@dataclass(frozen=True)
class ResampledSize:
    """The grid preprocessing resamples a scan onto (see :func:`resampled_size`).

    Attributes:
        size_xyz: voxels per axis after reorientation and resampling.
        input_voxels: voxels of the scan as given.
    """

    size_xyz: tuple[int, int, int]
    input_voxels: int

    @property
    def voxels(self) -> int:
        return int(np.prod(np.asarray(self.size_xyz, dtype=np.float64)))


def _axis_of(letter: str) -> int:
    return {"R": 0, "L": 0, "A": 1, "P": 1, "S": 2, "I": 2}.get(letter.upper(), -1)


def resampled_size(
    size_xyz: Sequence[int],
    spacing_xyz: Sequence[float],
    direction: Sequence[float],
    target_spacing_xyz: Sequence[float],
    orientation: str = "RAS",
) -> ResampledSize:
    """The voxel counts of preprocessing's grid, from the header alone (nothing is allocated).

    Reorientation permutes the axes (each image axis goes to the patient axis its direction cosine
    points along most), then each axis gets ``round(size * spacing / target)`` voxels, as
    :func:`versemi.data.preprocessing.resampled_grid` computes them.
    """
    size = [int(s) for s in size_xyz]
    spacing = [float(s) for s in spacing_xyz]
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    patient_axis_of_image_axis = [int(np.argmax(np.abs(d[:, i]))) for i in range(3)]
    new = []
    for k, letter in enumerate(orientation):
        axis = _axis_of(letter)
        try:
            i = patient_axis_of_image_axis.index(axis)
        except ValueError:
            i = k  # a direction with two axes along one patient axis: keep the order
        new.append(max(1, int(round(size[i] * spacing[i] / float(target_spacing_xyz[k])))))
    return ResampledSize((new[0], new[1], new[2]), int(np.prod(np.asarray(size, dtype=np.float64))))


def preprocessing_bytes(grid: ResampledSize, with_label: bool = False) -> float:
    """Peak bytes of :func:`versemi.data.preprocessing.preprocess_case` on this grid."""
    per_voxel = PREPROCESS_BYTES_PER_VOXEL + (LABEL_BYTES_PER_VOXEL if with_label else 0.0)
    return grid.input_voxels * INPUT_COPY_BYTES_PER_VOXEL + grid.voxels * per_voxel


def prediction_bytes(grid: ResampledSize, prompts: int) -> float:
    """Peak bytes of one prediction pass: preprocessing, then the sliding window at the model
    spacing (the preprocessed volume, each prompt's probabilities and MONAI's accumulation buffers,
    float32) while the labelmap and running maximum (3 bytes per input voxel) exist."""
    window = grid.voxels * 4.0 * (2 + 2 * max(prompts, 1))
    return max(preprocessing_bytes(grid), window) + grid.input_voxels * 3.0


def check_memory(need: float, what: str, advice: str = "") -> None:
    """Refuse work that needs more than :func:`memory_limit` allows.

    Args:
        need: estimated peak bytes.
        what: what needs it (the start of the message, e.g. ``"<file>: resampling ... gives ..."``).
        advice: what the user can do (appended).

    Raises:
        MemoryLimitError: ``need`` exceeds the limit.
    """
    if need < MIN_CHECKED_BYTES:
        return
    limit, source = memory_limit()
    if need <= limit:
        return
    how = f"set {MEMORY_LIMIT_ENV} to change the limit"
    raise MemoryLimitError(
        f"{what}, which needs about {format_bytes(need)} of memory but {format_bytes(limit)} is allowed "
        f"({source}); " + (f"{advice}; " if advice else "") + how
    )


def describe_resampling(
    size_xyz: Sequence[int], spacing_xyz: Sequence[float], target_spacing_xyz: Sequence[float], grid: ResampledSize
) -> str:
    """``"resampling 35 x 51 x 35 voxels of 50 x 50 x 50 mm to 1.5 mm gives 1167 x 1700 x 1167 voxels (2.3e+09)"``."""
    def dims(values: Sequence[float]) -> str:
        return " x ".join(f"{v:g}" for v in values)

    targets = set(float(t) for t in target_spacing_xyz)
    target = f"{next(iter(targets)):g} mm" if len(targets) == 1 else f"{dims(target_spacing_xyz)} mm"
    return (f"resampling {dims(size_xyz)} voxels of {dims([round(s, 3) for s in spacing_xyz])} mm to {target} "
            f"gives {dims(grid.size_xyz)} voxels ({grid.voxels:.2g})")


def check_preprocessing_memory(
    image: "sitk.Image",  # noqa: F821 - SimpleITK is only needed by the caller
    target_spacing_xyz: Sequence[float],
    orientation: str = "RAS",
    *,
    with_label: bool = False,
    prompts: int | None = None,
    name: str = "",
    advice: str = "check the scan's voxel spacing, or preprocess with a coarser target spacing",
) -> ResampledSize:
    """Refuse a scan whose preprocessing (and, with ``prompts``, prediction) would exceed the limit.

    Args:
        image: the scan (only its header fields are used).
        target_spacing_xyz: preprocessing's target spacing.
        orientation: preprocessing's orientation.
        with_label: a label is preprocessed too.
        prompts: for a prediction, the number of prompts computed in one pass (adds the sliding
            window's buffers).
        name: how to name the scan (its path); empty: the caller adds it.
        advice: what the user can do about it.

    Returns:
        The resampled grid.

    Raises:
        MemoryLimitError: naming the scan, the grid sizes, the bytes needed and allowed, and what to do.
    """
    size, spacing = image.GetSize(), image.GetSpacing()
    grid = resampled_size(size, spacing, image.GetDirection(), target_spacing_xyz, orientation)
    need = prediction_bytes(grid, prompts) if prompts is not None else preprocessing_bytes(grid, with_label)
    if not math.isfinite(need):
        need = float("inf")
    prefix = f"{name}: " if name else ""
    check_memory(need, prefix + describe_resampling(size, spacing, target_spacing_xyz, grid), advice)
    return grid


__all__ = [
    "MemoryLimitError",
    "ResampledSize",
    "available_memory",
    "check_memory",
    "check_preprocessing_memory",
    "env_memory_limit",
    "format_bytes",
    "memory_limit",
    "memory_limit_set",
    "parse_size",
    "prediction_bytes",
    "preprocessing_bytes",
    "resampled_size",
]
