"""Imports of versemi modules inside function bodies: each must defer a heavy dependency, never dodge a cycle.

The test reads the package's source (AST only, nothing is imported) and builds the module-level import
graph. An import of a versemi module inside a function passes when importing it at module level would
form no cycle AND the deferral has a reason: the importer is a command-line module or a lazy package
``__init__`` (both keep ``versemi --help`` and light imports free of torch), or the target pulls in a
heavy third-party package (torch, SimpleITK, ...) that the importer does not. Anything else must be
listed in :data:`ALLOWLIST` with its reason.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "training" / "src" / "versemi"

#: Third-party packages whose import costs seconds or much memory: deferring them is the legitimate reason.
HEAVY = frozenset({"torch", "SimpleITK", "monai", "scipy", "yaml", "pydicom", "highdicom", "matplotlib"})

#: (importing module, imported module) -> why the import stays inside a function. Keep it short.
ALLOWLIST: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Deferred:
    module: str
    line: int
    target: str


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _sources() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE_ROOT.rglob("*.py"))}


def _is_package(module: str) -> bool:
    return _sources()[module].name == "__init__.py"


def _targets(node: ast.Import | ast.ImportFrom, module: str) -> list[str]:
    """The modules an import statement loads (versemi ones by name, third-party ones by top-level name)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module if _is_package(module) else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    # ``from pkg import sub`` loads the submodule ``pkg.sub`` when there is one.
    subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in _sources()]
    return [base, *subs]


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


@cache
def _imports(module: str) -> tuple[tuple[str, ...], tuple[Deferred, ...]]:
    """(modules imported when ``module`` is imported, versemi imports inside its function bodies)."""
    tree = ast.parse(_sources()[module].read_text(encoding="utf-8"))
    eager: list[str] = []
    deferred: list[Deferred] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for stmt in child.orelse:
                    visit_statement(stmt, in_function)
                continue
            visit_statement(child, in_function)

    def visit_statement(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for target in _targets(node, module):
                if not in_function:
                    eager.append(target)
                elif target.split(".")[0] == "versemi" and target in _sources():
                    deferred.append(Deferred(module, node.lineno, target))
            return
        visit(node, in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return tuple(eager), tuple(deferred)


def _with_packages(module: str) -> list[str]:
    """A module and the package ``__init__`` files Python runs before it."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


@cache
def _closure(module: str, importer: str = "") -> frozenset[str]:
    """Every module (versemi modules and top-level third-party names) that importing ``module`` runs.

    The packages of ``importer`` are left out: Python has begun running them before ``importer``.
    """
    seen: set[str] = set(_with_packages(importer)[:-1]) if importer else set()
    stack = [m for m in _with_packages(module) if m not in seen]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        if current in _sources():
            for target in _imports(current)[0]:
                if target.split(".")[0] == "versemi":
                    stack.extend(m for m in _with_packages(target) if m in _sources())
                else:
                    stack.append(target.split(".")[0])
    return frozenset(seen)


def _problem(d: Deferred) -> str | None:
    """Why this deferred import is not allowed, or ``None`` when it is."""
    if d.target in _with_packages(d.module):
        return None  # a lazy package __init__ (``__getattr__``) importing its own submodules
    if d.module in _closure(d.target, d.module):
        return f"{d.target} imports {d.module} (a cycle): move the shared piece to a lower module"
    if d.module.startswith("versemi.cli") or _is_package(d.module):
        return None  # the dispatcher and lazy package __init__s keep light imports free of torch
    heavy = {m for m in _closure(d.target) if m in HEAVY} - _closure(d.module)
    if heavy:
        return None
    return "no cycle and no heavy dependency deferred: import it at module level"


def test_package_is_found() -> None:
    assert "versemi.data.dataset" in _sources(), PACKAGE_ROOT


def test_imports_inside_functions_have_a_reason() -> None:
    problems = []
    for module in _sources():
        for d in _imports(module)[1]:
            if (d.module, d.target) in ALLOWLIST:
                continue
            why = _problem(d)
            if why:
                path = _sources()[module].relative_to(PACKAGE_ROOT.parents[2])
                problems.append(f"{path}:{d.line}: {d.module} imports {d.target} inside a function: {why}")
    assert not problems, "\n".join(problems)


def test_allowlist_is_current() -> None:
    found = {(d.module, d.target) for m in _sources() for d in _imports(m)[1]}
    stale = sorted(k for k in ALLOWLIST if k not in found or _problem(Deferred(k[0], 0, k[1])) is None)
    assert not stale, f"ALLOWLIST entries no longer needed: {stale}"
