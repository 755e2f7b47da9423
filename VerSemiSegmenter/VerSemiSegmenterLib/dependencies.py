"""What the predictor needs inside Slicer's Python, and installing only what is missing, safely.

Rules, from users' reports of AI extensions breaking Slicer: check the Slicer version first
(:func:`platform_problem`: 5.10 or newer, for Python 3.10+); ask before installing, with the exact list
(never in testing mode); install only what is missing or too old, and never change the packages Slicer
bundles (numpy, SimpleITK, VTK, pip) nor an installed torch: they are pinned by a constraints file,
and a ``pip install --dry-run --report`` proves it before the real install. torch comes first, through
the PyTorch extension (light-the-torch); ``versemi`` itself is installed ``--no-deps`` from the copy
inside the extension. Commands run in a background process (:class:`InstallFlow`, polled from a GUI
timer); the environment and the runner are injected so the flow is tested without Slicer.
See docs/SLICER.md, "Install".
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Protocol, Sequence
from .i18n import _

# Distribution names Slicer ships itself; replacing them breaks Slicer (compiled against them).
PROTECTED_PACKAGES = frozenset({"numpy", "simpleitk", "vtk"})
TORCH_DISTRIBUTION = "torch"
PIP_DISTRIBUTION = "pip"  # Slicer's own pip: light-the-torch requires a pip range, never let it move
VERSEMI_DISTRIBUTION = "versemi"
_IMPORT_NAMES = {"pyyaml": "yaml", "scikit-image": "skimage", "simpleitk": "SimpleITK"}

# The supported range (docs/SLICER.md "Supported Slicer versions"; training/pyproject.toml
# requires-python): Slicer 5.10 is the first release with Python >= 3.10 (3.12).
MIN_SLICER_VERSION = (5, 10)
MIN_PYTHON_VERSION = (3, 10)
SLICER_DOWNLOAD_URL = "https://download.slicer.org"


class DependencyError(RuntimeError):
    """Dependencies are missing and could not be (or were not allowed to be) installed."""


def platform_problem(slicer_version: str, python_version: Sequence[int] = tuple(sys.version_info[:2])) -> Optional[str]:
    """Why this Slicer cannot run VerSemi (``None`` when it can), with what to do about it.

    Args:
        slicer_version: ``slicer.app.applicationVersion``, e.g. ``"5.8.1"`` or ``"5.11.0-2025-11-02"``.
        python_version: the Python running Slicer (``sys.version_info``).
    """
    found = version_tuple(slicer_version)
    python = tuple(int(v) for v in tuple(python_version)[:2])
    needed = ".".join(map(str, MIN_SLICER_VERSION))
    if found and found[:2] < MIN_SLICER_VERSION or python < MIN_PYTHON_VERSION:
        return (
            f"VerSemi Segmenter needs 3D Slicer {needed} or newer (Python "
            f"{'.'.join(map(str, MIN_PYTHON_VERSION))}+); this is Slicer {slicer_version or '?'} with Python "
            f"{'.'.join(map(str, python))}. Current PyTorch, MONAI and the versemi package no longer support "
            f"that Python. Install the latest Slicer release from {SLICER_DOWNLOAD_URL}, then install the "
            "VerSemiSegmenter extension there."
        )
    return None


@dataclass(frozen=True)
class Requirement:
    """A distribution name with an optional minimum version (``name>=1.2``)."""

    name: str
    min_version: Optional[str] = None

    def __str__(self) -> str:
        return f"{self.name}>={self.min_version}" if self.min_version else self.name

    @property
    def key(self) -> str:
        return canonical_name(self.name)


LIGHT_THE_TORCH = Requirement("light-the-torch", "0.5")  # what the PyTorch extension installs torch with


def canonical_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


_REQ_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:>=\s*([0-9][0-9A-Za-z.]*))?\s*$")


def parse_requirements(text: str, source: str = "requirements") -> list[Requirement]:
    """Parse ``name`` / ``name>=version`` lines (comments and blank lines allowed).

    Raises:
        ValueError: a line in another form (this module only supports these two, on purpose).
    """
    requirements = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _REQ_RE.match(line)
        if not match:
            raise ValueError(_("{source}:{number}: unsupported requirement {line!r} (use name or name>=version)").format(source=source, number=number, line=line))
        requirements.append(Requirement(match.group(1), match.group(2)))
    return requirements


def read_requirements(path: str | os.PathLike[str]) -> list[Requirement]:
    path = Path(path)
    return parse_requirements(path.read_text(encoding="utf-8"), str(path))


def version_tuple(version: str) -> tuple[int, ...]:
    """``"1.6.0rc1"`` -> ``(1, 6, 0)``: numeric release parts only (enough for minimum checks)."""
    parts = []
    for piece in (version or "").split("."):
        match = re.match(r"\d+", piece)
        if not match:
            break
        parts.append(int(match.group()))
    return tuple(parts)


def installed_version(distribution: str) -> Optional[str]:
    """Installed version of a distribution, without importing it; ``None`` if absent."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _installed(distribution: str) -> Optional[str]:
    return installed_version(distribution)  # looked up at call time (tests replace it)


