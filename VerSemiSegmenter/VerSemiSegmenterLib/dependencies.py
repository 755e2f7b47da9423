"""What the predictor needs inside Slicer's Python, and installing only what is missing.

Rules (from users' reports about AI extensions breaking Slicer):

- ask once, listing everything that will be installed; never ask in testing mode;
- install only what is missing or too old; never install, upgrade or replace the packages Slicer
  bundles (numpy, SimpleITK, VTK): a requirement naming them is ignored;
- torch comes from the PyTorch extension (it picks the CUDA build for the machine's driver);
- ``versemi`` itself is installed ``--no-deps`` from the source shipped inside the extension (no
  network), after copying it to a temporary folder (the install tree may be read-only);
- say when a restart is needed (a package that was already imported got replaced).

The installer is injected (:class:`Installer`), so the flow is tested without Slicer.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable, Protocol

# Distribution names Slicer ships itself; replacing them breaks Slicer (compiled against them).
PROTECTED_PACKAGES = frozenset({"numpy", "simpleitk", "vtk"})
VERSEMI_DISTRIBUTION = "versemi"
# Import names for distributions whose import name differs (to detect "already imported").
_IMPORT_NAMES = {"pyyaml": "yaml", "scikit-image": "skimage"}


class DependencyError(RuntimeError):
    """Dependencies are missing and could not be (or were not allowed to be) installed."""


@dataclass(frozen=True)
class Requirement:
    """A distribution name with an optional minimum version (``name>=1.2``)."""

    name: str
    min_version: str | None = None

    def __str__(self) -> str:
        return f"{self.name}>={self.min_version}" if self.min_version else self.name

    @property
    def key(self) -> str:
        return canonical_name(self.name)


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
            raise ValueError(f"{source}:{number}: unsupported requirement {line!r} (use name or name>=version)")
        requirements.append(Requirement(match.group(1), match.group(2)))
    return requirements


def read_requirements(path: str | os.PathLike[str]) -> list[Requirement]:
    path = Path(path)
    return parse_requirements(path.read_text(encoding="utf-8"), str(path))


def version_tuple(version: str) -> tuple[int, ...]:
    """``"1.6.0rc1"`` -> ``(1, 6, 0)``: numeric release parts only (enough for minimum checks)."""
    parts = []
    for piece in version.split("."):
        match = re.match(r"\d+", piece)
        if not match:
            break
        parts.append(int(match.group()))
    return tuple(parts)


def installed_version(distribution: str) -> str | None:
    """Installed version of a distribution, without importing it; ``None`` if absent."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def bundled_versemi_version(source_dir: str | os.PathLike[str]) -> str:
    """The version in the bundled ``training/pyproject.toml`` (read as text: no tomllib on Python 3.9)."""
    pyproject = Path(source_dir) / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    project = text.split("[project]", 1)[-1]
    match = re.search(r'^version\s*=\s*"([^"]+)"', project, flags=re.MULTILINE)
    if not match:
        raise DependencyError(f"{pyproject}: no version in [project]")
    return match.group(1)


@dataclass
class DependencyPlan:
    """What has to be installed before the predictor can run."""

    torch: bool = False
    packages: list[Requirement] = field(default_factory=list)
    versemi_source: Path | None = None
    versemi_version: str | None = None

    @property
    def empty(self) -> bool:
        return not self.torch and not self.packages and self.versemi_source is None

    def describe(self) -> str:
        lines = []
        if self.torch:
            lines.append("- PyTorch (through the PyTorch extension; the build matching your GPU driver)")
        for requirement in self.packages:
            lines.append(f"- {requirement}")
        if self.versemi_source is not None:
            lines.append(f"- versemi {self.versemi_version} (bundled with this extension, no download)")
        return "\n".join(lines)


