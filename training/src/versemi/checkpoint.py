"""Self-describing checkpoints: one file that carries everything needed to resume or to predict.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)`` (no pickled code). Keys:

- ``format`` ("versemi-checkpoint"), ``format_version`` (int), ``versemi_version`` (str)
- ``model_config``: the architecture (``versemi.model.build_model`` input)
- ``label_space``: ``LabelSpace.to_dict()``
- ``plans``: ``Plans.to_dict()`` (:mod:`versemi.data.plans`): each training dataset's preprocessing
  and patch/window, and which dataset's plan the extra (unlabeled, review) folders used
- ``model``: the weights to predict with (state dict)
- training state, present in training checkpoints: ``config``, ``optimizer``, ``scaler``, ``ema``,
  ``schedule``, ``rng``, ``step``, ``stage``, ``best_metric``...

Files are written to a temporary file in the same folder, flushed to disk and renamed over the
target, so a crash leaves either the old or the new checkpoint, never a truncated one.

**Integrity.** ``torch.load`` does not notice damage inside a tensor (a flipped byte loads and
predicts). So every file :func:`save_checkpoint` writes carries its own SHA-256: torch writes a zip
archive, and the archive's comment (the last bytes of the file, part of the zip format, ignored by
``torch.load`` and every zip reader) holds ``versemi-sha256:<64 hex digits>``, the hash of every byte
before the comment. :func:`load_checkpoint` checks it before anything is unpickled, whatever the
file is called or wherever it came from. A checkpoint without one (written by an older versemi or
by plain ``torch.save``) is checked against an ``expected_sha256`` where the caller has one (an
installed catalogue model), else it loads with a :class:`CheckpointIntegrityWarning` that says damage
cannot be detected. ``sha256sum`` of the whole file (what catalogues list) is unaffected.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import struct
import warnings
from pathlib import Path
from typing import Any, BinaryIO

import torch

from versemi import __version__
from versemi.fileio import atomic_write, sha256_file, sha256_prefix

FORMAT = "versemi-checkpoint"
# 2: per-dataset plans (``plans``) replace the single ``preprocessing`` spec and its ``patch_size``.
FORMAT_VERSION = 2
REQUIRED_FOR_INFERENCE = ("model_config", "label_space", "plans", "model")

CHECKSUM_PREFIX = b"versemi-sha256:"
_COMMENT_LEN = len(CHECKSUM_PREFIX) + 64
_EOCD_SIGNATURE = b"PK\x05\x06"  # zip "end of central directory" record: 22 bytes + the comment
_EOCD_LEN = 22
_HEX64 = re.compile(rb"^[0-9a-f]{64}$")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and the problem."""


class CheckpointIntegrityWarning(UserWarning):
    """A checkpoint loaded without any checksum to verify it against (damage would go unnoticed)."""