def bundled_versemi_version(source_dir: str | os.PathLike[str]) -> str:
    """The version in the bundled ``training/pyproject.toml`` (read as text: no tomllib before 3.11)."""
    pyproject = Path(source_dir) / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    project = text.split("[project]", 1)[-1]
    match = re.search(r'^version\s*=\s*"([^"]+)"', project, flags=re.MULTILINE)
    if not match:
        raise DependencyError(_("{pyproject}: no version in [project]").format(pyproject=pyproject))
    return match.group(1)


@dataclass
class DependencyPlan:
    """What has to be installed before the predictor can run.

    Attributes:
        torch: PyTorch must be installed or upgraded (through the PyTorch extension).
        torch_requirement: versemi's minimum, e.g. ``torch>=2.2``.
        installed_torch: the torch version found (``None`` when absent).
        packages: requirements that are missing or too old (never protected ones, never torch).
        versemi_source: the bundled ``versemi`` project to install, when its version is not installed.
    """

    torch: bool = False
    torch_requirement: Optional[Requirement] = None
    installed_torch: Optional[str] = None
    packages: list[Requirement] = field(default_factory=list)
    versemi_source: Optional[Path] = None
    versemi_version: Optional[str] = None

    @property
    def empty(self) -> bool:
        return not self.torch and not self.packages and self.versemi_source is None

    def describe(self) -> str:
        lines = []
        if self.torch:
            wanted = str(self.torch_requirement or TORCH_DISTRIBUTION)
            have = f", replacing torch {self.installed_torch}" if self.installed_torch else ""
            lines.append(f"- PyTorch {wanted} (through the PyTorch extension: the build for your GPU driver{have})")
        for requirement in self.packages:
            lines.append(f"- {requirement}")
        if self.versemi_source is not None:
            lines.append(f"- versemi {self.versemi_version} (bundled with this extension, no download)")
        return "\n".join(lines)


def _too_old(have: Optional[str], requirement: Requirement) -> bool:
    return have is None or bool(
        requirement.min_version and version_tuple(have) < version_tuple(requirement.min_version)
    )


def plan_dependencies(
    requirements: list[Requirement],
    versemi_source: str | os.PathLike[str] | None,
    version_of: Optional[Callable[[str], Optional[str]]] = None,
) -> DependencyPlan:
    """Decide what is missing. Protected packages are skipped; torch is checked against its minimum.

    ``version_of`` gives an installed distribution's version (default: :func:`installed_version`).
    """
    version_of = version_of or _installed
    torch_requirement = next((r for r in requirements if r.key == TORCH_DISTRIBUTION), Requirement(TORCH_DISTRIBUTION))
    installed_torch = version_of(TORCH_DISTRIBUTION)
    plan = DependencyPlan(
        torch=_too_old(installed_torch, torch_requirement),
        torch_requirement=torch_requirement,
        installed_torch=installed_torch,
    )
    for requirement in requirements:
        if requirement.key in PROTECTED_PACKAGES or requirement.key == TORCH_DISTRIBUTION:
            continue
        if _too_old(version_of(requirement.name), requirement):
            plan.packages.append(requirement)
    if versemi_source is not None:
        wanted = bundled_versemi_version(versemi_source)
        if version_of(VERSEMI_DISTRIBUTION) != wanted:
            plan.versemi_source = Path(versemi_source)
            plan.versemi_version = wanted
    return plan


