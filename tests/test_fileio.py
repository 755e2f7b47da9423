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
    """Only versemi's own temporary names, of this machine, whose process is gone; nothing by age or
    look-alike name (issue 23: a user's ``.tmp-notes`` and ``.thesis.draft001.tmp`` were deleted)."""
    import os
    import time

    from versemi.fileio import MACHINE_TOKEN, make_temp_file, remove_stale_temp_files

    mine = make_temp_file(tmp_path / "last.pt")  # this process is alive: kept
    assert mine.name.startswith(f".last.pt.versemi-{os.getpid()}-{MACHINE_TOKEN}-") and mine.name.endswith(".tmp")
    image = make_temp_file(tmp_path / "seg.nii.gz", suffix=".nii.gz")
    assert image.name.endswith(".tmp.nii.gz")
    dead = tmp_path / f".manifest.json.versemi-{_dead_pid()}-{MACHINE_TOKEN}-abcd1234.tmp"
    dead_image = tmp_path / f".seg.nii.gz.versemi-{_dead_pid()}-{MACHINE_TOKEN}-0bcd1234.tmp.nii.gz"
    other_machine = tmp_path / f".seg.nii.gz.versemi-{_dead_pid()}-{'0' * 6 if MACHINE_TOKEN != '0' * 6 else '1' * 6}-0bcd1234.tmp"
    # The user's own files, old, whose names look temporary (and older versemi names, not provably ours).
    users = [tmp_path / ".tmp-notes", tmp_path / ".thesis.draft001.tmp", tmp_path / ".best.pt.k2j3h4g5.tmp",
             tmp_path / ".tmp-1a2b3c4d~case01.r2.nii.gz", tmp_path / f".notes.{_dead_pid()}-draft001.tmp",
             tmp_path / ".hidden_config", tmp_path / "notes.tmp", tmp_path / ".manifest.lock"]
    for p in [dead, dead_image, other_machine, *users]:
        p.write_bytes(b"x")
    old = time.time() - 7 * 24 * 3600
    for p in users:
        os.utime(p, (old, old))
    removed = remove_stale_temp_files(tmp_path)
    assert sorted(removed) == sorted([dead, dead_image])
    assert all(p.exists() for p in [mine, image, other_machine, *users])
    assert remove_stale_temp_files(tmp_path / "missing") == []


def test_temp_file_of_a_zombie_writer_is_stale(tmp_path: Path) -> None:
    """A killed writer that its parent has not reaped yet (a zombie) is gone too."""
    import subprocess
    import sys
    import time

    from versemi.fileio import MACHINE_TOKEN, remove_stale_temp_files

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.time() + 30
        import psutil

        while psutil.Process(proc.pid).status() != psutil.STATUS_ZOMBIE and time.time() < deadline:
            time.sleep(0.05)
        left = tmp_path / f".seg.nii.gz.versemi-{proc.pid}-{MACHINE_TOKEN}-abcd1234.tmp.nii.gz"
        left.write_bytes(b"x")
        assert remove_stale_temp_files(tmp_path) == [left]
    finally:
        proc.wait()


def test_temp_file_names_say_what_they_were_to_become(tmp_path: Path) -> None:
    from versemi.fileio import is_temp_file_name, make_temp_file, temp_file_target

    made = make_temp_file(tmp_path / "case01.r2.nii.gz", suffix=".nii.gz")
    assert is_temp_file_name(made.name) and temp_file_target(made.name) == "case01.r2.nii.gz"
    assert not is_temp_file_name(".tmp-1a2b3c4d~case01.r2.nii.gz") and temp_file_target(".tmp-1a2b3c4d") is None
    assert not is_temp_file_name("case01.r2.nii.gz") and temp_file_target("notes.tmp") is None


def test_outputs_follow_the_umask(tmp_path: Path) -> None:
    """Published files get 0o666 less the umask (mkstemp's 0600 kept other users of a study folder out)."""
    import os

    from versemi.fileio import AtomicGroup

    previous = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
        with AtomicGroup() as group:
            group.write_text("y", tmp_path / "b.txt")
        os.umask(0o007)
        atomic_write_bytes(tmp_path / "c.bin", b"x")
    finally:
        os.umask(previous)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "c.bin").stat().st_mode & 0o777 == 0o660


def test_interrupt_between_creating_and_registering_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    """Names and folders are registered before they exist: an interrupt right after the file or a
    folder is created (the race behind orphan temp files after Ctrl-C / SIGTERM) leaves nothing."""
    import os

    from versemi import fileio

    real_mkdir, real_create = Path.mkdir, fileio.create_temp_file

    def mkdir_then_interrupt(self, *args, **kwargs):
        real_mkdir(self, *args, **kwargs)
        if self.name == "deeper":
            raise KeyboardInterrupt

    def create_then_interrupt(path, target):
        real_create(path, target)
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "mkdir", mkdir_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(tmp_path / "new" / "deeper" / "x.bin", b"x")
    monkeypatch.setattr(Path, "mkdir", real_mkdir)
    monkeypatch.setattr(fileio, "create_temp_file", create_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(tmp_path / "made" / "x.bin", b"x")
    assert sorted(os.listdir(tmp_path)) == []


def test_short_write_fails_naming_the_target_and_keeps_the_old_file(tmp_path: Path) -> None:
    """A writer whose bytes do not all reach the file (a full disk seen late) fails the write."""
    from versemi.fileio import AtomicGroup

    target = tmp_path / "labels.bin"
    target.write_bytes(b"old")

    def lose_bytes(f: BinaryIO) -> None:
        f.write(b"x" * 100)
        f.flush()
        os.truncate(f.fileno(), 10)  # what a full disk does to a writer that ignores errors

    import os

    with pytest.raises(OSError) as info:
        atomic_write(target, lose_bytes)
    assert info.value.filename == str(target) and "short write" in info.value.strerror
    assert "10 of 100 bytes" in info.value.strerror
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["labels.bin"]
    with pytest.raises(KeyboardInterrupt):
        with AtomicGroup() as group:
            group.write_text("new", target)
            raise KeyboardInterrupt
    assert target.read_bytes() == b"old"


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
