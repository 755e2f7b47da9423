"""Trained model files: the catalogue, verified resumable downloads, offline import, the cache.

Typical use::

    from versemi.models import load_catalogue, download_model, resolve_model

    catalogue = load_catalogue()                      # --catalogue / $VERSEMI_CATALOGUE / packaged
    download_model(catalogue.get("abdomen-ct"))       # into $VERSEMI_MODELS_DIR or the user cache
    checkpoint_path = resolve_model("abdomen-ct")     # verified path (or a file path as given)
    entry, path = resolve_default_model()             # the default model (embedded or installed), verified

See docs/MODELS.md for the catalogue format and the cache layout.
"""

from versemi.models.catalogue import (
    Catalogue,
    CatalogueEntry,
    CatalogueError,
    CatalogueUnavailableError,
    ModelError,
    UnknownModelError,
    catalogue_document,
    load_catalogue,
    parse_catalogue,
    parse_model_spec,
)
from versemi.models.download import DownloadError, IncompatibleModelError, ProgressCallback, download_model
from versemi.models.install import (
    ModelNotInstalledError,
    NoDefaultModelError,
    VerifyResult,
    catalogue_or_empty,
    entry_file,
    import_model,
    installed_versions,
    lookup_catalogue,
    model_record_for_path,
    resolve_default_model,
    resolve_model,
    verify_all,
    verify_model,
)
from versemi.models.store import (
    ChecksumError,
    InstalledModel,
    find_installed,
    installed_for_path,
    models_dir,
    read_manifest,
    remove_installed,
    sha256_file,
)

__all__ = [
    "Catalogue",
    "CatalogueEntry",
    "CatalogueError",
    "CatalogueUnavailableError",
    "ChecksumError",
    "DownloadError",
    "IncompatibleModelError",
    "InstalledModel",
    "ModelError",
    "ModelNotInstalledError",
    "NoDefaultModelError",
    "ProgressCallback",
    "UnknownModelError",
    "VerifyResult",
    "catalogue_document",
    "catalogue_or_empty",
    "download_model",
    "entry_file",
    "find_installed",
    "import_model",
    "installed_for_path",
    "installed_versions",
    "load_catalogue",
    "lookup_catalogue",
    "model_record_for_path",
    "models_dir",
    "parse_catalogue",
    "parse_model_spec",
    "read_manifest",
    "remove_installed",
    "resolve_default_model",
    "resolve_model",
    "sha256_file",
    "verify_all",
    "verify_model",
]
