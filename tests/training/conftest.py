"""Fixtures of the trainer tests: a tiny two-dataset + unlabeled-folder training config."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from versemi.data.synthetic import SyntheticStructure, make_nnunet_dataset

TINY_MODEL = {"backbone": "vnet", "base_filters": 4, "depth": 3}


@pytest.fixture
def write_train_config(tmp_path: Path, synthetic_datasets: dict[str, Path]) -> Callable[..., Path]:
    """Returns ``write(training=..., **top_level) -> config path`` for the synthetic datasets.

    Dataset901_Alpha (MR, organ_a): 3 labeled cases, 1 unlabeled; Dataset902_Beta (CT, spleen +
    liver): 3 labeled, 1 unlabeled; plus a folder of 2 unlabeled MR scans. One validation case per
    dataset; patches 16^3; a 4-filter, 3-level V-Net.
    """
    unlabeled_root = make_nnunet_dataset(
        tmp_path / "extra", "Dataset903_Extra", [SyntheticStructure("organ_a", 1, 1.0)], num_cases=2, seed=3,
        with_labels=False,
    )

    def write(training: dict[str, Any] | None = None, name: str = "train.yaml", **top: Any) -> Path:
        cfg: dict[str, Any] = {
            "datasets": [
                {"path": str(synthetic_datasets["Dataset901_Alpha"]), "labeled": ["alpha_000", "alpha_001", "alpha_002"]},
                {"path": str(synthetic_datasets["Dataset902_Beta"]), "labeled": ["beta_000", "beta_001", "beta_002"]},
            ],
            "unlabeled_dirs": [{"path": str(unlabeled_root / "imagesTr"), "name": "extra", "modality": "MR"}],
            "target_spacing": [1.5, 1.5, 2.0],
            "patch_size": [16, 16, 16],
            "validation": {"fraction": 0.34},
            "seed": 0,
            "model": dict(TINY_MODEL),
            "training": {
                "max_steps": 8,
                "batch_size": 2,
                "unlabeled_batch_size": 2,
                "num_workers": 0,
                "validate_every": 4,
                "checkpoint_every": 2,
                "log_every": 1,
                "tensorboard": False,
                **(training or {}),
            },
            "cache_dir": str(tmp_path / "cache"),
            "output_dir": str(tmp_path / "runs"),
        }
        cfg.update(top)
        path = tmp_path / name
        path.write_text(yaml.safe_dump(cfg))
        return path

    return write
