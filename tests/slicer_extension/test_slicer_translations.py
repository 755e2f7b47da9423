"""Every string the Slicer module shows goes through Slicer's translation functions.

Slicer's scripted modules wrap user-visible text in ``_("...")`` (``slicer.i18n.tr``) or
``translate("Context", "...")``, with ``{name}`` placeholders filled by ``.format`` afterwards, so
Qt's ``lupdate`` (and translators) see the literal. This test finds string literals and f-strings
that reach the user unwrapped: arguments of the panel's view methods (``show_error``, ``confirm``,
...), of Slicer's message boxes and Qt widget constructors, text properties (``.text``,
``.toolTip``, ...), message variables (``message``, ``info``, ``reasons``...) and exception messages
(the panel shows them). It also checks that ``translations/VerSemiSegmenter.ts`` lists exactly
the marked strings (``translations/update_translations.py`` writes it).
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parents[2] / "VerSemiSegmenter"
SOURCES = [MODULE_DIR / "VerSemiSegmenter.py",
           *sorted(p for p in (MODULE_DIR / "VerSemiSegmenterLib").glob("*.py") if p.name != "i18n.py")]

SINK_CALLS = {
    "show_error", "show_status", "confirm", "choose", "set_model_info", "set_cache_status", "set_cache_card",
    "errorDisplay", "infoDisplay", "warningDisplay", "confirmOkCancelDisplay", "confirmYesNoDisplay",
    "confirmRetryCloseDisplay", "showStatusMessage", "delayDisplay", "tryWithErrorDisplay", "QLabel", "QPushButton",
    "QCheckBox", "QToolButton", "QGroupBox", "QAction", "ctkCollapsibleButton", "setText", "setWindowTitle",
    "addRow", "setToolTip", "setPlaceholderText", "setHorizontalHeaderLabels", "addButton",
}
SINK_ATTRIBUTES = {"text", "toolTip", "placeholderText", "windowTitle", "title", "helpText", "acknowledgementText"}
MESSAGE_VARIABLES = {"info", "message", "text", "question", "note", "status", "what", "reason", "reasons"}


def _is_marked(node: ast.AST) -> bool:
    """``_(...)``, ``translate(...)``, or ``.format`` on one of them (any other call is no literal)."""
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "format":
            return _is_marked(func.value)
        return True
    return False


def unmarked(node: ast.AST | None) -> list[ast.AST]:
    """The unwrapped literals (with letters) a value expression is built from."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node] if any(c.isalpha() for c in node.value) else []
    if isinstance(node, ast.JoinedStr):
        return [node] if any(isinstance(v, ast.Constant) and any(c.isalpha() for c in v.value) for v in node.values) else []
    if isinstance(node, ast.BinOp):
        return unmarked(node.left) + unmarked(node.right)
    if isinstance(node, ast.IfExp):
        return unmarked(node.body) + unmarked(node.orelse)
    if isinstance(node, (ast.List, ast.Tuple)):
        return [u for e in node.elts for u in unmarked(e)]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        if node.func.attr == "format" and not _is_marked(node.func.value):
            return unmarked(node.func.value)
        if node.func.attr == "join":
            return [u for a in node.args for u in unmarked(a)]
    return []


def unmarked_strings(path: Path) -> list[str]:
    found: list[ast.AST] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in SINK_CALLS:
                for arg in node.args[:2] if name == "addRow" else node.args[:1]:
                    found += unmarked(arg)
                found += [u for k in node.keywords if k.arg in ("windowTitle", "text", "detailedText")
                          for u in unmarked(k.value)]
            if (isinstance(func, ast.Attribute) and func.attr in ("append", "insert")
                    and isinstance(func.value, ast.Name) and func.value.id in MESSAGE_VARIABLES):
                found += [u for a in node.args for u in unmarked(a)]
        elif isinstance(node, (ast.Assign, ast.AugAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if (isinstance(target, ast.Attribute) and target.attr in SINK_ATTRIBUTES) or (
                        isinstance(target, ast.Name) and target.id in MESSAGE_VARIABLES):
                    found += unmarked(node.value)
        elif isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            found += [u for a in node.exc.args[:1] for u in unmarked(a)]
    return [f"{path.name}:{n.lineno}: {ast.unparse(n)[:90]}" for n in found]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_no_user_visible_string_lacks_the_translation_wrapper(path: Path) -> None:
    assert unmarked_strings(path) == []


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_translation_calls_hold_one_literal(path: Path) -> None:
    """lupdate reads only literals: ``_(f"...")`` or ``_(variable)`` would never be translated."""
    bad = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("_", "translate"):
            wanted = 1 if node.func.id == "_" else 2
            if len(node.args) != wanted or not all(isinstance(a, ast.Constant) and isinstance(a.value, str)
                                                   for a in node.args):
                bad.append(f"{path.name}:{node.lineno}: {ast.unparse(node)[:90]}")
    assert bad == []


def test_the_checker_finds_unwrapped_strings(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        'self.show_error(f"Failed: {exc}")\n'
        'self.show_error(_("Failed: {exc}").format(exc=exc))\n'
        'button.toolTip = "Click me"\n'
        'raise ValueError("no volume")\n'
        'reasons.append(_("select a model"))\n'
        'message = "Done in " + seconds\n', encoding="utf-8")
    assert sorted(line.split(":")[1] for line in unmarked_strings(sample)) == ["1", "3", "4", "6"]


def test_the_ts_source_file_lists_exactly_the_marked_strings() -> None:
    spec = importlib.util.spec_from_file_location("update_translations", MODULE_DIR.parent / "translations" / "update_translations.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    messages = tool.collect()
    assert "Reject case {case}? It will not be used for training. Your unsaved edits are discarded." in messages[
        "VerSemiSegmenterLib.panel"]
    assert "Apply" in messages["VerSemiSegmenter"]  # from the .ui
    assert tool.TS_PATH.read_text(encoding="utf-8") == tool.ts_document(messages), (
        "run python translations/update_translations.py")
