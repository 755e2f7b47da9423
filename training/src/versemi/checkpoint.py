"""Self-describing checkpoints: one file with everything needed to predict, or to resume training.

:class:`Checkpoint` is the typed, versioned form every reader and writer uses; on disk it stays a plain
dict that loads with ``torch.load(weights_only=True)``. Keys:

- ``format``, ``format_version``, ``versemi_version``, ``model_config``, ``label_space``, ``plans``,
  ``model`` (the weights); optional ``model_name``, ``model_version``, ``postprocessing``;
- training checkpoints add (:class:`TrainingState`) ``config``, ``training``, ``method``, ``stage``,
  ``step``, ``max_steps``, ``optimizer``, ``scaler``, ``ema``, ``schedule``, ``rng``, ``best_metric``,
  ``best_step``, ``stale_validations``.

Writes are atomic. ``torch.load`` does not notice a damaged tensor, so every saved file carries its
SHA-256 in the zip comment (``versemi-sha256:<hex>``, the hash of every byte before it), checked before
anything is unpickled; a file without one is checked against ``expected_sha256`` where the caller has
one, else loads with a :class:`CheckpointIntegrityWarning`.
"""
from __future__ import annotations

import hashlib
import pickle
import re
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Mapping

import torch

from versemi import __version__
from versemi.fileio import atomic_write, sha256_file, sha256_prefix
from versemi.labels import LabelSpace
from versemi.network import build_model

if TYPE_CHECKING:
    from versemi.data.plans import Plans
    from versemi.network.segmenter import PromptedSegmenter

FORMAT = "versemi-checkpoint"
# 2: per-dataset plans (``plans``) replace the single ``preprocessing`` spec and its ``patch_size``.
FORMAT_VERSION = 2
REQUIRED_FOR_INFERENCE = ("model_config", "label_space", "plans", "model")
IN_MEMORY = "<checkpoint dict>"  # how an in-memory checkpoint is named in messages

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


def save_checkpoint(payload: "Checkpoint | Mapping[str, Any]", path: str | Path) -> Path:
    """Write a checkpoint atomically to ``path`` (temp file + fsync + rename) with its SHA-256 inside.

    Args:
        payload: a :class:`Checkpoint`, or its dict form (tests and tools that build one by hand).

    Returns:
        ``path``.
    """
    if isinstance(payload, Checkpoint):
        payload = payload.to_payload()
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


def check_payload(payload: Mapping[str, Any], source: str, for_inference: bool = False) -> None:
    """The one check of a checkpoint's format version (and, ``for_inference``, its prediction keys).

    Args:
        payload: the checkpoint dict (from a file, or built in memory: no version = the current one).
        source: how to name it in messages (its path).
        for_inference: also require :data:`REQUIRED_FOR_INFERENCE`.

    Raises:
        CheckpointError: another format version, or keys missing for prediction.
    """
    version = payload.get("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{source}: checkpoint format version {version} is incompatible with this versemi "
            f"{__version__} (reads format version {FORMAT_VERSION}); it was written by versemi "
            f"{payload.get('versemi_version', '?')}"
        )
    if for_inference:
        missing = [k for k in REQUIRED_FOR_INFERENCE if k not in payload]
        if missing:
            raise CheckpointError(f"{source}: checkpoint lacks {', '.join(missing)} needed for prediction")


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
    check_payload(payload, str(path), for_inference)
    if not verified:
        warnings.warn(
            f"{path}: checkpoint carries no checksum (written by an older versemi or by plain torch.save), "
            "so damage to it cannot be detected; install it with `versemi models import FILE` and use it "
            "by name to have its SHA-256 recorded and checked",
            CheckpointIntegrityWarning,
            stacklevel=2,
        )
    return payload


# --- the typed checkpoint --------------------------------------------------------------------------
_TRAINING_KEYS = ("config", "training", "method", "stage", "step", "max_steps", "optimizer", "scaler", "ema",
                  "schedule", "rng", "best_metric", "best_step", "stale_validations")
# Without these a file cannot resume a run (the others have defaults).
_RESUME_KEYS = ("optimizer", "schedule", "step", "stage", "method")


@dataclass
class TrainingState:
    """What a training checkpoint adds to resume its run exactly (never needed to predict).

    Attributes:
        config: the training config (``TrainConfig.to_dict()``).
        options: the resolved ``training`` section (file key ``training``).
        method, stage, step, max_steps: where the run is.
        optimizer, scaler, ema, schedule: their ``state_dict()`` (``{}`` when unused).
        rng: the RNG states (:func:`versemi.training.state.capture_rng_state`).
        best_metric, best_step, stale_validations: model selection and early stopping.
    """

    config: dict[str, Any]
    options: dict[str, Any]
    method: str
    stage: int
    step: int
    max_steps: int
    optimizer: dict[str, Any]
    schedule: dict[str, Any]
    rng: dict[str, Any]
    scaler: dict[str, Any] = field(default_factory=dict)
    ema: dict[str, Any] = field(default_factory=dict)
    best_metric: float | None = None
    best_step: int | None = None
    stale_validations: int = 0

    def to_payload(self) -> dict[str, Any]:
        return {
            "config": self.config, "training": self.options, "method": self.method, "stage": self.stage,
            "step": self.step, "max_steps": self.max_steps, "optimizer": self.optimizer, "scaler": self.scaler,
            "ema": self.ema, "schedule": self.schedule, "rng": self.rng, "best_metric": self.best_metric,
            "best_step": self.best_step, "stale_validations": self.stale_validations,
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], source: str) -> "TrainingState | None":
        """The training state of a checkpoint dict; None when it has none (an inference checkpoint).

        Raises:
            CheckpointError: a partial training state (it could not resume), naming ``source``.
        """
        if not any(k in payload for k in _RESUME_KEYS):
            return None
        missing = [k for k in _RESUME_KEYS if k not in payload]
        if missing:
            raise CheckpointError(f"{source}: not a training checkpoint (no {missing[0]!r}); cannot resume from it")
        return cls(
            config=dict(payload.get("config") or {}), options=dict(payload.get("training") or {}),
            method=str(payload["method"]), stage=int(payload["stage"]), step=int(payload["step"]),
            max_steps=int(payload.get("max_steps", payload["step"])), optimizer=payload["optimizer"],
            schedule=payload["schedule"], rng=dict(payload.get("rng") or {}), scaler=payload.get("scaler") or {},
            ema=payload.get("ema") or {}, best_metric=payload.get("best_metric"), best_step=payload.get("best_step"),
            stale_validations=int(payload.get("stale_validations", 0)),
        )


