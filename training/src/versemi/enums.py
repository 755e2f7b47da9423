"""``StrEnum``: the base of the package's string vocabularies (``enum.StrEnum`` from Python 3.11 on).

A member is a ``str`` equal to its value, so config values, CLI choices and JSON records compare and
print as plain strings (MONAI's ``monai.utils.enums`` uses the same pattern).
"""

from __future__ import annotations

import sys
from enum import Enum

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # Python 3.10

    class StrEnum(str, Enum):
        """A ``str`` enum whose ``str()`` is its value."""

        def __str__(self) -> str:
            return str(self.value)


__all__ = ["StrEnum"]
