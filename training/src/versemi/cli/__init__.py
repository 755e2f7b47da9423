"""The ``versemi`` command line: one sub-command per module of this package.

Each sub-command module defines ``COMMAND``, ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. Heavy packages (torch, MONAI, SimpleITK) are imported inside ``run``, and
:func:`main` calls ``add_arguments`` only for the command being run, so ``versemi --help`` stays fast
(``tests/cli/test_startup.py``). SIGTERM raises :class:`Terminated` (a ``KeyboardInterrupt``) so every
cleanup runs as on Ctrl-C; the exit status is 143 (130 for SIGINT). versemi's own warnings print as
one line, ``versemi <command>: warning: <message>``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import signal
import sys
import threading
import warnings
from collections.abc import Collection, Iterator, Sequence
from types import ModuleType

from versemi import __version__
from versemi.environment import memory_limit_text

# Order shown in ``versemi --help``.
SUBCOMMAND_MODULES = [
    "demo",
    "check_dataset",
    "preprocess",
    "plan",
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


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM so that it cleans up exactly like Ctrl-C."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread (no-op elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def one_line_warnings(command: str) -> Iterator[None]:
    """Within the block, warnings raised by versemi's own code print as one line on stderr."""
    with warnings.catch_warnings():  # restores showwarning afterwards
        default = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 - warnings' signature
            if getattr(category, "__module__", "").startswith("versemi"):
                print(f"versemi {command}: warning: {message}", file=sys.stderr)
            else:
                default(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


def check_environment() -> None:
    """Name a bad ``$VERSEMI_MEMORY_LIMIT`` before any work, whether or not a scan is large enough
    for the limit to be consulted.

    Raises:
        CliError: the variable is set to something that is not a size.
    """
    if memory_limit_text():
        from versemi.data.memory import MemoryLimitError, env_memory_limit

        try:
            env_memory_limit()
        except MemoryLimitError as exc:
            raise CliError(str(exc)) from None


def build_parser(
    with_options: Collection[str] | None = None,
) -> tuple[argparse.ArgumentParser, dict[str, ModuleType]]:
    """The ``versemi`` parser and the sub-command modules by command name.

    Args:
        with_options: the commands whose own options to add (``add_arguments``, which may import what
            its defaults need); the others get their name and help line only, enough for
            ``versemi --help``. None adds every command's options.

    Returns:
        The parser and ``{command: module}``.
    """
    parser = argparse.ArgumentParser(
        prog="versemi",
        description="VerSemi: one task-prompted model for semi-supervised medical image segmentation.",
    )
    parser.add_argument("--version", action="version", version=f"versemi {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules: dict[str, ModuleType] = {}
    for mod_name in SUBCOMMAND_MODULES:
        full = f"versemi.cli.{mod_name}"
        if importlib.util.find_spec(full) is None:
            continue
        module = importlib.import_module(full)
        p = sub.add_parser(module.COMMAND, help=module.HELP, description=module.HELP)
        if with_options is None or module.COMMAND in with_options:
            module.add_arguments(p)
        modules[module.COMMAND] = module
    return parser, modules


def _requested_command(argv: Sequence[str]) -> set[str]:
    """The sub-command named on the command line, as a set of at most one name.

    The top-level options (``--help``, ``--version``) take no value, so the first word that is not an
    option is the sub-command.
    """
    for word in argv:
        if not word.startswith("-"):
            return {word}
    return set()


def main(argv: list[str] | None = None) -> int:
    """Run ``versemi`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit status.

    Args:
        argv: the command line without the program name.

    Returns:
        The sub-command's exit status; 2 for a usage or :class:`CliError` error, 130 when interrupted
        (SIGINT), 143 when terminated (SIGTERM).
    """
    if argv is None:
        argv = sys.argv[1:]
    parser, modules = build_parser(with_options=_requested_command(argv))
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        with sigterm_as_interrupt(), one_line_warnings(args.command):
            check_environment()
            return int(modules[args.command].run(args) or 0)
    except CliError as exc:
        print(f"versemi {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Terminated:
        print(f"versemi {args.command}: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(f"versemi {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
