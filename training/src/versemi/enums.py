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




class Method(StrEnum):
    """``training.method`` / ``versemi train --method``: VerSemi or a baseline (:mod:`versemi.training.methods`).

    Here rather than beside the methods so that the command line lists them without importing torch.
    """

    VERSEMI = "versemi"
    SUPERVISED = "supervised"
    MEAN_TEACHER = "mean_teacher"
    BCP = "bcp"


__all__ = ["Method", "StrEnum"]
