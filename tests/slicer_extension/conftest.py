"""Fixtures for the Slicer extension's library tests.

The library (``VerSemiSegmenter/VerSemiSegmenterLib``) is imported from the module folder, as Slicer
does. MRML tests use the real Slicer classes from the ``slicer-core`` package and are skipped when it
is not installed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parents[2] / "VerSemiSegmenter"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))


@pytest.fixture
def mrml_scene():
    """A fresh ``vtkMRMLScene`` (also set as ``slicer.mrmlScene``); skips without slicer-core."""
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("the 'slicer' module found is not slicer-core")
    _register_segmentation_converters(slicer)
    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    yield scene
    scene.Clear(True)


def _register_segmentation_converters(slicer) -> None:
    """Register the converter rules Slicer's Segmentations module registers at startup.

    Without them ``slicer-core`` cannot construct a segment representation by class name (e.g. in
    ``vtkSegmentation.DeepCopy``), which real Slicer always can.
    """
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    if factory.GetConverterRules():
        return
    for rule in (slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule, slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule,
                 slicer.vtkClosedSurfaceToFractionalLabelmapConversionRule,
                 slicer.vtkFractionalLabelmapToClosedSurfaceConversionRule):
        factory.RegisterConverterRule(rule())
