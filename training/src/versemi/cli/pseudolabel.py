"""``versemi pseudolabel``: pseudo-label every scan of a folder, resumable, with a manifest."""

from __future__ import annotations

import argparse
import sys

from versemi.cli._inference_args import (
    OUTPUT_FORMATS,
    add_model_arguments,
    predictor_from_args,
    reporting_errors,
    start_inference,
)

COMMAND = "pseudolabel"
HELP = "pseudo-label every scan of a folder (or an nnU-Net imagesTr) with a trained model; resumable"


EPILOG = """\
outputs in the --output folder:
  <case>.nii.gz, <case>.json, <case>.ctbl   labelmap, sidecar and colour table per case
  manifest.json    the folder's one manifest: every case with its model, uncertainty score (most
                   uncertain first) and review status, or the error of a case that failed; the
                   annotation loop reviews from it (see docs/REVIEW.md)
The score compares the chosen prompts with the synthetic all_foreground prompt, which is computed
but never written as a label. Run the same command again to resume an interrupted run."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the epilog's layout
    parser.add_argument("--input", "-i", required=True,
                        help="folder of scans (NIfTI/NRRD/MHA files or DICOM series sub-folders), "
                             "or an nnU-Net raw dataset folder (its imagesTr is used)")
    parser.add_argument("--output", "-o", required=True,
                        help="folder for <case>.nii.gz + <case>.json + <case>.ctbl and the folder's "
                             "manifest.json (uncertainty scores, review status; see docs/REVIEW.md)")
    add_model_arguments(parser)
    from versemi.images import LABELMAP_EXTENSIONS

    parser.add_argument("--output-extension", default=LABELMAP_EXTENSIONS[0], choices=LABELMAP_EXTENSIONS,
                        help="labelmap format")
    parser.add_argument("--no-resume", action="store_true",
                        help="redo cases that an earlier run already finished with the same model")
    parser.add_argument("--output-format", default="labelmap", choices=OUTPUT_FORMATS,
                        help="dicom-seg: also write <case>.dcm, a DICOM SEG referencing the case's series, for "
                             "every case that is a DICOM series (needs versemi[dicom])")


def run(args: argparse.Namespace) -> int:
    from versemi.data.memory import memory_limit_set
    from versemi.inference.progress import JsonLinesProgress
    from versemi.inference.pseudolabel import pseudolabel_folder
    from versemi.review.manifest import MANIFEST_NAME

    progress = start_inference(args)
    with reporting_errors(progress), memory_limit_set(args.memory_limit):
        predictor = predictor_from_args(args)
        records = pseudolabel_folder(
            predictor, args.input, args.output, args.prompts,
            output_extension=args.output_extension, resume=not args.no_resume, progress=progress,
            allow_gaps=args.allow_gaps, overwrite=args.overwrite, dicom_seg=args.output_format == "dicom-seg",
        )
    failed = [r for r in records if r.status == "failed"]
    manifest = f"{args.output.rstrip('/')}/{MANIFEST_NAME}"
    if isinstance(progress, JsonLinesProgress):
        progress.done(output=args.output, manifest=manifest, cases=len(records), failed=len(failed))
    if args.progress != "json":
        print(f"{len(records) - len(failed)} of {len(records)} cases pseudo-labelled; manifest (uncertainty "
              f"scores, review status): {manifest}", file=sys.stderr)
    for r in failed:
        print(f"versemi pseudolabel: {r.case}: {r.error}", file=sys.stderr)
    return 1 if failed else 0
