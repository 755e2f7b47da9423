"""``versemi pseudolabel``: pseudo-label every scan of a folder, resumable, with a manifest."""

from __future__ import annotations

import argparse
import sys

from versemi.cli._inference_args import (
    add_model_arguments,
    predictor_from_args,
    reporting_errors,
    start_inference,
)

COMMAND = "pseudolabel"
HELP = "pseudo-label every scan of a folder (or an nnU-Net imagesTr) with a trained model; resumable"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", "-i", required=True,
                        help="folder of scans (NIfTI/NRRD/MHA files or DICOM series sub-folders), "
                             "or an nnU-Net raw dataset folder (its imagesTr is used)")
    parser.add_argument("--output", "-o", required=True,
                        help="folder for <case>.nii.gz + <case>.json + <case>.ctbl and manifest.jsonl")
    add_model_arguments(parser)
    parser.add_argument("--output-extension", default=".nii.gz",
                        choices=[".nii.gz", ".nii", ".nrrd", ".mha"], help="labelmap format")
    parser.add_argument("--no-resume", action="store_true",
                        help="redo cases that an earlier run already finished with the same model")


def run(args: argparse.Namespace) -> int:
    from versemi.inference.progress import JsonLinesProgress
    from versemi.inference.pseudolabel import MANIFEST_NAME, pseudolabel_folder

    progress = start_inference(args)
    with reporting_errors(progress):
        predictor = predictor_from_args(args)
        records = pseudolabel_folder(
            predictor, args.input, args.output, args.prompts,
            output_extension=args.output_extension, resume=not args.no_resume, progress=progress,
        )
    failed = [r for r in records if r.status == "failed"]
    manifest = f"{args.output.rstrip('/')}/{MANIFEST_NAME}"
    if isinstance(progress, JsonLinesProgress):
        progress.done(output=args.output, manifest=manifest, cases=len(records), failed=len(failed))
    if args.progress != "json":
        print(f"{len(records) - len(failed)} of {len(records)} cases pseudo-labelled; manifest: {manifest}",
              file=sys.stderr)
    for r in failed:
        print(f"versemi pseudolabel: {r.case}: {r.error}", file=sys.stderr)
    return 1 if failed else 0
