"""Write ``translations/VerSemiSegmenter.ts``, the source file translators start from.

Slicer's ``lupdate`` step would do this inside a Slicer build; this script does the same for the
strings VerSemi marks, without Qt: every ``_("...")`` / ``translate("Context", "...")`` literal in
``VerSemiSegmenter.py`` and ``VerSemiSegmenterLib/*.py`` (context as ``slicer.i18n.tr`` computes it:
``VerSemiSegmenter`` for the module file, ``VerSemiSegmenterLib.<file>`` for the library) and every
translatable ``<string>`` of the ``.ui`` files (context: the form's class). No line numbers, so the
file only changes when a string does. ``tests/slicer_extension/test_slicer_translations.py`` checks it is current.
Outside ``VerSemiSegmenter/`` because the extension does not install it: Slicer's translations of
extensions are kept and built in the SlicerLanguageTranslations project, from this source file.

    python translations/update_translations.py
"""

from __future__ import annotations

import ast
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from xml.sax.saxutils import escape

MODULE_DIR = Path(__file__).resolve().parents[1] / "VerSemiSegmenter"
TS_PATH = Path(__file__).resolve().parent / "VerSemiSegmenter.ts"


def python_sources(module_dir: Path = MODULE_DIR) -> list[Path]:
    """The module file and the library files (what Slicer loads)."""
    return [module_dir / "VerSemiSegmenter.py", *sorted((module_dir / "VerSemiSegmenterLib").glob("*.py"))]


def context_of(path: Path) -> str:
    """``slicer.i18n.getContext``: ``<package>.<file>`` inside a package, else ``<file>``."""
    if (path.parent / "__init__.py").is_file():
        return f"{path.parent.name}.{path.stem}"
    return path.stem


def python_messages(path: Path) -> list[tuple[str, str, str]]:
    """``(context, text, file)`` of every ``_("...")`` and ``translate("ctx", "...")`` in a file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
            continue
        args = node.args
        if node.func.id == "_" and len(args) == 1 and isinstance(args[0], ast.Constant) and isinstance(args[0].value, str):
            out.append((context_of(path), args[0].value, path.name))
        elif (node.func.id == "translate" and len(args) == 2
              and all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in args)):
            out.append((args[0].value, args[1].value, path.name))
    return out


# Widget properties that show text (others, e.g. node class names or SlicerParameterName, are not).
UI_TEXT_PROPERTIES = {"text", "toolTip", "placeholderText", "title", "windowTitle", "statusTip", "whatsThis",
                      "noneDisplay", "prefix", "suffix", "specialValueText"}


def ui_messages(path: Path) -> list[tuple[str, str, str]]:
    """``(form class, text, file)`` of every shown, non-empty string of a ``.ui`` file."""
    root = ET.parse(path).getroot()
    form = root.findtext("class") or path.stem
    out = []
    for prop in root.iter("property"):
        string = prop.find("string")
        if (prop.get("name") in UI_TEXT_PROPERTIES and string is not None and string.text
                and string.get("notr") != "true"):
            out.append((form, string.text, path.name))
    return out


def collect(module_dir: Path = MODULE_DIR) -> dict[str, dict[str, str]]:
    """context -> text -> file that first uses it (sorted, duplicates once)."""
    found: dict[str, dict[str, str]] = {}
    messages = [m for p in python_sources(module_dir) for m in python_messages(p)]
    messages += [m for p in sorted((module_dir / "Resources" / "UI").glob("*.ui")) for m in ui_messages(p)]
    for context, text, filename in messages:
        found.setdefault(context, {}).setdefault(text, filename)
    return {c: dict(sorted(found[c].items())) for c in sorted(found)}


def ts_document(messages: dict[str, dict[str, str]]) -> str:
    """The Qt Linguist ``.ts`` (version 2.1) with every message unfinished, source language en_US."""
    lines = ['<?xml version="1.0" encoding="utf-8"?>', "<!DOCTYPE TS>", '<TS version="2.1" language="en_US">']
    for context, texts in messages.items():
        lines += ["<context>", f"    <name>{escape(context)}</name>"]
        for text, filename in texts.items():
            lines += ["    <message>", f'        <location filename="../VerSemiSegmenter/{escape(filename)}"/>',
                      f"        <source>{escape(text)}</source>",
                      '        <translation type="unfinished"></translation>', "    </message>"]
        lines.append("</context>")
    lines.append("</TS>")
    return "\n".join(lines) + "\n"


def main() -> int:
    TS_PATH.parent.mkdir(parents=True, exist_ok=True)
    TS_PATH.write_text(ts_document(collect()), encoding="utf-8")
    print(f"wrote {TS_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
