"""``versemi predict``: segment one scan with a trained model (see docs/PREDICT.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from versemi.cli import CliError

COMMAND = "predict"
HELP = "segment a scan (NIfTI, NRRD, MHA or a DICOM folder) with a trained VerSemi model"


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``predict`` and ``pseudolabel``: model, device and inference settings."""
    parser.add_argument("--model", "-m", required=True,
                        help="checkpoint file, or NAME[@VERSION] of an installed catalogue model")
    parser.add_argument("--prompts", "-p", default="all",
                        help="comma-separated target names, 'all' (every real target) or "
                             "'all_foreground' (the synthetic union prompt); default: all")
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "mps", "cpu"],
                        help="auto = CUDA if available, else Apple MPS where it works, else CPU")
    parser.add_argument("--quality", default="default", choices=["default", "fast"],
                        help="fast = twice the model's voxel spacing (about 8x faster, coarser borders)")
    parser.add_argument("--tta", action="store_true", help="mirroring test-time augmentation (8x slower)")
    parser.add_argument("--overlap", type=float, default=None,
                        help="sliding-window overlap fraction (default 0.5; 0.25 with --quality fast)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="windows per forward pass (default 4 on CUDA, 1 on CPU)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch and SimpleITK")
    parser.add_argument("--progress", default="auto", choices=["auto", "bar", "json", "none"],
                        help="auto = a bar on a terminal; json = machine-readable lines on stdout")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", "-i", help="image file or DICOM series folder")
    parser.add_argument("--output", "-o",
                        help="labelmap to write (.nii.gz, .nrrd, .mha...); default: <input>_seg.nii.gz")
    add_model_arguments(parser)
    parser.add_argument("--series-uid", help="DICOM series to read when the folder holds several")
    parser.add_argument("--roi", metavar="x0,y0,z0,x1,y1,z1",
                        help="segment only this box: voxel indices of the input (start inclusive, end exclusive)")
    parser.add_argument("--probabilities", metavar="DIR",
                        help="also write one probability map per prompt: DIR/<prompt>.nii.gz")
    parser.add_argument("--probabilities-dtype", default="float32", choices=["float32", "uint8"],
                        help="float32 = probability 0..1; uint8 = round(255 * probability)")
    parser.add_argument("--list-prompts", action="store_true", help="print the model's prompts and exit")


def resolve_checkpoint(model: str) -> Path:
    """A checkpoint path from a path or an installed catalogue model name."""
    path = Path(model).expanduser()
    if path.is_file():
        return path
    try:
        from versemi.models import resolve_model
    except ImportError:  # the catalogue is optional for prediction from a file
        raise CliError(f"{model}: model file not found") from None
    return Path(resolve_model(model))


def make_predictor(args: argparse.Namespace):
    """A :class:`~versemi.inference.Predictor` from the shared model options."""
    from versemi.inference.predictor import Predictor

    return Predictor(
        resolve_checkpoint(args.model),
        device=args.device,
        quality=args.quality,
        overlap=args.overlap,
        batch_size=args.batch_size,
        tta=args.tta,
        threads=args.threads,
    )


def run(args: argparse.Namespace) -> int:
    from versemi.inference.predictor import default_output_path
    from versemi.inference.progress import JsonLinesProgress, make_progress, report_info

    from versemi.inference.malloc import tune_malloc

    tune_malloc()  # this process only predicts: keep large buffers instead of page-faulting them back
    progress = make_progress(args.progress)
    try:
        predictor = make_predictor(args)
        if args.list_prompts:
            for i, prompt in enumerate(predictor.label_space.prompts):
                kind = " (synthetic: union of every target)" if prompt.synthetic else ""
                print(f"{i}\t{prompt.name}{kind}")
            return 0
        if not args.input:
            raise CliError("--input is required (an image file or a DICOM folder)")
        output = Path(args.output) if args.output else default_output_path(args.input)
        report_info(progress, f"model {predictor.model_info['name']}: {predictor.device_reason}")
        written = predictor.predict_file(
            args.input,
            output,
            args.prompts,
            probabilities_dir=args.probabilities,
            probabilities_dtype=args.probabilities_dtype,
            series_uid=args.series_uid,
            roi=args.roi,
            progress=progress,
        )
    except (ValueError, OSError, CliError) as exc:
        # ValueError covers the library's one-line errors (checkpoint, input image, prompts, ROI).
        if isinstance(progress, JsonLinesProgress):
            progress.error(str(exc))
        progress.close()
        if isinstance(exc, CliError):
            raise
        raise CliError(str(exc)) from None
    except BaseException as exc:
        if isinstance(progress, JsonLinesProgress):
            progress.error(f"internal error: {type(exc).__name__}: {exc}")
        progress.close()
        raise
    progress.close()
    if isinstance(progress, JsonLinesProgress):
        progress.done(
            output=str(written.output),
            sidecar=str(written.sidecar),
            colour_table=str(written.colour_table),
            probabilities=[str(p) for p in written.probabilities],
            seconds=written.result.info["seconds"]["total"],
        )
    elif args.progress != "none":
        print(f"wrote {written.output} ({len(written.result.labels)} labels) and {written.sidecar}",
              file=sys.stderr)
    return 0
