"""The ``versemi`` command line: one sub-command per module in this package.

Each sub-command lives in ``versemi/cli/<name>.py`` and defines ``COMMAND`` (its name on the command
line), ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int`` (the exit code).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from versemi import __version__

# Order shown in ``versemi --help``.
SUBCOMMAND_MODULES = [
    "demo",
    "check_dataset",
    "preprocess",
    "train",
    "predict",
    "evaluate",
    "pseudolabel",
    "review",
    "models",
]


class CliError(Exception):
    """An error to report to the user in one line (no traceback), exit status 2 by default."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    parser = argparse.ArgumentParser(
        prog="versemi",
        description="VerSemi: one task-prompted model for semi-supervised medical image segmentation.",
    )
    parser.add_argument("--version", action="version", version=f"versemi {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules: dict[str, object] = {}
    for mod_name in SUBCOMMAND_MODULES:
        full = f"versemi.cli.{mod_name}"
        if importlib.util.find_spec(full) is None:
            continue
        module = importlib.import_module(full)
        p = sub.add_parser(module.COMMAND, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        modules[module.COMMAND] = module
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return int(modules[args.command].run(args) or 0)
    except CliError as exc:
        print(f"versemi {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"versemi {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
