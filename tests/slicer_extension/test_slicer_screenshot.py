"""docs/screenshot.png and the Sample Data thumbnails are reproducible renders of real data.

``docs/render_screenshot.py`` draws them off-screen with VTK from a real MRML scene (the bundled
spleen CT and its segment, imported as the module imports a prediction).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("SimpleITK")


def _script():
    spec = importlib.util.spec_from_file_location("render_screenshot", ROOT / "docs" / "render_screenshot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pixels(path: Path) -> np.ndarray:
    import vtk
    from vtk.util import numpy_support

    reader = vtk.vtkPNGReader()
    reader.SetFileName(str(path))
    reader.Update()
    image = reader.GetOutput()
    width, height, _ = image.GetDimensions()
    scalars = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    return scalars.reshape(height, width, -1)[..., :3]


def test_thumbnails_are_the_committed_ones(mrml_scene, tmp_path: Path) -> None:
    script = _script()
    written = script.render_thumbnails(tmp_path)
    assert written
    for path in written:
        committed = ROOT / "VerSemiSegmenter" / "Resources" / "Icons" / "SampleData" / path.name
        assert np.array_equal(_pixels(path), _pixels(committed)), path.name


def test_screenshot_renders_the_segment_over_the_scan(mrml_scene, tmp_path: Path) -> None:
    script = _script()
    try:
        out = script.render_screenshot(tmp_path / "shot.png")
    except Exception as exc:  # no OpenGL context at all (no EGL/OSMesa/X): cannot render here
        if "context" in str(exc).lower() or "display" in str(exc).lower():
            pytest.skip(f"no off-screen OpenGL here: {exc}")
        raise
    pixels = _pixels(out)
    committed = _pixels(ROOT / "docs" / "screenshot.png")
    assert pixels.shape == committed.shape
    from versemi.labels import KNOWN_STRUCTURES

    color = np.array(KNOWN_STRUCTURES["spleen"][1])
    left = pixels[:, : pixels.shape[1] // 2].reshape(-1, 3).astype(int)
    outline = np.all(np.abs(left - color) <= 2, axis=1).sum()
    assert outline > 100, "the segment outline (its colour) is missing from the axial view"
    gray = (np.abs(left[:, 0] - left[:, 1]) <= 1) & (np.abs(left[:, 1] - left[:, 2]) <= 1) & (left[:, 0] > 60)
    assert gray.sum() > 0.2 * len(left), "the CT slice is missing"
