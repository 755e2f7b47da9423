"""The environment variables versemi reads, in one place (like nnU-Net's ``paths.py``).

=============================  ==================================================================
Variable                       Meaning
=============================  ==================================================================
``VERSEMI_MODELS_DIR``         the model cache folder; default ``$XDG_CACHE_HOME/versemi/models``,
                               else ``~/.cache/versemi/models`` (Linux),
                               ``~/Library/Caches/versemi/models`` (macOS),
                               ``%LOCALAPPDATA%\\versemi\\Cache\\models`` (Windows)
``VERSEMI_CATALOGUE``          the model catalogue (a file or an ``http(s)://`` / ``file://`` URL);
                               default: the catalogue shipped with versemi
``VERSEMI_MEMORY_LIMIT``       the memory a scan may need (bytes, or ``8G``, ``512M``...); default:
                               the memory available now (:mod:`versemi.data.memory`)
``VERSEMI_NO_MALLOC_TUNING``   any non-empty value: leave glibc's malloc settings alone during
                               prediction (:mod:`versemi.inference.malloc`)
=============================  ==================================================================

torchrun's ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` are read where they are used
(:mod:`versemi.training.distributed`): they are torchrun's protocol, not versemi settings. Values are
read when asked for, never at import, so a test or a caller may set them at any time. This module
imports nothing from versemi.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

MODELS_DIR_ENV = "VERSEMI_MODELS_DIR"
CATALOGUE_ENV = "VERSEMI_CATALOGUE"
MEMORY_LIMIT_ENV = "VERSEMI_MEMORY_LIMIT"
NO_MALLOC_TUNING_ENV = "VERSEMI_NO_MALLOC_TUNING"


def setting(name: str) -> str:
    """The variable's value without surrounding blanks; ``""`` when it is unset."""
    return os.environ.get(name, "").strip()


def default_models_dir() -> Path:
    """The model cache folder (not created): ``$VERSEMI_MODELS_DIR`` or the platform user cache."""
    override = setting(MODELS_DIR_ENV)
    if override:
        return Path(override).expanduser()
    xdg = setting("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "versemi" / "models"
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "versemi" / "Cache" / "models"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "versemi" / "models"
    return Path.home() / ".cache" / "versemi" / "models"


def catalogue_source() -> str | None:
    """The catalogue named by ``$VERSEMI_CATALOGUE``, or None for the packaged one."""
    return setting(CATALOGUE_ENV) or None


def memory_limit_text() -> str:
    """``$VERSEMI_MEMORY_LIMIT`` as written (parsed by :func:`versemi.data.memory.env_memory_limit`)."""
    return setting(MEMORY_LIMIT_ENV)


def malloc_tuning_disabled() -> bool:
    """Whether ``$VERSEMI_NO_MALLOC_TUNING`` is set to anything."""
    return bool(os.environ.get(NO_MALLOC_TUNING_ENV))
