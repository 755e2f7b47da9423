"""Static checks of the Slicer-side files that cannot run outside Slicer (qt, slicer.app).

- the library stays importable without Slicer: no ``qt``/``slicer`` import at module level;
- every library name the module file uses (``catalogue.X``, ``pipeline.X``...) exists;
- the module file and the in-Slicer test compile.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parents[2] / "VerSemiSegmenter"
LIBRARY_FILES = sorted((MODULE_DIR / "VerSemiSegmenterLib").glob("*.py"))
SLICER_ONLY = {"qt", "ctk", "slicer", "vtk", "qSlicerSegmentationsModuleWidgetsPythonQt"}


@pytest.mark.parametrize("path", LIBRARY_FILES, ids=lambda p: p.name)
def test_library_has_no_module_level_slicer_imports(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:  # module level only; imports inside functions are fine
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module.split(".")[0]]
        assert not set(names) & SLICER_ONLY, f"{path.name}:{node.lineno} imports {names} at module level"


@pytest.mark.parametrize("path", [MODULE_DIR / "VerSemiSegmenter.py",
                                  MODULE_DIR / "Testing" / "Python" / "VerSemiSegmenterLibTest.py"],
                         ids=lambda p: p.name)
def test_slicer_files_compile(path: Path) -> None:
    compile(path.read_text(encoding="utf-8"), str(path), "exec")


def test_module_uses_only_existing_library_names() -> None:
    source = (MODULE_DIR / "VerSemiSegmenter.py").read_text(encoding="utf-8")
    tree = ast.parse(source)
    imported = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "VerSemiSegmenterLib":
            imported |= {alias.name for alias in node.names}
    assert imported, "the module does not use the library"
    modules = {name: importlib.import_module(f"VerSemiSegmenterLib.{name}") for name in imported}
    used = {
        (node.value.id, node.attr)
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
    }
    missing = [f"{mod}.{attr}" for mod, attr in sorted(used) if not hasattr(modules[mod], attr)]
    assert missing == []


def test_module_does_not_rely_on_error_helpers_that_re_raise() -> None:
    """``slicer.util.tryWithErrorDisplay`` re-raises: code after it never runs on a failure."""
    source = (MODULE_DIR / "VerSemiSegmenter.py").read_text(encoding="utf-8")
    assert "tryWithErrorDisplay" not in source


# Logic calls that start a Python or wait for one: never from the widget's GUI-thread code.
SLOW_LOGIC_CALLS = {"listModels", "modelPrompts", "modelCard", "removeModel", "probeDevice", "ensureDependencies"}


def test_widget_never_runs_slow_logic_calls_on_the_gui_thread() -> None:
    tree = ast.parse((MODULE_DIR / "VerSemiSegmenter.py").read_text(encoding="utf-8"))
    widget = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "VerSemiSegmenterWidget")
    offenders = []
    for method in (f for f in widget.body if isinstance(f, ast.FunctionDef)):
        if method.name == "_probeDevice":  # the device probe thread's target
            continue
        for node in ast.walk(method):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SLOW_LOGIC_CALLS:
                offenders.append(f"{method.name}: {node.func.attr}()")
    assert offenders == []


def test_module_help_says_not_for_clinical_use_and_the_gui_asks_for_the_terms() -> None:
    source = (MODULE_DIR / "VerSemiSegmenter.py").read_text(encoding="utf-8")
    help_text = source.split("self.parent.helpText = _(", 1)[1].split("self.parent.acknowledgementText", 1)[0]
    assert "not for clinical use" in help_text and "CC BY-NC-SA" in help_text
    apply = source.split("def applyWhenReady", 1)[1].split("\n    def ", 1)[0]
    assert "terms.TermsGate(" in apply and "gate.ask(" in apply  # before the run starts
    assert apply.index("gate.ask(") < apply.index("self.startSegmentation()")
