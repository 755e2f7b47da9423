"""The training configuration (YAML or JSON): datasets, labeled cases, unlabeled scans, grid.

A config names several nnU-Net v2 raw datasets. For each one it says which cases are LABELED (their
label files are used); every other case that is not excluded is used as an UNLABELED scan, exposed
as a :class:`~versemi.data.dataset.Case` whose ``label_path`` is ``None`` so training can never read
its label. Extra folders of unlabeled scans may be added, and review folders of the annotation loop
(``review_dirs``, see ``docs/REVIEW.md``): their refined cases are labeled, their pending and
rejected cases unlabeled scans. See ``docs/CONFIG.md`` for every key.

Relative paths are resolved against the folder of the config file. Each dataset's grid, intensity
normalisation and patch come from its plan (:mod:`versemi.data.plans`, made from the dataset's
fingerprint); the ``plans`` section tunes or overrides them, and the optional top-level
``target_spacing`` / ``patch_size`` override them for every dataset at once. Both are in ``(x, y, z)``
order, as SimpleITK uses (not nnU-Net's plans order).

The ``model`` and ``training`` sections are free-form dicts owned by :mod:`versemi.network` and
:mod:`versemi.training`; they are passed through untouched.

Every error names the file and the key path (``datasets[1].labeled``), through
:class:`~versemi.data.config.readers.Context`. Modules, one per concern: ``readers`` (typed values),
``datasets``, ``protocol`` (protocol files), ``folders`` (unlabeled and review folders), ``split``
(the validation split), ``plans_section``, ``label_space``, ``train_config`` (:class:`TrainConfig`,
the checks across sections, loading).
"""

from versemi.data.config.datasets import DATASET_KEYS, DatasetConfig
from versemi.data.config.folders import REVIEW_DIR_KEYS, UNLABELED_DIR_KEYS, ReviewDirConfig, UnlabeledDirConfig
from versemi.data.config.plans_section import PLANS_KEYS, PlansConfig
from versemi.data.config.protocol import PROTOCOL_KEYS, ProtocolRef
from versemi.data.config.readers import ConfigError
from versemi.data.config.split import VALIDATION_KEYS, ValidationConfig
from versemi.data.config.train_config import TOP_LEVEL_KEYS, TrainConfig, load_config, parse_config_text

__all__ = [
    "DATASET_KEYS",
    "PLANS_KEYS",
    "PROTOCOL_KEYS",
    "REVIEW_DIR_KEYS",
    "TOP_LEVEL_KEYS",
    "UNLABELED_DIR_KEYS",
    "VALIDATION_KEYS",
    "ConfigError",
    "DatasetConfig",
    "PlansConfig",
    "ProtocolRef",
    "ReviewDirConfig",
    "TrainConfig",
    "UnlabeledDirConfig",
    "ValidationConfig",
    "load_config",
    "parse_config_text",
]