def constraint_lines(version_of: Optional[Callable[[str], Optional[str]]] = None) -> list[str]:
    """pip constraints pinning what Slicer (and the PyTorch extension) already provide.

    Protected distributions, pip and torch that are installed are pinned to their exact version,
    so pip must find a solution that keeps them (or fail) instead of replacing them.
    """
    version_of = version_of or _installed
    lines = []
    for name in sorted(PROTECTED_PACKAGES | {TORCH_DISTRIBUTION, PIP_DISTRIBUTION}):
        version = version_of(name)
        if version:
            lines.append(f"{name}=={version}")
    return lines


@dataclass(frozen=True)
class PackageChange:
    """One distribution pip would install: new, or replacing ``old_version``."""

    name: str
    version: str
    old_version: Optional[str] = None

    @property
    def key(self) -> str:
        return canonical_name(self.name)

    def __str__(self) -> str:
        if self.old_version is None:
            return f"{self.name} {self.version} (new)"
        return f"{self.name} {self.old_version} -> {self.version}"


def parse_install_report(
    report: Mapping[str, Any], version_of: Optional[Callable[[str], Optional[str]]] = None
) -> list[PackageChange]:
    """What a ``pip install --dry-run --report`` document says would be installed.

    Raises:
        DependencyError: the document is not a pip installation report.
    """
    version_of = version_of or _installed
    try:
        items = report["install"]
        changes = []
        for item in items:
            meta = item["metadata"]
            name, version = str(meta["name"]), str(meta["version"])
            changes.append(PackageChange(name, version, version_of(name)))
    except (KeyError, TypeError) as exc:
        raise DependencyError(_("unexpected pip installation report (missing {exc})").format(exc=exc)) from exc
    return changes


def protected_changes(changes: list[PackageChange]) -> list[PackageChange]:
    """The changes that would touch Slicer's own packages, its pip or the installed torch."""
    return [c for c in changes if c.key in PROTECTED_PACKAGES or c.key in (TORCH_DISTRIBUTION, PIP_DISTRIBUTION)]


def check_no_protected_changes(changes: list[PackageChange]) -> None:
    """Raise when pip would install or replace numpy, SimpleITK, VTK or torch."""
    touched = protected_changes(changes)
    if touched:
        raise DependencyError(
            _("installing VerSemi's packages would change packages that Slicer or the PyTorch "
               "extension provide ({value}); nothing was installed. Update Slicer (and PyTorch in the "
               "PyTorch Utils module), or install a matching versemi release.").format(value=', '.join(str(c) for c in touched))
        )


def pip_command(python_executable: str, args: Sequence[str]) -> list[str]:
    """``<python> -m pip <args>`` without pip's version check (no network round trip for it)."""
    return [python_executable, "-m", "pip", *args, "--disable-pip-version-check"]


def dry_run_command(
    python_executable: str, requirements: Sequence[Requirement], constraints_file: str, report_file: str
) -> list[str]:
    """The ``pip install --dry-run --report`` that tells what the install would change."""
    return pip_command(
        python_executable,
        ["install", "--dry-run", "--quiet", "--report", report_file, "-c", constraints_file,
         *[str(r) for r in requirements]],
    )


def install_command(python_executable: str, requirements: Sequence[Requirement], constraints_file: str) -> list[str]:
    return pip_command(python_executable, ["install", "-c", constraints_file, *[str(r) for r in requirements]])


def versemi_install_command(python_executable: str, project_dir: str | os.PathLike[str]) -> list[str]:
    """Install a (copied) versemi project offline, without touching any other package."""
    return pip_command(
        python_executable, ["install", "--no-deps", "--no-build-isolation", "--upgrade", os.fspath(project_dir)]
    )


