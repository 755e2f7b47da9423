"""bench/inference_precision.py on generated labeled datasets with a tiny trained model: both
precisions run, are scored per dataset, and the verdict is printed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench_scripts import load_bench_script
from inference.helpers import write_tiny_model_datasets


@pytest.mark.filterwarnings("ignore:bf16 was asked for")  # native=False: the predictor's warning, expected
@pytest.mark.parametrize("native", [True, False])
def test_fp32_and_bf16_are_compared_per_dataset(trained_checkpoint: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                               native: bool) -> None:
    import versemi.devices

    bench = load_bench_script("inference_precision")
    monkeypatch.setattr(versemi.devices, "cpu_has_native_bf16", lambda: native)
    monkeypatch.setattr(bench, "cpu_has_native_bf16", lambda: native)
    monkeypatch.setenv("VERSEMI_CATALOGUE", str(tmp_path / "none.json"))
    data = write_tiny_model_datasets(tmp_path / "data", alpha_cases=2)
    out = tmp_path / "precision.json"
    assert bench.main(["--model", str(trained_checkpoint), "--data", str(data), "--threads", "1",
                       "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    document = json.loads(out.read_text())
    assert document["bf16_precision"] == ("bfloat16" if native else "float32")
    assert set(document["datasets"]) == {"Dataset901_Alpha", "Dataset902_Beta"}
    assert document["datasets"]["Dataset901_Alpha"]["cases"] == 2
    for summary in document["datasets"].values():
        assert summary["dice_fp32"] > 0.5 and abs(summary["difference_points"]) < 5.0
        assert summary["seconds_fp32"] > 0 and summary["speedup"] > 0
        if not native:
            assert summary["difference_points"] == 0.0  # both ran in float32
    assert [sorted(c["fp32"]["dice"]) for c in document["cases"]][-1] == ["liver", "spleen"]
    assert "bf16 keeps mean Dice within 0.5 points of fp32 on every dataset:" in printed
    assert ("nothing was compared" in printed) is (not native)
