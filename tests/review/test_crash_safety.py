"""Killing a process in the middle of ``save_refined`` leaves the old state or the new, never a mix.

Real processes, real SIGKILL: (1) a save paused at each step between writing the label and
committing the manifest (the worker gives the session an ``on_step`` hook that stops there), killed there; (2) a process saving in a
tight loop, killed at random moments. After every kill the manifest must parse, every file it names
must be a complete image on the case's grid holding exactly one of the written labelmaps, the state
must be the one before or after the interrupted save, and the folder must accept the next save.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from versemi.fileio import is_temp_file_name
from versemi.review import ReviewManifest, ReviewSession
from versemi.review.session import SAVE_STEPS

from .conftest import box_label, on_grid

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGKILL semantics")

# The worker builds labelmap i as tests/review/conftest.py:box_label(i) (kept identical on purpose).
_WORKER = textwrap.dedent(
    """
    import sys
    import time
    import numpy as np
    import SimpleITK as sitk
    from versemi.review import ReviewSession

    def box_label(i, shape):
        arr = np.zeros(shape, np.uint8)
        arr[1 : 2 + i % 8, 2:6, 2:6] = 1
        arr[5, 8, 1 : 1 + (i % 12)] = 2
        return arr

    def say(line):
        # One write per line: print(a, b) makes one write() per piece when stdout is unbuffered
        # (PYTHONUNBUFFERED=1), and a SIGKILL between them leaves half a line in the pipe.
        sys.stdout.write(line + "\\n")
        sys.stdout.flush()

    review, case, start, count, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]

    def on_step(step):
        if step == pause:  # wait here to be killed
            say(f"PAUSED {step}")
            time.sleep(3600)

    session = ReviewSession(review, user="worker", on_step=on_step)
    image = sitk.ReadImage(str(session.case(case).image))
    say("ready")
    for i in range(start, start + count):
        label = sitk.GetImageFromArray(box_label(i, sitk.GetArrayViewFromImage(image).shape))
        label.CopyInformation(image)
        saved = session.save_refined(case, label)
        say(f"{i} {saved.refined_label.name}")
    """
)

STEPS_BEFORE_COMMIT = list(SAVE_STEPS[:-1])
assert SAVE_STEPS[-1] == "committed"


def _start(review: Path, case: str, start: int, count: int, pause: str | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _WORKER, str(review), case, str(start), str(count), pause or ""],
        stdout=subprocess.PIPE, text=True,
    )


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _check_consistent(review: Path) -> None:
    """The manifest parses and every file it references is a complete image on its case's grid."""
    manifest = ReviewManifest(review)
    for row in manifest.load().rows.values():
        assert row.image.is_file()
        image = sitk.ReadImage(str(row.image))
        for path in (row.pseudo_label, row.refined_label):
            if path is None:
                continue
            label = sitk.ReadImage(str(path))  # raises on a truncated file
            assert label.GetSize() == image.GetSize()
            assert label.GetOrigin() == image.GetOrigin() and label.GetSpacing() == image.GetSpacing()
        assert (row.status == "refined") == (row.refined_label is not None)


def _label_of(review: Path, case: str) -> tuple[Path | None, np.ndarray | None]:
    row = ReviewManifest(review).row(case)
    if row.refined_label is None:
        return None, None
    return row.refined_label, sitk.GetArrayFromImage(sitk.ReadImage(str(row.refined_label)))


@pytest.mark.parametrize("step", STEPS_BEFORE_COMMIT + ["committed"])
def test_kill_at_each_step(review_dir: Path, step: str) -> None:
    session = ReviewSession(review_dir)
    first = session.save_refined("case01", on_grid(box_label(3)))  # the "old" state
    old_manifest = (review_dir / "manifest.json").read_bytes()

    proc = _start(review_dir, "case01", 5, 1, pause=step)
    assert proc.stdout.readline().strip() == "ready"
    assert proc.stdout.readline().strip() == f"PAUSED {step}"
    _kill(proc)

    _check_consistent(review_dir)
    path, content = _label_of(review_dir, "case01")
    if step in STEPS_BEFORE_COMMIT:
        assert (review_dir / "manifest.json").read_bytes() == old_manifest
        assert path == first.refined_label and np.array_equal(content, box_label(3))
    else:
        assert path is not None and path.name == "case01.r2.nii.gz"
        assert np.array_equal(content, box_label(5))
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(first.refined_label))), box_label(3))

    # The lock died with the process; leftovers are cleaned; the next save works and never reuses
    # the name of an orphan.
    fresh = ReviewSession(review_dir)
    leftovers = fresh.cleanup()
    if step in ("label_temp_written", "label_renamed", "manifest_temp_written"):
        assert leftovers, "the killed save left a file to clean"
    else:
        assert leftovers == []
    nxt = fresh.save_refined("case01", on_grid(box_label(6)))
    assert nxt.refined_label.name in ("case01.r2.nii.gz", "case01.r3.nii.gz")
    assert np.array_equal(_label_of(review_dir, "case01")[1], box_label(6))
    _check_consistent(review_dir)


def test_random_kills_during_a_save_loop(review_dir: Path) -> None:
    rng = random.Random(7)
    start = 0
    for _ in range(4):
        proc = _start(review_dir, "case02", start, 100_000)
        assert proc.stdout.readline().strip() == "ready"
        last = proc.stdout.readline().split()  # at least one save completed: imports are done
        time.sleep(rng.uniform(0.0, 0.25))
        _kill(proc)
        rest = proc.stdout.read()
        # Every line the worker wrote is whole (one write() each, see _WORKER), even after a SIGKILL.
        assert not rest or rest.endswith("\n"), f"torn output line {rest.splitlines()[-1]!r}"
        lines = [ln.split() for ln in rest.splitlines() if ln.strip()]
        last = lines[-1] if lines else last
        last_i, last_name = int(last[0]), last[1]

        _check_consistent(review_dir)
        path, content = _label_of(review_dir, "case02")
        assert path is not None
        if path.name == last_name:  # killed before committing the next save: the old state
            assert np.array_equal(content, box_label(last_i))
        else:  # committed the next save but was killed before printing it: the new state
            assert int(path.name.split(".r")[1].split(".")[0]) > int(last_name.split(".r")[1].split(".")[0])
            assert np.array_equal(content, box_label(last_i + 1))
        ReviewSession(review_dir).cleanup()
        labels = review_dir / "labelsTr"
        assert not any(is_temp_file_name(p.name) for p in labels.iterdir())
        print(f"killed after save {last_i}; manifest at {path.name}")
        start = last_i + 2
    assert ReviewManifest(review_dir).row("case02").status == "refined"
