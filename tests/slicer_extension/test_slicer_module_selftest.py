"""The module's own self-test (``VerSemiSegmenterTest`` in VerSemiSegmenter.py), run as ctest runs it.

ctest starts Slicer in testing mode and runs the test case through unittest: every ``test_*`` method
alone, with ``setUp``/``tearDown`` around it (never ``runTest``). Here the module file is imported
with small fakes for the Qt application (``fake_slicer_app``) and the real MRML of ``slicer-core``;
each method must pass, or skip saying why.
"""

from __future__ import annotations

import ast
import unittest
from pathlib import Path

import pytest

from fake_slicer_app import MODULE_DIR, load_module

pytest.importorskip("versemi.review")


def _self_test_methods() -> list[str]:
    tree = ast.parse((MODULE_DIR / "VerSemiSegmenter.py").read_text(encoding="utf-8"))
    case = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "VerSemiSegmenterTest")
    return sorted(f.name for f in case.body if isinstance(f, ast.FunctionDef) and f.name.startswith("test_"))


@pytest.fixture
def slicer_module(monkeypatch, tmp_path: Path):
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("the 'slicer' module found is not slicer-core")
    return load_module(monkeypatch, str(tmp_path))


def _run_alone(slicer_module, name: str) -> unittest.TestResult:
    result = unittest.TestResult()
    unittest.TestSuite([slicer_module.VerSemiSegmenterTest(name)]).run(result)
    return result


def test_the_method_list_is_what_unittest_finds(slicer_module) -> None:
    assert list(unittest.TestLoader().getTestCaseNames(slicer_module.VerSemiSegmenterTest)) == _self_test_methods()
    assert {"test_segment_with_tiny_model", "test_cancel_adds_nothing", "test_default_model_on_sample_data",
            "test_ReviewRoundTrip"} <= set(_self_test_methods())


# test_segment_with_tiny_model is slow (a checkpoint and a predictor subprocess); the default run segments through
# the module in test_slicer_module_widget.test_widget_lists_models_browses_a_checkpoint_and_segments.
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "test_segment_with_tiny_model" else n
                                  for n in _self_test_methods()])
def test_each_self_test_method_passes_or_skips_with_a_reason_alone(slicer_module, name: str, tmp_path: Path) -> None:
    import slicer

    result = _run_alone(slicer_module, name)
    problems = [text for _, text in result.errors + result.failures]
    assert problems == [], problems[0] if problems else ""
    for _, reason in result.skipped:
        assert reason.strip(), f"{name} skipped without a reason"
    if name == "test_default_model_on_sample_data" and result.skipped:
        assert "no default model is installed" in result.skipped[0][1] or "segments none" in result.skipped[0][1]
    else:
        assert result.skipped == [], f"{name} skipped: {result.skipped}"
    # tearDown cleared the scene.
    assert slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 0


def test_testing_mode_installs_nothing_and_skips_when_the_backend_is_missing(slicer_module, monkeypatch) -> None:
    from VerSemiSegmenterLib import dependencies

    real = dependencies.installed_version
    monkeypatch.setattr(dependencies, "installed_version", lambda name: None if name == "monai" else real(name))

    def no_install(command):
        raise AssertionError(f"testing mode started {command}")

    monkeypatch.setattr(dependencies, "_start_process", no_install)
    result = _run_alone(slicer_module, "test_segment_with_tiny_model")
    assert result.errors == [] and result.failures == []
    (reason,) = [text for _, text in result.skipped]
    assert "testing mode installs nothing" in reason and "monai>=1.3" in reason


def test_unsupported_slicer_skips_with_the_platform_message(monkeypatch, tmp_path: Path) -> None:
    pytest.importorskip("slicer", reason="slicer-core is not installed")
    slicer_module = load_module(monkeypatch, str(tmp_path), version="5.8.1")
    result = _run_alone(slicer_module, "test_cancel_adds_nothing")
    (reason,) = [text for _, text in result.skipped]
    assert "needs 3D Slicer 5.10 or newer" in reason


@pytest.mark.slow
def test_default_model_self_test_segments_the_sample_data_when_a_default_is_installed(
    slicer_module, monkeypatch, tmp_path: Path
) -> None:
    """With a catalogue whose default model is installed, the sample-data self-test really runs.

    The "default" here is the tiny random model (a real checkpoint in a real catalogue and cache): it
    is found as the default, the bundled spleen CT is loaded and segmented through the module's code,
    and the segments pass the name/geometry checks; a random model finds no spleen, so the self-test's
    last check ("something was found", meant for a trained default model) is the one that fails.
    """
    import hashlib
    import json
    import subprocess
    import sys

    from VerSemiSegmenterLib import selftest

    tiny = selftest.make_tiny_checkpoint(tmp_path / "tiny.pt", sys.executable)
    data = Path(tiny).read_bytes()
    catalogue = tmp_path / "catalogue.json"
    catalogue.write_text(json.dumps({"format": "versemi-catalogue", "format_version": 1, "models": [{
        "name": "tiny-default", "version": "1", "url": Path(tiny).as_uri(), "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data), "label_space": list(selftest.TINY_PROMPTS), "licence": "CC0-1.0", "default": True,
    }]}), encoding="utf-8")
    monkeypatch.setenv("VERSEMI_CATALOGUE", str(catalogue))
    monkeypatch.setenv("VERSEMI_MODELS_DIR", str(tmp_path / "models"))
    subprocess.run([sys.executable, "-m", "versemi.cli", "models", "import", tiny, "--name", "tiny-default"],
                   check=True, capture_output=True, timeout=300)
    result = _run_alone(slicer_module, "test_default_model_on_sample_data")
    assert result.errors == [] and result.skipped == [], result.errors or result.skipped
    (failure,) = [text for _, text in result.failures]
    assert "nothing found in VerSemi spleen CT" in failure, failure
    assert slicer_module.slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0  # tearDown