def copy_versemi_project(source: str | os.PathLike[str], destination_parent: str | os.PathLike[str]) -> Path:
    """Copy the bundled project to a writable folder (pip builds inside it) and make it self-contained."""
    source = Path(source)
    project_dir = Path(destination_parent) / source.name
    shutil.copytree(source, project_dir, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    make_self_contained(project_dir, source)
    return project_dir


def make_self_contained(project_dir: str | os.PathLike[str], original_dir: str | os.PathLike[str]) -> None:
    """Let a copied project build on its own: bring a ``readme`` from outside the folder inside it.

    ``training/pyproject.toml`` names ``../README.md``; setuptools refuses files outside the project
    folder when building a wheel, so the copy gets the README (found relative to ``original_dir``)
    beside its ``pyproject.toml``, or, if there is none, no ``readme`` key.
    """
    project_dir = Path(project_dir)
    pyproject = project_dir / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    match = re.search(r'^readme\s*=\s*"([^"]+)"\s*$', text, flags=re.MULTILINE)
    if not match or not match.group(1).startswith(".."):
        return
    readme = (Path(original_dir) / match.group(1)).resolve()
    if readme.is_file():
        shutil.copy(readme, project_dir / readme.name)
        replacement = f'readme = "{readme.name}"'
    else:
        replacement = ""
    pyproject.write_text(text[: match.start()] + replacement + text[match.end():], encoding="utf-8")


def bundled_versemi_source(resources_dir: str | os.PathLike[str]) -> Optional[Path]:
    """Where to install ``versemi`` from: the copy the extension ships, or the source checkout.

    ``<module>/Resources/versemi-package/training`` is made by the CMake build; when the module is
    used straight from a repository checkout (added to Slicer's module paths), ``<repo>/training``.
    """
    resources_dir = Path(resources_dir)
    for path in (resources_dir / "versemi-package" / "training", resources_dir.parent.parent / "training"):
        if (path / "pyproject.toml").is_file() and (path / "src" / "versemi").is_dir():
            return path
    return None


# --- the install flow -------------------------------------------------------------------------------


class InstallEnvironment(Protocol):
    """What :class:`InstallFlow` needs from Slicer (or a test double)."""

    testing: bool
    python_executable: str

    def confirm(self, message: str) -> bool:
        """Ask the user (OK/Cancel)."""
        ...

    def torch_install_args(self, requirement: str) -> list[str]:
        """Arguments of ``python -m light_the_torch`` that install ``requirement`` (PyTorch extension).

        Raises:
            DependencyError: the PyTorch extension is not installed.
        """
        ...


class CommandRun(Protocol):
    """A started background command (:class:`VerSemiSegmenterLib.process.ProcessRunner`)."""

    def poll(self) -> Any: ...

    def cancel(self) -> None: ...


def _start_process(command: list[str]) -> CommandRun:
    from .process import ProcessRunner

    runner = ProcessRunner(command)
    runner.start()
    return runner


@dataclass
class InstallResult:
    """How an :class:`InstallFlow` ended."""

    succeeded: bool
    installed: list[str] = field(default_factory=list)
    restart_needed: bool = False
    error: Optional[str] = None
    cancelled: bool = False


@dataclass
class _Step:
    message: str
    command: list[str]


class InstallFlow:
    """Install what the predictor misses, one background command at a time (poll from a timer).

    Order: (1) PyTorch through the PyTorch extension, when missing or older than versemi's minimum
    (asks first); (2) ``pip install --dry-run --report`` of the missing packages, with Slicer's
    packages and torch pinned by a constraints file; refuses if any of them would still change;
    (3) one question listing exactly what will be installed or upgraded; (4) the install, then
    versemi ``--no-deps`` from the bundled source. In testing mode nothing is asked or installed:
    :meth:`start` raises :class:`DependencyError` naming what is missing.

    Args:
        env: questions and the PyTorch extension (:class:`InstallEnvironment`).
        requirements: ``Resources/requirements.txt``.
        versemi_source: the bundled versemi project (or ``None`` when versemi is installed otherwise).
        version_of: installed version of a distribution (``None`` if absent).
        loaded_modules: import names loaded in Slicer's process (for the restart advice).
        start_command: starts a background command (default: a :class:`ProcessRunner`).
    """

    def __init__(
        self,
        env: InstallEnvironment,
        requirements: list[Requirement],
        versemi_source: str | os.PathLike[str] | None,
        version_of: Optional[Callable[[str], Optional[str]]] = None,
        loaded_modules: Optional[set[str]] = None,
        start_command: Optional[Callable[[list[str]], CommandRun]] = None,
    ) -> None:
        self.env = env
        self.requirements = list(requirements)
        self.versemi_source = versemi_source
        self.version_of = version_of or _installed
        self.loaded_modules = loaded_modules
        self.start_command = start_command or (lambda command: _start_process(command))
        self.status = ""
        self.installed: list[str] = []
        self.restart_needed = False
        self._steps: Optional[Iterator[_Step]] = None
        self._running: Optional[CommandRun] = None
        self._step: Optional[_Step] = None
        self._result: Optional[InstallResult] = None
        self._cancel_requested = False

    def plan(self) -> DependencyPlan:
        return plan_dependencies(self.requirements, self.versemi_source, self.version_of)

    @property
    def result(self) -> Optional[InstallResult]:
        return self._result

    @property
    def is_running(self) -> bool:
        return self._steps is not None and self._result is None

    def start(self) -> None:
        """Plan and start; finishes at once when nothing is missing (see :attr:`result`).

        Raises:
            DependencyError: testing mode with something missing (nothing is installed then).
        """
        plan = self.plan()
        if plan.empty:
            self._result = InstallResult(True)
            return
        if self.env.testing:
            raise DependencyError(
                _("the VerSemi backend is not installed and testing mode installs nothing; missing:\n")
                + plan.describe()
            )
        self._steps = self._flow(plan)
        self._advance(None)

    def poll(self) -> Optional[InstallResult]:
        """Advance when the running command has ended; the result once the flow is over."""
        if self._result is not None or self._running is None:
            return self._result
        outcome = self._running.poll()
        if outcome is None:
            return None
        self._running = None
        if getattr(outcome, "cancelled", False):
            self._finish(InstallResult(False, list(self.installed), error=_("installation cancelled"), cancelled=True))
        elif getattr(outcome, "returncode", 1) != 0:
            message = "\n".join(line for line in getattr(outcome, "stderr_tail", [])[-15:] if line.strip())
            message = message or f"exit status {getattr(outcome, 'returncode', None)}"
            self._finish(InstallResult(
                False, list(self.installed), error=f"{self._step.message} failed:\n{message}"
            ))
        else:
            self._advance(outcome)
        return self._result

    def cancel(self) -> bool:
        """Stop the install safely: a step that changes nothing (a dry run, the PyTorch download by
        light-the-torch is NOT one) is stopped at once; a pip step that installs is left to finish
        (killing pip half-way can leave broken packages) and nothing after it starts.

        Returns:
            True if the flow is over now; False if it stops after the running step (see :attr:`status`).
        """
        self._cancel_requested = True
        if self._running is not None and self._step is not None and "--dry-run" in self._step.command:
            self._running.cancel()
            self.poll()
        if self._running is None and self._result is None and self._steps is not None:
            self._finish(InstallResult(False, list(self.installed), error=_("installation cancelled"), cancelled=True))
        if self._result is None:
            self.status = _("Cancelling after this step: {step}").format(step=self._step.message if self._step else "")
        return self._result is not None

    def _advance(self, outcome: Any) -> None:
        try:
            step = next(self._steps) if outcome is None else self._steps.send(outcome)
        except StopIteration:
            self._finish(InstallResult(True, list(self.installed), self.restart_needed))
            return
        except DependencyError as exc:
            self._finish(InstallResult(False, list(self.installed), error=str(exc)))
            return
        if self._cancel_requested:  # asked while the previous step ran: start nothing more
            self._finish(InstallResult(False, list(self.installed), error=_("installation cancelled"),
                                       cancelled=True, restart_needed=self.restart_needed))
            return
        self._step = step
        self.status = step.message
        try:
            self._running = self.start_command(step.command)
        except OSError as exc:
            self._finish(InstallResult(False, list(self.installed), error=f"{step.message} failed: {exc}"))

    def _finish(self, result: InstallResult) -> None:
        self._result = result
        self.status = "" if result.succeeded else (result.error or "")
        if self._steps is not None:
            self._steps.close()  # runs the flow's cleanup (temporary folders)

    def _flow(self, plan: DependencyPlan):
        python = self.env.python_executable
        with tempfile.TemporaryDirectory(prefix="versemi-install-") as tmp:
            constraints = os.path.join(tmp, "constraints.txt")
            if plan.torch:
                yield from self._torch_steps(plan, python, tmp, constraints)
                plan = self.plan()
            changes: list[PackageChange] = []
            self._write_constraints(constraints)  # now with the torch just installed
            if plan.packages:
                changes = yield from self._dry_run(python, plan.packages, constraints, tmp)
            summary = [f"- {change}" for change in changes]
            if plan.versemi_source is not None:
                summary.append(_("- versemi {version} (bundled with this extension, no download)").format(
                    version=plan.versemi_version))
            if summary and not self.env.confirm(
                _("VerSemi Segmenter will install these Python packages into Slicer:\n\n") + "\n".join(summary)
                + _("\n\nSlicer's own packages (numpy, SimpleITK, VTK, pip) and PyTorch are not changed. Install now?")
            ):
                raise DependencyError(_("required packages are not installed:\n") + "\n".join(summary))
            if changes:
                yield _Step(_("Installing {names}").format(names=", ".join(c.name for c in changes)),
                            install_command(python, plan.packages, constraints))
                self.installed.extend(c.name for c in changes)
                loaded = self._loaded()
                self.restart_needed |= any(
                    c.old_version is not None and _IMPORT_NAMES.get(c.key, c.key.replace("-", "_")) in loaded
                    for c in changes
                )
            if plan.versemi_source is not None:
                project = copy_versemi_project(plan.versemi_source, tmp)
                yield _Step(_("Installing versemi {version}").format(version=plan.versemi_version),
                            versemi_install_command(python, project))
                self.installed.append(f"versemi {plan.versemi_version}")
                self.restart_needed |= VERSEMI_DISTRIBUTION in self._loaded()

    def _torch_steps(self, plan: DependencyPlan, python: str, tmp: str, constraints: str):
        """PyTorch through the PyTorch extension's installer; light-the-torch itself dry-run first
        (pip pinned: it must not move Slicer's pip) and listed in the one question."""
        ltt_changes: list[PackageChange] = []
        if self.version_of("light-the-torch") is None:
            self._write_constraints(constraints)
            ltt_changes = yield from self._dry_run(python, [LIGHT_THE_TORCH], constraints, tmp)
        question = _("VerSemi Segmenter needs PyTorch:\n\n") + plan.describe().splitlines()[0]
        if ltt_changes:
            question += "\n\n" + _("It is installed by the PyTorch extension's installer, which needs first:") + "\n"
            question += "\n".join(f"- {change}" for change in ltt_changes)
        question += "\n\n" + _("Install now? This downloads several hundred MB and can take a few minutes; "
                                "Slicer stays usable meanwhile.")
        if not self.env.confirm(question):
            raise DependencyError(_("PyTorch is not installed:\n{describe}").format(describe=plan.describe()))
        if ltt_changes:
            yield _Step(_("Installing light-the-torch (the PyTorch extension's installer)"),
                        install_command(python, [LIGHT_THE_TORCH], constraints))
            self.installed.extend(c.name for c in ltt_changes)
        args = self.env.torch_install_args(str(plan.torch_requirement))
        yield _Step(_("Installing PyTorch ({requirement})").format(requirement=plan.torch_requirement),
                    [python, "-m", "light_the_torch", *args])
        self.installed.append(TORCH_DISTRIBUTION)
        self.restart_needed |= TORCH_DISTRIBUTION in self._loaded()
        after = self.plan()
        if after.torch:
            raise DependencyError(
                _("PyTorch {value} after the install, but versemi needs {requirement}: install it in the PyTorch "
                  "Utils module, restart Slicer and try again.").format(
                    value=after.installed_torch or _("is missing"), requirement=after.torch_requirement)
            )

    def _dry_run(self, python: str, requirements: Sequence[Requirement], constraints: str, tmp: str):
        """``pip install --dry-run --report`` (a step); returns what would change, refusing Slicer's packages."""
        report = os.path.join(tmp, "report.json")
        yield _Step(_("Checking what pip would install"), dry_run_command(python, requirements, constraints, report))
        try:
            document = json.loads(Path(report).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DependencyError(_("{report}: pip wrote no installation report ({exc})").format(report=report, exc=exc)) from exc
        changes = parse_install_report(document, self.version_of)
        check_no_protected_changes(changes)
        return changes

    def _write_constraints(self, path: str) -> None:
        Path(path).write_text("\n".join(constraint_lines(self.version_of)) + "\n", encoding="utf-8")

    def _loaded(self) -> set[str]:
        return set(sys.modules) if self.loaded_modules is None else self.loaded_modules