class _ChecksumWriter:
    """The file object ``torch.save`` writes to: bytes pass through to ``out`` and into a SHA-256,
    except the archive's last 22 bytes (the end-of-central-directory record), held back until
    :meth:`finish` gives the record a comment length and appends the comment with the digest."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._digest = hashlib.sha256()
        self._tail = b""

    def _emit(self, data: bytes | memoryview) -> None:
        if len(data):
            self._digest.update(data)
            self._out.write(data)

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        n = len(view)
        if n >= _EOCD_LEN:
            self._emit(self._tail)
            self._emit(view[: n - _EOCD_LEN])
            self._tail = bytes(view[n - _EOCD_LEN:])
        else:
            joined = self._tail + bytes(view)
            self._emit(joined[: max(0, len(joined) - _EOCD_LEN)])
            self._tail = joined[-_EOCD_LEN:]
        return n

    def flush(self) -> None:
        self._out.flush()

    def finish(self) -> None:
        tail = self._tail
        if len(tail) != _EOCD_LEN or not tail.startswith(_EOCD_SIGNATURE) or tail[20:22] != b"\x00\x00":
            raise RuntimeError("torch.save did not end the archive with a comment-less zip record")
        self._emit(tail[:20] + struct.pack("<H", _COMMENT_LEN))
        self._out.write(CHECKSUM_PREFIX + self._digest.hexdigest().encode("ascii"))


def _save_with_checksum(payload: dict[str, Any], f: BinaryIO) -> None:
    writer = _ChecksumWriter(f)
    torch.save(payload, writer)
    writer.finish()


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> Path:
    """Write ``payload`` atomically to ``path`` (temp file + fsync + rename) with its SHA-256 inside.

    Returns:
        ``path``.
    """
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "versemi_version": __version__, **payload}
    return atomic_write(path, lambda f: _save_with_checksum(payload, f))


def stored_checksum(path: str | Path) -> tuple[str, int] | None:
    """The SHA-256 a checkpoint carries and how many leading bytes it covers, or None if it has none.

    Raises:
        OSError: the file cannot be read.
    """
    path = Path(path)
    size = path.stat().st_size
    trailer = _EOCD_LEN + _COMMENT_LEN
    if size < trailer:
        return None
    with path.open("rb") as f:
        f.seek(size - trailer)
        tail = f.read(trailer)
    comment = tail[_EOCD_LEN:]
    if (
        not tail.startswith(_EOCD_SIGNATURE)
        or tail[20:22] != struct.pack("<H", _COMMENT_LEN)
        or not comment.startswith(CHECKSUM_PREFIX)
    ):
        return None
    digest = comment[len(CHECKSUM_PREFIX):]
    if not _HEX64.match(digest):
        return ("<unreadable>", size - _COMMENT_LEN)
    return digest.decode("ascii"), size - _COMMENT_LEN


def verify_checkpoint_file(path: str | Path, expected_sha256: str | None = None) -> bool:
    """Check a checkpoint file's integrity without loading it.

    Args:
        path: the checkpoint.
        expected_sha256: SHA-256 of the whole file from a trusted record (catalogue, model cache),
            used when the file carries no checksum of its own.

    Returns:
        True when a checksum was verified; False when there was nothing to verify against.

    Raises:
        CheckpointError: the file does not match its checksum (damaged) or cannot be read.
    """
    path = Path(path)
    try:
        stored = stored_checksum(path)
        if stored is not None:
            digest, covered = stored
            actual = sha256_prefix(path, covered)
            if actual != digest:
                raise CheckpointError(
                    f"{path}: checkpoint is damaged: its bytes do not match the SHA-256 stored in it "
                    f"({digest[:16]}... expected, {actual[:16]}... found); copy or download it again"
                )
            return True
        if expected_sha256 is not None:
            actual = sha256_file(path)
            if actual != expected_sha256.lower():
                raise CheckpointError(
                    f"{path}: checkpoint is damaged: SHA-256 {actual[:16]}... does not match the recorded "
                    f"{expected_sha256[:16]}...; download or import it again"
                )
            return True
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint: {exc.strerror or exc}") from None
    return False


def _load_failure_reason(exc: BaseException) -> str:
    """One line on why ``torch.load(weights_only=True)`` failed; never torch's advice to load the
    file with ``weights_only=False`` (that would run whatever code the file holds)."""
    if isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" in str(exc):
        found = re.search(r"unsupported GLOBAL ([\w.]+)", str(exc))
        if found is None and "Unsupported operand" in str(exc):
            return "not a PyTorch weights-only checkpoint (a plain Python pickle?)"
        what = f" (it refers to {found.group(1)})" if found else ""
        return ("it holds Python objects other than tensors and plain data" + what
                + "; VerSemi never loads those, because loading them can run code from the file")
    text = " ".join(str(exc).split())
    if "PytorchStreamReader" in text or "zip" in text.lower():
        first = text.split(". ")[0]
        return f"truncated or corrupt file ({first})"
    if isinstance(exc, (KeyError, EOFError, ValueError, IndexError)) or not text:
        return f"not a PyTorch checkpoint file ({type(exc).__name__}: {text[:80]})" if text else "not a PyTorch checkpoint file"
    return f"truncated or corrupt file ({type(exc).__name__}: {text[:120]})"


def load_checkpoint(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    for_inference: bool = False,
    expected_sha256: str | None = None,
) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` after verifying its checksum, and check that it is
    a usable VerSemi checkpoint.

    Args:
        path: the checkpoint file.
        map_location: where tensors go.
        for_inference: also require the keys prediction needs.
        expected_sha256: SHA-256 of the whole file from a trusted record, for files written without
            a checksum of their own (see the module docstring).

    Raises:
        CheckpointError: missing, empty, damaged (checksum mismatch), truncated or corrupt file; not a
            weights-only file; not a VerSemi checkpoint; a format version this release cannot read;
            keys missing for inference. Always one line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: checkpoint file is empty")
    verified = verify_checkpoint_file(path, expected_sha256)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols are not for users
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for damaged files
        raise CheckpointError(f"{path}: cannot read checkpoint: {_load_failure_reason(exc)}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a VerSemi checkpoint (no '{FORMAT}' format marker)")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version} is incompatible with this versemi "
            f"{__version__} (reads format version {FORMAT_VERSION}); it was written by versemi "
            f"{payload.get('versemi_version', '?')}"
        )
    if for_inference:
        missing = [k for k in REQUIRED_FOR_INFERENCE if k not in payload]
        if missing:
            raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)} needed for prediction")
    if not verified:
        warnings.warn(
            f"{path}: checkpoint carries no checksum (written by an older versemi or by plain torch.save), "
            "so damage to it cannot be detected; install it with `versemi models import FILE` and use it "
            "by name to have its SHA-256 recorded and checked",
            CheckpointIntegrityWarning,
            stacklevel=2,
        )
    return payload
