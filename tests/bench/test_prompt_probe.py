"""bench/prompt_probe.py on generated labeled datasets with a tiny trained model: each prompt's Dice, its
share outside the anatomy, and a foreign prompt probed on the same scan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench_scripts import load_bench_script
from inference.helpers import write_tiny_model_datasets


def test_prompts_are_scored_on_their_own_and_foreign_ones_only_counted(
    trained_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("VERSEMI_CATALOGUE", str(tmp_path / "none.json"))
    data = write_tiny_model_datasets(tmp_path / "data")
    beta = data / "Dataset902_Beta"
    case = sorted(p.name for p in (beta / "labelsTr").glob("*.nii.gz"))[0].removesuffix(".nii.gz")
    assert load_bench_script("prompt_probe").main([str(trained_checkpoint), str(beta), case, "--also", "organ_a", "--json"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["case"] == case and set(row["prompts"]) == {"spleen", "liver", "organ_a"}
    for name in ("spleen", "liver"):
        probe = row["prompts"][name]
        assert probe["dice"] > 0.5 and probe["reference_voxels"] > 0
        assert 0.0 <= probe["outside_anatomy"] < 0.5
    assert row["prompts"]["organ_a"]["dice"] is None and row["prompts"]["organ_a"]["reference_voxels"] is None


def test_a_missing_case_names_the_file(trained_checkpoint: Path, tmp_path: Path) -> None:
    beta = write_tiny_model_datasets(tmp_path / "data") / "Dataset902_Beta"
    with pytest.raises(SystemExit, match=r"imagesTr/nope_0000\.nii\.gz: no such file"):
        load_bench_script("prompt_probe").main([str(trained_checkpoint), str(beta), "nope"])
