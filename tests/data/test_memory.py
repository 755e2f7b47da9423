"""versemi.data.memory: the one memory estimate, its limit, and how preprocessing uses them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import SimpleITK as sitk

from versemi.data import memory
from versemi.data.memory import (
    MemoryLimitError,
    check_preprocessing_memory,
    memory_limit,
    memory_limit_set,
    parse_size,
    preprocessing_bytes,
    resampled_size,
)
from versemi.environment import MEMORY_LIMIT_ENV
from versemi.data.preprocessing import PreprocessingSpec, preprocess_case, resampled_grid


def test_parse_size() -> None:
    assert parse_size("8G") == 8 * 1024**3
    assert parse_size("512 MB") == 512 * 1024**2
    assert parse_size("1.5g") == int(1.5 * 1024**3)
    assert parse_size("1000") == 1000
    for bad in ("lots", "-1G", "0", "8X"):
        with pytest.raises(ValueError):
            parse_size(bad)


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), (0, 0, 1, 1, 0, 0, 0, 1, 0), (-1, 0, 0, 0, 0, -1, 0, 1, 0)])
def test_resampled_size_matches_preprocessing_from_the_header_alone(direction) -> None:
    image = sitk.Image([7, 9, 5], sitk.sitkInt16)
    image.SetSpacing((0.7, 1.3, 3.0))
    image.SetDirection(direction)
    target = (0.9, 1.1, 1.7)
    oriented = sitk.DICOMOrient(image, "RAS")
    expected = tuple(resampled_grid(oriented, target)["size"])
    assert resampled_size(image.GetSize(), image.GetSpacing(), image.GetDirection(), target, "RAS").size_xyz == expected


def test_limit_from_the_environment_and_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MEMORY_LIMIT_ENV, raising=False)
    limit, source = memory_limit()
    assert limit > 0 and source
    with memory_limit_set("3G"):
        assert memory_limit() == (3 * 1024**3, f"the limit {MEMORY_LIMIT_ENV}=3G")
    assert MEMORY_LIMIT_ENV not in os.environ
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "nonsense")
    with pytest.raises(MemoryLimitError, match="not a size"):
        memory_limit()


def test_available_memory_takes_the_smallest_of_ram_cgroup_and_ulimit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_cgroup_remaining", lambda: 3 * 1024**3)
    monkeypatch.setattr(memory, "_address_space_remaining", lambda: None)
    assert memory.available_memory() == (3 * 1024**3, "the container's memory limit")
    monkeypatch.setattr(memory, "_address_space_remaining", lambda: 1024**3)
    assert memory.available_memory() == (1024**3, "the address-space limit set by ulimit -v")


def test_preprocess_case_refuses_before_allocating(monkeypatch: pytest.MonkeyPatch) -> None:
    image = sitk.Image([35, 51, 35], sitk.sitkFloat32)
    image.SetSpacing((50.0, 50.0, 50.0))
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "2G")
    with pytest.raises(MemoryLimitError) as info:
        preprocess_case(image, PreprocessingSpec(target_spacing=(1.5, 1.5, 1.5)))
    message = str(info.value)
    assert message.startswith("resampling 35 x 51 x 35 voxels of 50 x 50 x 50 mm to 1.5 mm gives 1167 x 1700 x 1167")
    assert "2.0 GiB is allowed (the limit VERSEMI_MEMORY_LIMIT=2G)" in message
    grid = check_preprocessing_memory(sitk.Image([10, 10, 10], sitk.sitkFloat32), (1.0, 1.0, 1.0))
    assert grid.voxels == 1000  # small work is never refused


_MEASURE = textwrap.dedent("""
    import json, sys
    import numpy as np, SimpleITK as sitk, psutil
    from versemi.data.memory import check_preprocessing_memory
    from versemi.data.preprocessing import PreprocessingSpec, preprocess_case
    modality, side, target = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    array = np.random.default_rng(0).normal(300, 100, size=(side, side, side)).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    del array
    spec = PreprocessingSpec(target_spacing=(target,) * 3, modality=modality)
    base = psutil.Process().memory_info().rss
    grid = check_preprocessing_memory(image, spec.target_spacing, spec.orientation)
    from versemi.data.memory import preprocessing_bytes
    estimate = preprocessing_bytes(grid)
    preprocess_case(image, spec)
    # VmHWM: this process image's own peak. ru_maxrss would also count the parent's RSS at fork
    # (Linux carries it across exec), so a large pytest process inflated "used".
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) * 1024
    print(json.dumps({"estimate": estimate, "used": peak - base}))
""")


@pytest.mark.skipif(sys.platform != "linux", reason="reads VmHWM from /proc/self/status")
@pytest.mark.parametrize(("modality", "side", "target"), [("MR", 64, 0.25), ("CT", 64, 0.25), ("MR", 256, 3.0)])
def test_estimate_covers_the_measured_peak(modality: str, side: int, target: float) -> None:
    """In a fresh process under a 3 GB cap: a 64^3 scan resampled to 256^3 (16.8 M voxels, ~0.35 GiB:
    the resampled grid dominates), and a 256^3 scan resampled to 22^3 (the input copies dominate)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(MEMORY_LIMIT_ENV, None)

    def cap() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (3 * 1024**3, 3 * 1024**3))

    proc = subprocess.run([sys.executable, "-c", _MEASURE, modality, str(side), str(target)], capture_output=True,
                          text=True, env=env, timeout=300, preexec_fn=cap)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["used"] <= result["estimate"] <= 1.6 * result["used"], result
    grid = resampled_size((side,) * 3, (1.0,) * 3, np.eye(3).ravel(), (target,) * 3)
    assert preprocessing_bytes(grid) == result["estimate"]
