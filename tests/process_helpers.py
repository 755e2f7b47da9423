"""Helpers for tests that kill real processes (shared by the end-to-end and training tests)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "VERSEMI_TEST_THREADS": "1"}
ENV.pop("VERSEMI_MEMORY_LIMIT", None)

_KILLED_WRITER = textwrap.dedent("""
    import sys, time
    from versemi.fileio import atomic_write_bytes

    def stop():
        sys.stdout.write("PAUSED\\n")
        sys.stdout.flush()
        time.sleep(120)

    atomic_write_bytes(sys.argv[1], b"x" * 1000, before_replace=stop)
""")


def leave_temp_file(target: Path) -> Path:
    """Run a real writer of ``target`` (``versemi.fileio.atomic_write``), SIGKILL it before its rename
    and return the temporary file it left behind."""
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(target)], env=ENV, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "PAUSED"
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()
    left = [p for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.")]
    assert len(left) == 1, left
    return left[0]
