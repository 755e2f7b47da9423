"""What ``versemi predict`` and ``versemi pseudolabel`` share: model options, model loading, progress.

Not a sub-command (no ``COMMAND``; the dispatcher only loads the modules it lists). Imports of torch
and the inference package stay inside the functions so that building the parser stays cheap.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from versemi.cli import CliError
from versemi.fileio import describe_error

if TYPE_CHECKING:
    from versemi.inference.predictor import Predictor
    from versemi.inference.progress import ProgressReporter


# What predict/pseudolabel write: the labelmap (+ sidecar), or also a DICOM SEG (versemi.dicomseg).
OUTPUT_FORMATS = ("labelmap", "dicom-seg")

def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options shared by ``predict`` and ``pseudolabel``: model, device and inference settings.

    Args:
        parser: the sub-command's parser.
    """
    parser.add_argument("--model", "-m", default=None,
                        help="checkpoint file, or NAME[@VERSION] of an installed catalogue model "
                             "(default: the catalogue's default model, e.g. the one shipped with versemi; "
                             "see `versemi models list`)")
    parser.add_argument("--prompts", "-p", default="all",
                        help="comma-separated target names, 'all' (every real target) or "
                             "'all_foreground' (the synthetic union prompt); default: all")
    from versemi.devices import DEVICES, Precision

    parser.add_argument("--device", default="auto", choices=DEVICES,
                        help="auto = CUDA if available, else Apple MPS where it runs 3D convolutions, else CPU")
    parser.add_argument("--quality", default="default", choices=["default", "fast"],
                        help="fast = twice the model's voxel spacing (about 8x faster, coarser borders)")
    parser.add_argument("--tta", action="store_true", help="mirroring test-time augmentation (8x slower)")
    parser.add_argument("--precision", default="auto", choices=[str(p) for p in Precision],
                        help="arithmetic of the network: auto = float16 on CUDA, bfloat16 on a CPU with native "
                             "bf16 (AVX512-BF16 or AMX), else float32; bf16 / fp16 where the hardware computes "
                             "it natively, else float32 (see docs/PREDICT.md)")
    parser.add_argument("--overlap", type=float, default=None,
                        help="sliding-window overlap fraction (default 0.5; 0.25 with --quality fast)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="windows per forward pass (default 4 on CUDA, 1 on CPU)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch and SimpleITK")
    parser.add_argument("--dataset", metavar="NAME", default=None,
                        help="preprocess like this training dataset, e.g. Dataset004_SpleenCT "
                             "(default: each prompt's own dataset); an unknown name lists the model's datasets")
    parser.add_argument("--any-modality", action="store_true",
                        help="run the default prompts (all) whatever the scan's modality (default: only the "
                             "prompts trained on the scan's modality, CT or MR, run; the others are skipped "
                             "and named)")
    parser.add_argument("--no-postprocess", action="store_true",
                        help="keep every predicted component (default: the model's post-processing, e.g. keep "
                             "each structure's largest connected component where its training validation chose it)")
    parser.add_argument("--progress", default="auto", choices=["auto", "bar", "json", "none"],
                        help="auto = a bar on a terminal; json = machine-readable lines on stdout")
    parser.add_argument("--allow-gaps", action="store_true",
                        help="read DICOM series with missing, duplicate or unevenly spaced slices anyway "
                             "(default: refused, naming the slice positions)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing output files that versemi did not write (e.g. a JSON with the "
                             "sidecar's name beside a BIDS scan); default: refused, naming the file")
    parser.add_argument("--memory-limit", metavar="SIZE", type=_memory_size, default=None,
                        help="refuse scans whose preprocessing would need more memory than this, e.g. 8G "
                             "(default: $VERSEMI_MEMORY_LIMIT, else the memory available now)")


def _memory_size(text: str) -> str:
    """``--memory-limit`` values: a size like ``8G`` (checked here, applied with
    :func:`versemi.data.memory.memory_limit_set` around the work)."""
    from versemi.data.memory import parse_size

    try:
        parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def resolve_checkpoint(model: str | None) -> Path:
    """A checkpoint path from a path, an installed catalogue model name, or (None) the default model.

    Args:
        model: a checkpoint file, ``NAME[@VERSION]`` of an installed catalogue model, or None for the
            catalogue's default model (:func:`versemi.models.resolve_default_model`).

    Returns:
        The checkpoint file (for a catalogue model: size and SHA-256 just verified).

    Raises:
        CliError: ``model`` is no file and the model catalogue is not available.
        versemi.models.ModelError: no default model, or a model that is not installed or damaged.
    """
    if model is not None:
        path = Path(model).expanduser()
        if path.is_file():
            return path
    try:
        from versemi.models import resolve_default_model, resolve_model
    except ImportError:  # the catalogue is optional for prediction from a file
        raise CliError(f"{model}: model file not found" if model else "--model is required") from None
    if model is None:
        return resolve_default_model()[1]
    return Path(resolve_model(model))


def predictor_from_args(args: argparse.Namespace) -> Predictor:
    """A :class:`~versemi.inference.predictor.Predictor` from the options of :func:`add_model_arguments`.

    Args:
        args: parsed options of ``predict`` or ``pseudolabel``.

    Returns:
        The loaded predictor.
    """
    from versemi.inference.predictor import Predictor

    return Predictor(
        resolve_checkpoint(args.model),
        device=args.device,
        quality=args.quality,
        overlap=args.overlap,
        batch_size=args.batch_size,
        tta=args.tta,
        threads=args.threads,
        precision=args.precision,
        dataset=args.dataset,
        postprocess=not getattr(args, "no_postprocess", False),
        modality_guard=not getattr(args, "any_modality", False),
    )


def start_inference(args: argparse.Namespace) -> ProgressReporter:
    """Prepare this process for inference and return the progress reporter ``--progress`` asks for.

    Args:
        args: parsed options of ``predict`` or ``pseudolabel``.

    Returns:
        The reporter; close it with :func:`reporting_errors`.
    """
    from versemi.inference.malloc import tune_malloc
    from versemi.inference.progress import make_progress

    tune_malloc()  # this process only predicts: keep large buffers instead of page-faulting them back
    return make_progress(args.progress)


@contextmanager
def reporting_errors(progress: ProgressReporter) -> Iterator[None]:
    """Close ``progress`` when the block ends, reporting an error on it first if one stops the block.

    The library's one-line errors (``ValueError`` covers checkpoint, input image, output path,
    memory, prompt and ROI problems; ``OSError`` unreadable or unwritable files, shown as
    ``<file>: <reason>``) become a :class:`~versemi.cli.CliError`;
    anything else is re-raised as it is after an "internal error" line.

    Args:
        progress: the reporter from :func:`start_inference`.

    Raises:
        CliError: the block raised ``ValueError``, ``OSError`` or ``CliError``.
    """
    from versemi.inference.progress import JsonLinesProgress

    try:
        yield
    except (ValueError, OSError, CliError) as exc:
        message = describe_error(exc)
        if isinstance(progress, JsonLinesProgress):
            progress.error(message)
        progress.close()
        if isinstance(exc, CliError):
            raise
        raise CliError(message) from None
    except BaseException as exc:
        if isinstance(progress, JsonLinesProgress):
            progress.error(f"internal error: {type(exc).__name__}: {exc}")
        progress.close()
        raise
    progress.close()
