"""save_overlay_png: writes a real PNG atomically."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from versemi.visualize import save_overlay_png


def _image_and_labelmap() -> tuple[sitk.Image, sitk.Image]:
    image = sitk.GetImageFromArray(np.random.default_rng(0).random((8, 16, 16)).astype(np.float32))
    labels = np.zeros((8, 16, 16), np.uint8)
    labels[2:6, 4:10, 4:10] = 1
    labelmap = sitk.GetImageFromArray(labels)
    labelmap.CopyInformation(image)
    return image, labelmap


def test_writes_png_and_no_temp_file(tmp_path):
    image, labelmap = _image_and_labelmap()
    target = tmp_path / "sub" / "overlay.png"
    assert save_overlay_png(image, labelmap, {1: (255, 0, 0)}, target, names={1: "liver"}) == target
    assert target.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert [p.name for p in target.parent.iterdir()] == ["overlay.png"]


def test_failed_render_keeps_old_file(tmp_path, monkeypatch):
    import matplotlib.figure

    image, labelmap = _image_and_labelmap()
    target = tmp_path / "overlay.png"
    target.write_bytes(b"old")

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        save_overlay_png(image, labelmap, {1: (255, 0, 0)}, target)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["overlay.png"]
