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
