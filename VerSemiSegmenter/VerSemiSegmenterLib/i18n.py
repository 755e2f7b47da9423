"""Translation functions: Slicer's own (``slicer.i18n``) in Slicer, identity functions elsewhere.

Slicer's scripted modules mark every user-visible string with ``_("...")`` (``slicer.i18n.tr``,
context = the calling file) or ``translate("Context", "...")``, with ``{name}`` placeholders filled
by ``.format`` afterwards (never an f-string: Qt's ``lupdate`` and translators need the literal).
``slicer-core`` and plain Python have no ``slicer.i18n``: the text is then returned unchanged.
``translations/VerSemiSegmenter.ts`` (repository root) is the source file for translators
(``translations/update_translations.py`` writes it).
"""

from __future__ import annotations

import sys

try:
    # Only inside the Slicer application (``slicer.app`` exists): importing ``slicer`` elsewhere
    # would load VTK for nothing.
    if not hasattr(sys.modules.get("slicer"), "app"):
        raise ImportError("not running in Slicer")
    from slicer.i18n import tr as _  # noqa: F401 - re-exported: ``from .i18n import _``
    from slicer.i18n import translate  # noqa: F401
except ImportError:  # outside Slicer (slicer-core, tests, the library on its own)

    def _(text: str) -> str:
        """The text in the application's language (here: unchanged)."""
        return text

    def translate(context: str, text: str) -> str:
        """The text in the application's language for ``context`` (here: unchanged)."""
        return text


__all__ = ["_", "translate"]
