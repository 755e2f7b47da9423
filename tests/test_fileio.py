"""versemi.fileio: atomic writes keep the old file on failure and leave no temp files; file hashing."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import BinaryIO

import pytest

from versemi.fileio import (
    HASH_CHUNK_BYTES,
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    sha256_file,
)


class _WriterFailed(RuntimeError):
    pass


def test_failing_writer_keeps_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "state.bin"
    target.write_bytes(b"old content")

    def half_write_then_fail(f: BinaryIO) -> None:
        f.write(b"new content, half")
        raise _WriterFailed("disk full")

    with pytest.raises(_WriterFailed):
        atomic_write(target, half_write_then_fail)
    assert target.read_bytes() == b"old content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.bin"]


def test_failing_before_replace_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "manifest.json"
    target.write_bytes(b"old")

    def crash() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(target, b"new", before_replace=crash)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def test_success_replaces_content_and_creates_folder(tmp_path: Path) -> None:
    target = tmp_path / "nested" / "deeper" / "out.bin"
    called: list[bool] = []
    assert atomic_write_bytes(target, b"first") == target
    assert atomic_write(target, lambda f: f.write(b"second"), before_replace=lambda: called.append(True)) == target
    assert target.read_bytes() == b"second"
    assert called == [True]
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.bin"]


def test_text_and_json_helpers(tmp_path: Path) -> None:
    text_path = atomic_write_text(tmp_path / "a.txt", "zwölf\nlines\n")
    assert text_path.read_bytes() == "zwölf\nlines\n".encode("utf-8")
    document = {"models": [{"name": "heart", "size": 3}]}
    json_path = atomic_write_json(tmp_path / "a.json", document)
    raw = json_path.read_text(encoding="utf-8")
    assert raw.endswith("}\n")
    assert raw == json.dumps(document, indent=2) + "\n"
    assert json.loads(raw) == document


def test_sha256_matches_hashlib_on_multi_chunk_file(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    # Two full chunks and a partial third, every byte different from the next (seeded).
    data = random.Random(0).randbytes(2 * HASH_CHUNK_BYTES + 4000)
    path.write_bytes(data)
    progress: list[tuple[int, int]] = []
    assert sha256_file(path, lambda done, total: progress.append((done, total))) == hashlib.sha256(data).hexdigest()
    assert len(progress) == 3
    assert progress[-1] == (len(data), len(data))
    assert sha256_file(str(path)) == hashlib.sha256(data).hexdigest()


def test_sha256_of_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    assert sha256_file(path) == hashlib.sha256(b"").hexdigest()


# --- temporary files of killed writers, groups, error names ---------------------------------------
def _dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_remove_stale_temp_files_only_takes_those_of_dead_writers(tmp_path: Path) -> None:
    import os
    import time

    from versemi.fileio import make_temp_file, remove_stale_temp_files

    mine = make_temp_file(tmp_path / "last.pt")  # this process is alive: kept
    assert mine.name.startswith(f".last.pt.{os.getpid()}-") and mine.name.endswith(".tmp")
    image = make_temp_file(tmp_path / "seg.nii.gz", suffix=".nii.gz")
    assert image.name.endswith(".tmp.nii.gz")
    dead = tmp_path / f".manifest.json.{_dead_pid()}-abcd1234.tmp"
    dead_image = tmp_path / f".seg.nii.gz.{_dead_pid()}-abcd_234.tmp.nii.gz"
    legacy_old = tmp_path / ".best.pt.k2j3h4g5.tmp"
    legacy_new = tmp_path / ".best.pt.z9y8x7w6.tmp"
    # The names the preprocessing cache and the review's label writer used before writing through fileio.
    legacy_label_old = tmp_path / ".tmp-1a2b3c4d~case01.r2.nii.gz"
    legacy_label_new = tmp_path / ".tmp-9f8e7d6c~case01.r3.nii.gz"
    others = [tmp_path / ".hidden_config", tmp_path / "notes.tmp", tmp_path / ".manifest.lock"]
    for p in [dead, dead_image, legacy_old, legacy_new, legacy_label_old, legacy_label_new, *others]:
        p.write_bytes(b"x")
    old = time.time() - 7200
    os.utime(legacy_old, (old, old))
    os.utime(legacy_label_old, (old, old))
    removed = remove_stale_temp_files(tmp_path)
    assert sorted(removed) == sorted([dead, dead_image, legacy_old, legacy_label_old])
    assert all(p.exists() for p in [mine, image, legacy_new, legacy_label_new, *others])
    assert remove_stale_temp_files(tmp_path / "missing") == []


def test_temp_file_names_say_what_they_were_to_become(tmp_path: Path) -> None:
    from versemi.fileio import is_temp_file_name, make_temp_file, temp_file_target

    made = make_temp_file(tmp_path / "case01.r2.nii.gz", suffix=".nii.gz")
    assert is_temp_file_name(made.name) and temp_file_target(made.name) == "case01.r2.nii.gz"
    assert temp_file_target(".tmp-1a2b3c4d~case01.r2.nii.gz") == "case01.r2.nii.gz"
    assert is_temp_file_name(".tmp-1a2b3c4d") and temp_file_target(".tmp-1a2b3c4d") is None
    assert not is_temp_file_name("case01.r2.nii.gz") and temp_file_target("notes.tmp") is None


def test_atomic_group_publishes_all_or_nothing(tmp_path: Path) -> None:
    from versemi.fileio import AtomicGroup

    out = tmp_path / "a" / "b"
    with AtomicGroup() as group:
        group.write_text("1", out / "one.txt")
        group.write_json({"x": 1}, out / "deeper" / "two.json")
    assert (out / "one.txt").read_text() == "1" and json.loads((out / "deeper" / "two.json").read_text()) == {"x": 1}
    assert sorted(p.name for p in out.rglob("*")) == ["deeper", "one.txt", "two.json"]

    other = tmp_path / "c" / "d"
    with pytest.raises(KeyboardInterrupt):
        with AtomicGroup() as group:
            group.check_writable([other / "x.txt", other / "sub" / "y.txt"])
            group.write_text("x", other / "x.txt")
            raise KeyboardInterrupt
    assert not (tmp_path / "c").exists()  # folders the group created are gone, deepest first


def test_errors_name_the_target_not_the_temp_file(tmp_path: Path) -> None:
    from versemi.fileio import AtomicGroup

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(NotADirectoryError) as info:
        atomic_write_bytes(blocker / "out.bin", b"data")
    assert str(blocker) in str(info.value) and ".tmp" not in str(info.value)
    with pytest.raises(OSError) as info:
        AtomicGroup().check_writable([blocker / "sub" / "out.bin"])
    assert info.value.filename == str(blocker)
    folder = tmp_path / "is_a_folder.bin"
    folder.mkdir()
    with pytest.raises(IsADirectoryError) as info:
        AtomicGroup().check_writable([folder])
    assert info.value.filename == str(folder)

    def disk_full(f: BinaryIO) -> None:
        import errno

        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as info:
        atomic_write(tmp_path / "target.bin", disk_full)
    assert info.value.filename == str(tmp_path / "target.bin") and info.value.strerror == "No space left on device"
    assert list(tmp_path.glob(".target.bin*")) == []
