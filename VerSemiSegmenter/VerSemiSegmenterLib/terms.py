"""Licence and intended use, accepted once per model before its first segmentation.

The default weights are CC BY-NC-SA 4.0 and for research only (not a medical device). Before the
first segmentation with a model the panel shows :func:`terms_text` (licence, intended use, model card)
and asks; :class:`TermsGate` remembers the acceptance per model and licence, so a new licence asks
again. The widget only shows the dialog; every decision is made here.
"""

from __future__ import annotations

from typing import Callable, Optional

from .catalogue import ModelChoice

NOT_FOR_CLINICAL_USE = "Research use only: not for clinical use. Not a medical device."
SETTINGS_GROUP = "acceptedTerms"


def acceptance_key(choice: ModelChoice) -> str:
    """The settings key of one model's acceptance: its key and licence (characters settings keep)."""
    raw = f"{choice.key}|{choice.licence or 'unknown licence'}"
    return "".join(c if c.isalnum() or c in "@._-|" else "_" for c in raw)


def terms_text(choice: ModelChoice, card: str) -> str:
    """What the dialog shows: licence, intended use, then the model card."""
    licence = choice.licence or "not stated (ask the model's provider)"
    non_commercial = "NC" in licence.upper().split("-")
    lines = [
        f"Model {choice.key}",
        "",
        f"Licence of the weights: {licence}"
        + (" (non-commercial: research use only, share-alike)." if non_commercial else "."),
        "",
        f"Intended use: {NOT_FOR_CLINICAL_USE} Results must not be used for diagnosis or treatment; "
        "check every segmentation.",
        "",
        "Do you accept these terms? (Asked once per model; remembered in the Slicer settings.)",
        "",
        "--- Model card ---",
        card.strip(),
        "",
        f"The full card: the Model cache section, or `versemi models info {choice.key}`.",
    ]
    return "\n".join(lines)


class TermsGate:
    """Whether a model's terms were accepted, stored through two settings callables.

    Args:
        read: ``read(key) -> value or None`` (Slicer: ``qt.QSettings().value``).
        write: ``write(key, value)`` (Slicer: ``qt.QSettings().setValue``).
    """

    def __init__(self, read: Callable[[str], Optional[object]], write: Callable[[str, object], None]) -> None:
        self.read = read
        self.write = write

    def _key(self, choice: ModelChoice) -> str:
        return f"{SETTINGS_GROUP}/{acceptance_key(choice)}"

    def accepted(self, choice: ModelChoice) -> bool:
        return str(self.read(self._key(choice)) or "").lower() in ("true", "1")

    def accept(self, choice: ModelChoice) -> None:
        self.write(self._key(choice), "true")

    def ask(self, choice: ModelChoice, card: Callable[[], str], confirm: Callable[[str], bool]) -> bool:
        """True when the terms were accepted before or are accepted now (``confirm`` shows the text;
        ``card`` is read only when asking)."""
        if self.accepted(choice):
            return True
        if not confirm(terms_text(choice, card())):
            return False
        self.accept(choice)
        return True


__all__ = ["NOT_FOR_CLINICAL_USE", "TermsGate", "acceptance_key", "terms_text"]
