"""Library checks that need Slicer's own classes (run by ctest in a Slicer build, or from the console).

The terminology strings the library writes must be understood by Slicer's terminology logic, and a
volume written for the predictor must read back with the same geometry.
"""

import os
import tempfile
import unittest

import slicer
import vtk

from VerSemiSegmenterLib import roi, segmentation_import, selftest, volume_export


class VerSemiSegmenterLibTest(unittest.TestCase):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def test_terminology_tag_is_understood_by_slicer(self):
        entry = segmentation_import.parse_label_table(
            {"labels": [{"value": 1, "name": "liver", "color": [221, 130, 101],
                         "snomed": {"code": "10200004", "meaning": "Liver"}}]}
        )[0]
        terminology = slicer.vtkSlicerTerminologyEntry()
        logic = slicer.modules.terminologies.logic()
        self.assertTrue(logic.DeserializeTerminologyEntry(entry.terminology_tag, terminology))
        self.assertEqual(terminology.GetTypeObject().GetCodeValue(), "10200004")
        self.assertEqual(terminology.GetCategoryObject().GetCodeMeaning(), "Anatomical Structure")
        self.assertEqual(logic.SerializeTerminologyEntry(terminology), entry.terminology_tag)

    def test_volume_export_keeps_geometry(self):
        volume = selftest.add_sample_volume(slicer.mrmlScene)
        with tempfile.TemporaryDirectory(prefix="VerSemi ü ") as tmp:
            path = volume_export.export_volume(volume, os.path.join(tmp, "input.nrrd"))
            loaded = slicer.util.loadVolume(path)
        a, b = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        volume.GetIJKToRASMatrix(a)
        loaded.GetIJKToRASMatrix(b)
        for i in range(4):
            for j in range(4):
                self.assertAlmostEqual(a.GetElement(i, j), b.GetElement(i, j), places=5)

    def test_roi_box_in_slicer(self):
        volume = selftest.add_sample_volume(slicer.mrmlScene)
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "crop")
        node.CreateDefaultDisplayNodes()
        roi.fit_roi_to_volume(node, volume)
        box = roi.voxel_box(node, volume)
        self.assertTrue(roi.whole_volume(box, volume))
        node.SetSize([s / 2 for s in node.GetSize()])
        smaller = roi.voxel_box(node, volume)
        self.assertFalse(roi.whole_volume(smaller, volume))


def runTest():
    suite = unittest.TestLoader().loadTestsFromTestCase(VerSemiSegmenterLibTest)
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    if not result.wasSuccessful():
        raise AssertionError("VerSemiSegmenterLibTest failed")


if __name__ == "__main__":
    unittest.main()
