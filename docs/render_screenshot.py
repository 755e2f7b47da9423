"""Render docs/screenshot.png and the Sample Data thumbnails off-screen, from real data and real MRML.

No Slicer GUI is needed (none can be run where the docs are built): the bundled spleen CT is read
into a ``vtkMRMLScalarVolumeNode`` and its spleen label imported as a segment exactly as the module
imports a prediction (``segmentation_import.import_labelmap``: name, colour, SNOMED CT terminology),
then exported back on the volume grid (``review.export_segmentation``) and drawn with VTK in an
off-screen window: an axial slice with the segment overlaid (Slicer's "Red" view) and the segment's
surface in 3D over that slice. The thumbnails are the middle axial slice of each sample scan.

Usage (from the repository root; needs the ``slicer-core`` package)::

    PYTHONPATH=training/src python docs/render_screenshot.py [--out docs/screenshot.png] [--thumbnails DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "VerSemiSegmenter"))

CT = ROOT / "examples" / "data" / "Dataset004_SpleenCT" / "imagesTr" / "spleen_002_0000.nii.gz"
LABEL = ROOT / "examples" / "data" / "Dataset004_SpleenCT" / "labelsTr" / "spleen_002.nii.gz"


def _window(array: np.ndarray, low: float, high: float) -> np.ndarray:
    return (np.clip((array - low) / (high - low), 0.0, 1.0) * 255).astype(np.uint8)


def _vtk_image(rgb: np.ndarray, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)):
    """A vtkImageData (one slice) from an (rows, cols, 3|4) uint8 array, row 0 at the top."""
    import vtk
    from vtk.util import numpy_support

    flipped = np.ascontiguousarray(rgb[::-1])  # VTK's first row is the bottom one
    image = vtk.vtkImageData()
    image.SetDimensions(flipped.shape[1], flipped.shape[0], 1)
    image.SetSpacing(*spacing)
    image.SetOrigin(*origin)
    scalars = numpy_support.numpy_to_vtk(flipped.reshape(-1, flipped.shape[2]), deep=True)
    image.GetPointData().SetScalars(scalars)
    return image


def _text(renderer, text: str, size: int, position, color=(1.0, 1.0, 1.0)) -> None:
    import vtk

    actor = vtk.vtkTextActor()
    actor.SetInput(text)
    actor.GetTextProperty().SetFontSize(size)
    actor.GetTextProperty().SetColor(*color)
    actor.SetDisplayPosition(*position)
    renderer.AddViewProp(actor)


def load_scene():
    """The CT volume node, its segmentation node (spleen) and the label entry, on a new MRML scene."""
    import slicer
    from versemi.labels import KNOWN_STRUCTURES

    from VerSemiSegmenterLib import review, segmentation_import

    slicer.mrmlScene = slicer.vtkMRMLScene()
    code, color = KNOWN_STRUCTURES["spleen"]
    entries = segmentation_import.parse_label_table(
        {"labels": [{"value": 1, "name": "spleen", "color": list(color), "snomed": dataclasses.asdict(code)}]}
    )
    volume = review.load_volume_node(CT, slicer.mrmlScene, "VerSemiSpleenCT")
    result = segmentation_import.import_labelmap(LABEL, entries, volume, name="VerSemiSpleenCT VerSemi")
    return volume, result.segmentation_node, entries


def render_screenshot(out: Path, size=(840, 420)) -> Path:
    import slicer
    import SimpleITK as sitk
    import vtk

    from VerSemiSegmenterLib import review

    volume, segmentation, entries = load_scene()
    ct = slicer.util.arrayFromVolume(volume).astype(np.float32)  # (k, j, i)
    labels = sitk.GetArrayFromImage(review.export_segmentation(segmentation, volume, entries))
    spacing = volume.GetSpacing()
    color = np.array(entries[0].color, dtype=np.float32)
    k = int(np.argmax((labels == 1).sum(axis=(1, 2))))  # the axial slice with the most spleen

    # Axial view: CT (abdomen window) with the segment filled at 40% and outlined, radiological view.
    gray = _window(ct[k], -160.0, 240.0).astype(np.float32)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    mask = labels[k] == 1
    rgb[mask] = 0.6 * rgb[mask] + 0.4 * color
    edge = mask & ~(np.roll(mask, 1, 0) & np.roll(mask, -1, 0) & np.roll(mask, 1, 1) & np.roll(mask, -1, 1))
    rgb[edge] = color
    rgb = rgb.astype(np.uint8)[::-1, ::-1]  # rows anterior at top, patient left on the image right

    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(*size)
    slice_view = vtk.vtkRenderer()
    slice_view.SetViewport(0.0, 0.0, 0.5, 1.0)
    slice_view.SetBackground(0.0, 0.0, 0.0)
    actor = vtk.vtkImageActor()
    actor.GetMapper().SetInputData(_vtk_image(rgb, (spacing[0], spacing[1], 1.0)))
    slice_view.AddActor(actor)
    slice_view.ResetCamera()
    slice_view.GetActiveCamera().ParallelProjectionOn()
    slice_view.ResetCamera()
    slice_view.GetActiveCamera().Zoom(1.15)
    _text(slice_view, f"Axial (slice {k + 1} of {ct.shape[0]}): segment 'spleen'", 14, (10, 10), (0.95, 0.9, 0.3))

    # 3D view: the segment's surface over the same axial slice, in millimetres.
    label_image = vtk.vtkImageData()
    label_image.SetDimensions(labels.shape[2], labels.shape[1], labels.shape[0])
    label_image.SetSpacing(*spacing)
    from vtk.util import numpy_support

    label_image.GetPointData().SetScalars(
        numpy_support.numpy_to_vtk(np.ascontiguousarray(labels, dtype=np.uint8).ravel(), deep=True)
    )
    contour = vtk.vtkDiscreteFlyingEdges3D()
    contour.SetInputData(label_image)
    contour.SetValue(0, 1)
    smooth = vtk.vtkWindowedSincPolyDataFilter()
    smooth.SetInputConnection(contour.GetOutputPort())
    smooth.SetNumberOfIterations(25)
    smooth.SetPassBand(0.05)
    smooth.NormalizeCoordinatesOn()
    normals = vtk.vtkPolyDataNormals()
    normals.SetInputConnection(smooth.GetOutputPort())
    mapper = vtk.vtkPolyDataMapper()
    mapper.SetInputConnection(normals.GetOutputPort())
    mapper.ScalarVisibilityOff()
    surface = vtk.vtkActor()
    surface.SetMapper(mapper)
    surface.GetProperty().SetColor(*(color / 255.0))
    surface.GetProperty().SetSpecular(0.3)
    three_d = vtk.vtkRenderer()
    three_d.SetViewport(0.5, 0.0, 1.0, 1.0)
    three_d.GradientBackgroundOn()
    three_d.SetBackground(0.47, 0.47, 0.78)
    three_d.SetBackground2(0.76, 0.76, 0.9)
    three_d.AddActor(surface)
    plane_rgb = np.repeat(_window(ct[k], -160.0, 240.0)[..., None], 3, axis=2)
    plane = vtk.vtkImageActor()
    plane.GetMapper().SetInputData(
        _vtk_image(plane_rgb[::-1], (spacing[0], spacing[1], 1.0), (0.0, 0.0, k * spacing[2]))
    )
    plane.SetOpacity(0.7)
    three_d.AddActor(plane)
    camera = three_d.GetActiveCamera()
    center = np.array(labels.shape[::-1]) * np.array(spacing) / 2
    camera.SetFocalPoint(*center)
    camera.SetPosition(center[0] - 200.0, center[1] - 300.0, center[2] + 380.0)
    camera.SetViewUp(0.0, 0.0, 1.0)
    three_d.ResetCamera()
    camera.Zoom(1.3)
    _text(three_d, "3D: closed surface of the segment", 14, (10, 10), (1.0, 1.0, 1.0))
    window.AddRenderer(slice_view)
    window.AddRenderer(three_d)
    window.Render()
    _write_png(window, out)
    return out


def render_thumbnails(folder: Path, size: int = 128) -> list[Path]:
    """One 128x128 PNG per sample (middle axial slice), named as ``sampledata.SAMPLES`` says."""
    import SimpleITK as sitk

    from VerSemiSegmenterLib import sampledata

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for sample in sampledata.SAMPLES:
        image = sitk.ReadImage(str(ROOT / "examples" / "data" / sample.path))
        array = sitk.GetArrayFromImage(image).astype(np.float32)
        middle = array[array.shape[0] // 2]
        low, high = np.percentile(middle, [1, 99.5])
        gray = _window(middle, float(low), float(high))
        # Square thumbnail: resample the slice (physical aspect kept) into size x size, black bars.
        sy, sx = image.GetSpacing()[1], image.GetSpacing()[0]
        height, width = middle.shape[0] * sy, middle.shape[1] * sx
        scale = size / max(height, width)
        rows = np.clip((np.arange(size) - (size - height * scale) / 2) / (scale * sy), -1, middle.shape[0])
        cols = np.clip((np.arange(size) - (size - width * scale) / 2) / (scale * sx), -1, middle.shape[1])
        thumb = np.zeros((size, size), np.uint8)
        valid_r = (rows >= 0) & (rows < middle.shape[0])
        valid_c = (cols >= 0) & (cols < middle.shape[1])
        thumb[np.ix_(valid_r, valid_c)] = gray[np.ix_(rows[valid_r].astype(int), cols[valid_c].astype(int))]
        path = folder / sample.thumbnail
        _write_png_array(np.repeat(thumb[::-1, :, None], 3, axis=2), path)
        written.append(path)
    return written


def _write_png(window, out: Path) -> None:
    import vtk

    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.ReadFrontBufferOff()
    grab.Update()
    _write_vtk_png(grab.GetOutput(), out)


def _write_png_array(rgb: np.ndarray, out: Path) -> None:
    _write_vtk_png(_vtk_image(rgb), out)


def _write_vtk_png(image, out: Path) -> None:
    import vtk

    from versemi.fileio import atomic_write_bytes

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        temp = Path(tmp) / "image.png"
        writer = vtk.vtkPNGWriter()
        if hasattr(writer, "SetCompressionLevel"):
            writer.SetCompressionLevel(9)
        writer.SetFileName(str(temp))
        writer.SetInputData(image)
        writer.Write()
        data = temp.read_bytes()
    atomic_write_bytes(out, data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshot.png")
    parser.add_argument("--thumbnails", type=Path,
                        default=ROOT / "VerSemiSegmenter" / "Resources" / "Icons" / "SampleData")
    args = parser.parse_args(argv)
    print(render_screenshot(args.out))
    for path in render_thumbnails(args.thumbnails):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
