"""``versemi predict``: segment one scan with a trained model (see docs/PREDICT.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from versemi.cli import CliError
from versemi.cli._inference_args import (
    add_model_arguments,
    predictor_from_args,
    reporting_errors,
    start_inference,
)

COMMAND = "predict"
HELP = "segment a scan (NIfTI, NRRD, MHA or a DICOM folder) with a trained VerSemi model"


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


def run(args: argparse.Namespace) -> int:
    from versemi.data.memory import memory_limit_set
    from versemi.inference.predictor import default_output_path
    from versemi.inference.progress import JsonLinesProgress, report_info

    progress = start_inference(args)
    with reporting_errors(progress), memory_limit_set(args.memory_limit):
        predictor = predictor_from_args(args)
        if args.list_prompts:
            for i, prompt in enumerate(predictor.label_space.prompts):
                kind = " (synthetic: union of every target)" if prompt.synthetic else ""
                print(f"{i}\t{prompt.name}{kind}")
            return 0
        if not args.input:
            raise CliError("--input is required (an image file or a DICOM folder)")
        output = Path(args.output) if args.output else default_output_path(args.input)
        report_info(progress, f"model {predictor.model_info['name']}: {predictor.device_reason}, "
                              f"{predictor.precision_name}")
        written = predictor.predict_file(
            args.input,
            output,
            args.prompts,
            probabilities_dir=args.probabilities,
            probabilities_dtype=args.probabilities_dtype,
            series_uid=args.series_uid,
            roi=args.roi,
            progress=progress,
            allow_gaps=args.allow_gaps,
        )
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
