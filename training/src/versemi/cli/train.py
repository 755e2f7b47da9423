"""``versemi train CONFIG``: train VerSemi (stage 1, 2 or both) or a baseline from a training config."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from versemi.cli import CliError
from versemi.enums import Method

COMMAND = "train"
HELP = "train a model (VerSemi stage 1/2 or a baseline) from a training config"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="training config (YAML or JSON)")
    parser.add_argument(
        "--method",
        choices=[str(m) for m in Method],
        help="training method (default: the config's training.method, else versemi)",
    )
    parser.add_argument(
        "--stage",
        choices=("1", "2", "all"),
        default="all",
        help="VerSemi stage(s): 1 = labeled only, 2 = semi-supervised from stage 1's weights, all = both "
        "(default); baselines have one stage",
    )
    parser.add_argument("--output-dir", type=Path, help="output folder (default: the config's output_dir)")
    parser.add_argument("--resume", action="store_true", help="continue from last.pt in the output folder")
    parser.add_argument(
        "--resume-from",
        type=Path,
        metavar="CHECKPOINT",
        help="start from this checkpoint's weights (retrain / fine-tune, e.g. after reviewing pseudo-labels); "
        "optimizer and step counter start fresh; overrides training.init_checkpoint",
    )
    from versemi.devices import DEVICES, Precision

    parser.add_argument(
        "--device", choices=DEVICES, default="auto",
        help="training device (default: auto = CUDA, else Apple MPS where it runs 3D convolutions, else CPU)",
    )
    parser.add_argument("--max-steps", type=int, help="total step budget (overrides training.max_steps)")
    parser.add_argument("--num-workers", type=int, help="DataLoader workers (overrides training.num_workers)")
    parser.add_argument(
        "--precision", choices=[str(p) for p in Precision],
        help="arithmetic of the network (overrides training.precision): auto = float16 on CUDA, bfloat16 on a "
        "CPU with native bf16, else float32; bf16 / fp16 fall back to float32 where not native",
    )
    parser.add_argument("--amp", choices=("auto", "fp16", "bf16", "none"), help=argparse.SUPPRESS)  # deprecated
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from versemi.checkpoint import CheckpointError
    from versemi.data.config import ConfigError, load_config
    from versemi.training import distributed as dist_utils
    from versemi.training.options import TrainingOptionsError, precision_from_amp, training_options
    from versemi.devices import resolve_device
    from versemi.training.checkpointing import stage_folder
    from versemi.training.trainer import TrainingError, run_training

    try:
        config = load_config(args.config)
        section = dict(config.training)
        if args.method:
            section["method"] = args.method
        if args.max_steps is not None:
            section["max_steps"] = args.max_steps
        if args.num_workers is not None:
            section["num_workers"] = args.num_workers
        if args.amp is not None:
            args.precision = args.precision or precision_from_amp(args.amp, "--amp", "--precision")
        if args.precision is not None:
            section.pop("amp", None)
            section["precision"] = args.precision
        if args.resume_from is not None:
            if not args.resume_from.is_file():
                raise CliError(f"--resume-from: {args.resume_from}: checkpoint file not found")
            section["init_checkpoint"] = str(args.resume_from.expanduser().resolve())
        init = section.get("init_checkpoint")
        if init and not Path(init).expanduser().is_absolute() and config.source is not None:
            section["init_checkpoint"] = str((config.source.parent / init).resolve())  # relative to the config
        options = training_options(section, str(config.source or args.config))
    except (ConfigError, TrainingOptionsError) as exc:
        raise CliError(str(exc)) from exc
    _check_model_section(config.model, config.source or args.config)

    method = options.method
    if method == "versemi":
        stages = [1, 2] if args.stage == "all" else [int(args.stage)]
    else:
        if args.stage == "2":
            raise CliError(f"--stage 2 is a VerSemi stage; method {method!r} has a single stage")
        stages = [1]
    output_dir = (args.output_dir or config.output_dir).expanduser().resolve()
    if args.resume and not any((stage_folder(output_dir, method, s) / "last.pt").is_file() for s in stages):
        raise CliError(
            f"--resume: no last.pt under {output_dir} for method {method!r} "
            f"(looked in {', '.join(str(stage_folder(output_dir, method, s)) for s in stages)})"
        )

    try:
        local_rank = int(__import__("os").environ.get("LOCAL_RANK", 0))
        device, _ = resolve_device(args.device, local_rank)
        ctx = dist_utils.init_distributed(device)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    try:
        results = run_training(
            config, options, stages, output_dir, device, ctx, resume=args.resume, progress=not args.no_progress
        )
    except (CheckpointError, TrainingError, ConfigError, ValueError, FileNotFoundError) as exc:
        raise CliError(str(exc)) from exc
    finally:
        dist_utils.shutdown_distributed()
    if ctx.is_main:
        for r in results:
            print(
                json.dumps(
                    {
                        "folder": str(r.folder),
                        "checkpoint": str(r.checkpoint),
                        "step": r.step,
                        "best_mean_dice": r.best_metric,
                        "best_step": r.best_step,
                        "stopped_early": r.stopped_early,
                        "data_wait_fraction": round(r.data_wait_fraction, 4),
                        "seconds": round(r.seconds, 1),
                    }
                )
            )
    return 0


def _check_model_section(model: dict, source: Path) -> None:
    """Refuse a ``model:`` section the model builder would refuse, naming the config file (a typo in
    a key must not surface later, after the data is preprocessed, without saying where it is)."""
    from versemi.network.segmenter import resolve_config

    try:
        resolve_config({"num_prompts": 1, **dict(model)})  # the real prompt count comes from the label space
    except (ValueError, TypeError) as exc:
        raise CliError(f"{source}: model: {exc}") from None