@dataclass
class Checkpoint:
    """A VerSemi checkpoint: what predicts, and (training checkpoints) the state to resume.

    Attributes:
        model_config: the architecture (:func:`versemi.network.build_model` input).
        label_space: the prompts (prompt id = index).
        plans: each training dataset's preprocessing and window.
        weights: the state dict to predict with.
        training: the training state, or None (a checkpoint for prediction only).
        postprocessing: prompt name -> the labelmap post-processing predict applies to it (key
            ``postprocessing``; empty: none).
        model_name, model_version: the model's identity when it was published under one.
        versemi_version: the versemi that wrote the file (None for one built in memory).
        source: how messages name it (its path, or ``<checkpoint dict>``); not saved.
    """

    model_config: dict[str, Any]
    label_space: "LabelSpace"
    plans: "Plans"
    weights: dict[str, Any]
    training: TrainingState | None = None
    postprocessing: dict[str, str] = field(default_factory=dict)
    model_name: str | None = None
    model_version: str | None = None
    versemi_version: str | None = None
    source: str = IN_MEMORY

    def to_payload(self) -> dict[str, Any]:
        """The dict that is saved (``format`` and ``format_version`` are added by :func:`save_checkpoint`)."""
        payload: dict[str, Any] = {
            "model_config": dict(self.model_config),
            "label_space": self.label_space.to_dict(),
            "plans": self.plans.to_dict(),
            "postprocessing": dict(self.postprocessing),
            "model": self.weights,
        }
        payload.update({k: v for k, v in (("model_name", self.model_name), ("model_version", self.model_version))
                        if v is not None})
        if self.training is not None:
            payload.update(self.training.to_payload())
        return payload

    @classmethod
    def from_payload(cls, payload: "Checkpoint | Mapping[str, Any]", source: str = IN_MEMORY) -> "Checkpoint":
        """Check and type a checkpoint dict (a loaded file's, or one built in memory).

        Raises:
            CheckpointError: another format version, keys missing for prediction, an unreadable label
                space, plans or training state; one line naming ``source``.
        """
        if isinstance(payload, Checkpoint):
            return payload
        from versemi.data.plans import Plans

        check_payload(payload, source, for_inference=True)
        try:
            label_space = LabelSpace.from_dict(payload["label_space"])
            plans = Plans.from_dict(payload["plans"])
            model_config = dict(payload["model_config"])
            weights = dict(payload["model"])
            postprocessing = {str(k): str(v) for k, v in dict(payload.get("postprocessing") or {}).items()}
        except (KeyError, ValueError, TypeError) as exc:  # PlansError is a ValueError
            raise CheckpointError(f"{source}: checkpoint content is not usable for prediction: {exc}") from None
        return cls(
            model_config=model_config, label_space=label_space, plans=plans, weights=weights,
            training=TrainingState.from_payload(payload, source), postprocessing=postprocessing,
            model_name=payload.get("model_name"), model_version=payload.get("model_version"),
            versemi_version=payload.get("versemi_version"), source=source,
        )

    @classmethod
    def load(
        cls, path: str | Path, map_location: str | Any = "cpu", expected_sha256: str | None = None
    ) -> "Checkpoint":
        """:func:`load_checkpoint` (integrity, ``weights_only=True``) then :meth:`from_payload`.

        Raises:
            CheckpointError: see both.
        """
        payload = load_checkpoint(path, map_location=map_location, for_inference=True, expected_sha256=expected_sha256)
        return cls.from_payload(payload, str(path))

    def save(self, path: str | Path) -> Path:
        """:func:`save_checkpoint` (atomic, its SHA-256 inside)."""
        return save_checkpoint(self, path)

    def require_training(self) -> TrainingState:
        """The training state, for resuming.

        Raises:
            CheckpointError: a checkpoint for prediction only.
        """
        if self.training is None:
            raise CheckpointError(f"{self.source}: not a training checkpoint (no 'optimizer'); cannot resume from it")
        return self.training

    def build_model(self) -> "PromptedSegmenter":
        """The network with these weights, in eval mode, checked against the label space and plans.

        Raises:
            CheckpointError: weights that do not fit the architecture, a prompt count other than the
                label space's, or a planned window the network cannot take.
        """
        try:
            model = build_model(self.model_config)
            model.load_state_dict(self.weights)
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise CheckpointError(f"{self.source}: checkpoint content is not usable for prediction: {exc}") from None
        divisor = model.size_divisor
        for plan in self.plans.datasets.values():
            if any(p % divisor for p in plan.patch_size):
                raise CheckpointError(
                    f"{self.source}: {plan.dataset}: patch size {list(plan.patch_size)} is not divisible by {divisor}"
                )
        if model.num_prompts != len(self.label_space):
            raise CheckpointError(
                f"{self.source}: model has {model.num_prompts} prompts but the label space has "
                f"{len(self.label_space)}"
            )
        return model.eval()