def plan_dependencies(
    requirements: list[Requirement],
    versemi_source: str | os.PathLike[str] | None,
    torch_installed: bool,
    version_of: Callable[[str], str | None] = installed_version,
) -> DependencyPlan:
    """Decide what is missing. Protected packages and torch in ``requirements`` are skipped."""
    plan = DependencyPlan(torch=not torch_installed)
    for requirement in requirements:
        if requirement.key in PROTECTED_PACKAGES or requirement.key == "torch":
            continue
        have = version_of(requirement.name)
        if have is None or (
            requirement.min_version and version_tuple(have) < version_tuple(requirement.min_version)
        ):
            plan.packages.append(requirement)
    if versemi_source is not None:
        wanted = bundled_versemi_version(versemi_source)
        if version_of(VERSEMI_DISTRIBUTION) != wanted:
            plan.versemi_source = Path(versemi_source)
            plan.versemi_version = wanted
    return plan


class Installer(Protocol):
    """What :func:`ensure_dependencies` needs from its environment (Slicer, or a test double)."""

    testing: bool

    def confirm(self, message: str) -> bool: ...

    def torch_installed(self) -> bool: ...

    def install_torch(self) -> bool: ...

    def pip_install(self, args: list[str]) -> None:
        """Run ``pip install <args>`` in the predictor's Python (``slicer.util.pip_install(args)``)."""
        ...


@dataclass
class EnsureResult:
    installed: list[str] = field(default_factory=list)
    restart_needed: bool = False


def ensure_dependencies(
    installer: Installer,
    requirements: list[Requirement],
    versemi_source: str | os.PathLike[str] | None,
    version_of: Callable[[str], str | None] = installed_version,
    loaded_modules: set[str] | None = None,
) -> EnsureResult:
    """Install what is missing, after one confirmation (none in testing mode).

    Raises:
        DependencyError: the user declined, or an installation failed.
    """
    plan = plan_dependencies(requirements, versemi_source, installer.torch_installed(), version_of)
    result = EnsureResult()
    if plan.empty:
        return result
    if not installer.testing and not installer.confirm(
        "VerSemi Segmenter needs these Python packages, which are not installed yet:\n\n"
        f"{plan.describe()}\n\nInstall them now? This can take a few minutes "
        "(PyTorch is large). Slicer's own packages (numpy, SimpleITK, VTK) are not changed."
    ):
        raise DependencyError(f"required packages are not installed:\n{plan.describe()}")
    loaded = set(sys.modules) if loaded_modules is None else loaded_modules
    if plan.torch:
        if not installer.install_torch():
            raise DependencyError("PyTorch was not installed (install it from the PyTorch Utils module)")
        result.installed.append("torch")
    if plan.packages:
        installer.pip_install([str(r) for r in plan.packages])
        result.installed.extend(r.name for r in plan.packages)
        # An upgraded package that is already imported keeps its old code until a restart.
        result.restart_needed |= any(
            _IMPORT_NAMES.get(r.key, r.key.replace("-", "_")) in loaded for r in plan.packages
        )
    if plan.versemi_source is not None:
        with tempfile.TemporaryDirectory(prefix="versemi-src-") as tmp:
            # pip builds inside the source folder, which may be read-only (an installed extension).
            project_dir = Path(tmp) / plan.versemi_source.name
            shutil.copytree(
                plan.versemi_source, project_dir, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
            )
            make_self_contained(project_dir, plan.versemi_source)
            installer.pip_install(["--no-deps", "--no-build-isolation", "--upgrade", str(project_dir)])
        result.installed.append(f"versemi {plan.versemi_version}")
        result.restart_needed |= VERSEMI_DISTRIBUTION in loaded
    return result


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


def bundled_versemi_source(resources_dir: str | os.PathLike[str]) -> Path | None:
    """Where to install ``versemi`` from: the copy the extension ships, or the source checkout.

    ``<module>/Resources/versemi-package/training`` is made by the CMake build; when the module is
    used straight from a repository checkout (added to Slicer's module paths), ``<repo>/training``.
    """
    resources_dir = Path(resources_dir)
    for path in (resources_dir / "versemi-package" / "training", resources_dir.parent.parent / "training"):
        if (path / "pyproject.toml").is_file() and (path / "src" / "versemi").is_dir():
            return path
    return None
