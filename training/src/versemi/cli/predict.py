"""``versemi predict``: segment one scan, or every scan of a folder, with a trained model (docs/PREDICT.md).

``-i FILE|DICOM_FOLDER -o LABELMAP`` segments one scan. ``-i FOLDER -o FOLDER`` (a folder that is not
itself a DICOM series) segments every scan in it (:func:`versemi.inference.batch.predict_folder`):
resumable, one line per case, a failing case reported without stopping the others, exit status 1
when any case failed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from versemi.cli import CliError
from versemi.cli._inference_args import (
    OUTPUT_FORMATS,
    add_model_arguments,
    predictor_from_args,
    reporting_errors,
    start_inference,
)

COMMAND = "predict"
HELP = "segment a scan (NIfTI, NRRD, MHA or a DICOM folder), or every scan of a folder, with a VerSemi model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", "-i",
                        help="image file or DICOM series folder; or a folder of scans (image files, nnU-Net "
                             "<case>_0000 files or imagesTr, DICOM series in sub-folders) to segment them all")
    parser.add_argument("--output", "-o",
                        help="labelmap to write (.nii.gz, .nrrd, .mha...); default: <input>_seg.nii.gz. With a "
                             "folder of scans: the output folder (<case>.nii.gz + .json + .ctbl per case)")
    add_model_arguments(parser)
    parser.add_argument("--series-uid", help="DICOM series to read when the folder holds several")
    parser.add_argument("--roi", metavar="x0,y0,z0,x1,y1,z1",
                        help="segment only this box: voxel indices of the input (start inclusive, end exclusive)")
    parser.add_argument("--probabilities", metavar="DIR",
                        help="also write one probability map per prompt: DIR/<prompt>.nii.gz")
    parser.add_argument("--probabilities-dtype", default="float32", choices=["float32", "uint8"],
                        help="float32 = probability 0..1; uint8 = round(255 * probability)")
    parser.add_argument("--list-prompts", action="store_true", help="print the model's prompts and exit")
    from versemi.images import LABELMAP_EXTENSIONS

    parser.add_argument("--output-extension", default=LABELMAP_EXTENSIONS[0], choices=LABELMAP_EXTENSIONS,
                        help="folder of scans: the labelmap format (default .nii.gz)")
    parser.add_argument("--no-resume", action="store_true",
                        help="folder of scans: redo the cases an earlier run already did with the same model "
                             "and prompts (default: skip them)")
    parser.add_argument("--output-format", default="labelmap", choices=OUTPUT_FORMATS,
                        help="dicom-seg (input: a DICOM series): --output is a DICOM SEG (.dcm, default "
                             "<input>_seg.dcm) referencing the series; the same labelmap is written beside it as "
                             "<name>.nii.gz with its sidecar (needs versemi[dicom])")


def is_scan_folder(path: Path) -> bool:
    """A folder of scans (batch mode), not a folder holding one DICOM series: an nnU-Net dataset, a
    folder with image files, or a folder in which no DICOM series lies directly."""
    from versemi.images import IMAGE_EXTENSIONS, list_dicom_series, split_image_extension

    if not path.is_dir():
        return False
    if (path / "imagesTr").is_dir():
        return True
    if any(split_image_extension(p.name)[1].lower() in IMAGE_EXTENSIONS for p in path.iterdir() if p.is_file()):
        return True  # decided without reading every file's header as DICOM
    return not list_dicom_series(path)


def run(args: argparse.Namespace) -> int:
    from versemi.data.memory import memory_limit_set
    from versemi.inference.export import default_output_path
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
        if is_scan_folder(Path(args.input)):
            if args.output_format == "dicom-seg":
                raise CliError("--output-format dicom-seg segments one DICOM series (a folder holding one); "
                               "for a folder of series use versemi pseudolabel --output-format dicom-seg")
            return _predict_folder(args, predictor, progress)
        seg_output = _dicom_seg_output(args) if args.output_format == "dicom-seg" else None
        output = (seg_output.with_suffix(".nii.gz") if seg_output is not None
                  else Path(args.output) if args.output else default_output_path(args.input))
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
            overwrite=args.overwrite,
        )
        if seg_output is not None:
            from versemi.dicomseg import write_dicom_seg

            write_dicom_seg(written.result.labelmap, written.result.labels, args.input, seg_output,
                            series_uid=args.series_uid, model_name=str(predictor.model_info.get("name") or "VerSemi"))
    if isinstance(progress, JsonLinesProgress):
        progress.done(
            output=str(written.output),
            **({"dicom_seg": str(seg_output)} if seg_output is not None else {}),
            sidecar=str(written.sidecar),
            colour_table=str(written.colour_table),
            probabilities=[str(p) for p in written.probabilities],
            seconds=written.result.info["seconds"]["total"],
        )
    elif args.progress != "none":
        also = f"{seg_output} (DICOM SEG), " if seg_output is not None else ""
        print(f"wrote {also}{written.output} ({len(written.result.labels)} labels) and {written.sidecar}",
              file=sys.stderr)
    return 0


def _dicom_seg_output(args: argparse.Namespace) -> Path:
    """Where ``--output-format dicom-seg`` writes the SEG; refuses an input that is not a DICOM series."""
    from versemi.dicomseg import DICOM_SEG_EXTENSION, is_dicom_seg_path

    source = Path(args.input)
    if not source.is_dir():
        raise CliError(f"{source}: --output-format dicom-seg needs a DICOM series folder as --input "
                       "(a DICOM SEG references the series' slices)")
    try:
        import highdicom  # noqa: F401 - fail before the inference, not after
    except ImportError:
        raise CliError("--output-format dicom-seg needs highdicom: pip install 'versemi[dicom]'") from None
    if not args.output:
        return source.parent / f"{source.name}_seg{DICOM_SEG_EXTENSION}"
    if not is_dicom_seg_path(args.output):
        raise CliError(f"{args.output}: with --output-format dicom-seg the output is a {DICOM_SEG_EXTENSION} file")
    return Path(args.output)


def _predict_folder(args: argparse.Namespace, predictor, progress) -> int:
    """``-i FOLDER -o FOLDER``: every scan, one line per case; 1 when any case failed."""
    from versemi.images import IMAGE_EXTENSIONS, split_image_extension
    from versemi.inference.batch import predict_folder
    from versemi.inference.io import find_images
    from versemi.inference.progress import JsonLinesProgress, report_info

    if split_image_extension(Path(args.input).name)[1].lower() in IMAGE_EXTENSIONS and not find_images(args.input):
        raise CliError(f"{args.input}: is a folder, not an image file (and it holds no scans and no DICOM series)")
    if not args.output:
        raise CliError("--output FOLDER is required when --input is a folder of scans")
    if split_image_extension(Path(args.output).name)[1].lower() in IMAGE_EXTENSIONS:
        raise CliError(f"{args.output}: with a folder of scans as --input, --output must be a folder, "
                       "not an image file")
    for option, value in (("--roi", args.roi), ("--series-uid", args.series_uid)):
        if value:
            raise CliError(f"{option} applies to one scan, not to a folder of scans")
    report_info(progress, f"model {predictor.model_info['name']}: {predictor.device_reason}, {predictor.precision_name}")
    json_mode = isinstance(progress, JsonLinesProgress)

    def on_case(outcome, index: int, total: int) -> None:
        line = outcome.line(index, total)
        info = getattr(progress, "info", None)  # a JSON line, or a line above the bar
        if info is not None:
            info(line)
        else:
            print(line, file=sys.stderr, flush=True)

    outcomes = predict_folder(
        predictor, args.input, args.output, args.prompts, output_extension=args.output_extension,
        resume=not args.no_resume, progress=progress, on_case=on_case, probabilities_dir=args.probabilities,
        probabilities_dtype=args.probabilities_dtype, allow_gaps=args.allow_gaps, overwrite=args.overwrite,
    )
    counts = {status: sum(o.status == status for o in outcomes) for status in ("done", "skipped", "failed")}
    summary = (f"{counts['done'] + counts['skipped']} of {len(outcomes)} scans segmented into {args.output} "
               f"({counts['skipped']} already done, skipped); {counts['failed']} failed")
    if json_mode:
        progress.done(output=str(args.output), cases=len(outcomes), skipped=counts["skipped"], failed=counts["failed"])
    else:
        print(summary, file=sys.stderr)
    return 1 if counts["failed"] else 0
